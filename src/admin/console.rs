//! The web console: one self-contained page at `GET /` of the admin
//! listener, built into the binary. It reads `/api/v1/status` every two
//! seconds and drives approvals through the same API as the CLI, so it is
//! held to the same guard (same origin, token) and adds nothing to the
//! content path.
//!
//! Its inline script and style are allowed by their SHA-256 in the
//! `Content-Security-Policy`, and nothing else is: an update title that
//! carried markup could not run, even if the page rendered it as HTML
//! (it renders text only).

use std::sync::{Arc, LazyLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::node::App;

const PAGE: &str = include_str!("console.html");

/// The page's policy: its own script and style, API calls to itself,
/// never framed (no clickjacking of the Approve buttons).
static POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash_of_element(PAGE, "script"),
        hash_of_element(PAGE, "style"),
    )
});

/// `sha256-<base64>` of the text inside the first `<tag>` element.
fn hash_of_element(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = page.find(&open).expect("the page has the element") + open.len();
    let end = start + page[start..].find(&format!("</{tag}>")).expect("closed");
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// `GET /`: the console. Whether the API needs a token is written into
/// the page, so it asks for one before its first call instead of after a 401.
pub async fn page(State(app): State<Arc<App>>) -> Response {
    let body = if app.config.admin.admin_token.is_some() {
        PAGE.replacen(
            "data-token-required=\"false\"",
            "data-token-required=\"true\"",
            1,
        )
    } else {
        PAGE.to_owned()
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY.as_str()),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        assert!(POLICY.contains("script-src 'sha256-"), "{}", *POLICY);
        assert!(!POLICY.contains("unsafe-inline"));
        // One script and one style element: the hashes cover all there is.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        // No inline handlers or style attributes, which a hash does not allow.
        assert!(!PAGE.contains(" onclick=") && !PAGE.contains(" style=\""));
    }

    #[test]
    fn the_page_carries_the_ids_browser_tests_read() {
        for id in [
            "hit-ratio",
            "bytes-served",
            "bytes-upstream",
            "store-bytes",
            "updates-approved",
            "downloads",
            "update-search",
        ] {
            assert!(PAGE.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(PAGE.contains("data-token-required=\"false\""));
    }
}
