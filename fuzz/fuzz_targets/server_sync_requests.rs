//! What upcache as an upstream reads from a downstream server: every
//! [MS-WSUSSS] request decoder, on any envelope the parser accepts, never
//! panics, and the revision filter it yields runs over a small graph.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::metadata::store::GraphRevision;
use upcache::metadata::Kind;
use upcache::wsus::soap::parse_envelope;
use upcache::wsus::sync::messages as m;
use upcache::wsus::upstream::revisions;

fuzz_target!(|data: &[u8]| {
    let Ok(op) = parse_envelope(data) else { return };
    let _ = m::request_cookie(&op);
    let _ = m::decode_authorization_cookie_request(&op);
    let _ = m::decode_cookie_request(&op);
    let _ = m::decode_config_data_request(&op);
    let _ = m::decode_update_data_request(&op);
    let _ = m::decode_deployments_request(&op);
    if let Ok(filter) = m::decode_revision_id_list_request(&op) {
        let graph = vec![GraphRevision {
            rid: 1,
            update_id: "a".into(),
            revision: 1,
            kind: Kind::Software,
            prerequisites: vec!["a".into()],
            bundles: vec!["a".into()],
        }];
        let _ = revisions::updates(&graph, &filter, 0);
    }
});
