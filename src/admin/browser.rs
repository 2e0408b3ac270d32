//! What keeps a web page from driving the admin API.
//!
//! A browser on the administrator's desk can reach the loopback API: a
//! hostile page can post forms to it, send `no-cors` fetches, or rebind its
//! own DNS name to 127.0.0.1 to read the answers. Each is refused here,
//! before the token check and any handler:
//! - a `Host` that is not this API's (DNS rebinding names the attacker's host);
//! - a foreign `Origin`, or `Sec-Fetch-Site: cross-site` (forms, fetches);
//! - a POST or PUT whose body is not exactly `application/json` (or
//!   `application/xml` for catalogs): the types a page may send without a
//!   CORS preflight are form types and `text/plain`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;

use super::AdminSettings;
use super::ApiError;
use crate::node::App;

/// The media types control bodies may have.
const JSON: &str = "application/json";
const XML: &str = "application/xml";
const NDJSON: &str = "application/x-ndjson";

pub async fn refuse_cross_site(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let body_is_empty = req.body().size_hint().exact() == Some(0);
    if let Err((reason, e)) = check(&app.config.admin, &req, body_is_empty) {
        app.metrics.admin_refused(reason);
        tracing::warn!(reason, error = %e.1, "admin request refused");
        return e.into_response();
    }
    next.run(req).await
}

/// `Err((reason, answer))` for a request a page could have sent.
fn check(
    admin: &AdminSettings,
    req: &Request,
    body_is_empty: bool,
) -> Result<(), (&'static str, ApiError)> {
    let headers = req.headers();
    // The target's authority (h2's `:authority`, an absolute-form target)
    // names the host before `Host` does (RFC 9113 §8.3.1, RFC 9112 §3.2.2):
    // judging `Host` alone would let a request name one host and be
    // checked against another.
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    // A request that names no host at all cannot come from a browser (an
    // HTTP/1.0 health checker: HAProxy's `option httpchk GET /healthz`), so
    // no rebinding page; the probes answer it.
    let unnamed_probe = host.is_empty()
        && req.headers().get(header::HOST).is_none()
        && matches!(req.uri().path(), "/healthz" | "/metrics");
    if !unnamed_probe && !host_is_ours(host, admin) {
        return Err(forbidden(
            "host",
            format!(
                "Host {host:?} is not this admin API's (add the name to admin_hosts to use it)"
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !is_same_origin(origin, host) {
            return Err(forbidden(
                "origin",
                format!("cross-origin request from {origin:?} refused"),
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Err(forbidden("cross_site", "cross-site request refused".into()));
    }
    if req.method() == Method::POST || req.method() == Method::PUT {
        check_content_type(req.uri().path(), headers, body_is_empty)
            .map_err(|e| ("content_type", e))?;
    }
    Ok(())
}

fn forbidden(reason: &'static str, message: String) -> (&'static str, ApiError) {
    (reason, ApiError(StatusCode::FORBIDDEN, message))
}

/// A POST or PUT body must say exactly what it is; a bodiless one (approve,
/// decline) may say nothing.
fn check_content_type(
    path: &str,
    headers: &HeaderMap,
    body_is_empty: bool,
) -> Result<(), ApiError> {
    let allowed: &[&str] = match path {
        "/api/v1/catalog" => &[JSON, XML],
        "/api/v1/documents" => &[NDJSON],
        _ => &[JSON],
    };
    match (headers.get(header::CONTENT_TYPE), media_type(headers)) {
        (None, _) if body_is_empty => Ok(()),
        (_, Some(t)) if allowed.contains(&t) => Ok(()),
        (given, _) => Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this body must be sent as Content-Type: {}, not {}",
                allowed.join(" or "),
                given.map_or("nothing".into(), |v| format!("{v:?}"))
            ),
        )),
    }
}

/// `application/json`, `application/xml` or `application/x-ndjson`,
/// whatever the parameters and case.
pub fn media_type(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim();
    [JSON, XML, NDJSON]
        .into_iter()
        .find(|t| essence.eq_ignore_ascii_case(t))
}

/// Loopback names and addresses, the address the API listens on (any IP
/// literal when it listens on all of them: a rebinding page always has a
/// name), and the names in `admin_hosts`.
fn host_is_ours(host: &str, admin: &AdminSettings) -> bool {
    let name = host_name(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        let listen = admin.admin_listen.ip();
        return ip.is_loopback() || ip == listen || listen.is_unspecified();
    }
    admin
        .admin_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// `host[:port]` or `[v6][:port]` without the port.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The page that sent the request was served by this API itself (the
/// web console): its origin is the scheme plus the very host it asked.
fn is_same_origin(origin: &str, host: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, hosts: &[&str]) -> AdminSettings {
        AdminSettings {
            admin_listen: listen.parse().unwrap(),
            admin_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..AdminSettings::default()
        }
    }

    #[test]
    fn only_loopback_the_listen_address_and_named_hosts_are_ours() {
        let c = config("127.0.0.1:8531", &["upcache.corp.example"]);
        for ok in [
            "127.0.0.1:8531",
            "localhost:8531",
            "LOCALHOST",
            "[::1]:8531",
            "127.0.0.2",
            "upcache.corp.example:8531",
        ] {
            assert!(host_is_ours(ok, &c), "{ok}");
        }
        for refused in [
            "evil.example:8531",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.5:8531",
            "",
        ] {
            assert!(!host_is_ours(refused, &c), "{refused}");
        }
        let exposed = config("10.0.0.5:8531", &[]);
        assert!(host_is_ours("10.0.0.5:8531", &exposed));
        assert!(!host_is_ours("10.0.0.6:8531", &exposed));
        let any = config("0.0.0.0:8531", &[]);
        assert!(host_is_ours("192.168.1.9:8531", &any));
        assert!(!host_is_ours("rebound.example:8531", &any));
    }

    #[test]
    fn origins_must_match_the_host_asked() {
        assert!(is_same_origin("http://127.0.0.1:8531", "127.0.0.1:8531"));
        assert!(!is_same_origin("http://127.0.0.1:9999", "127.0.0.1:8531"));
        assert!(!is_same_origin("null", "127.0.0.1:8531"));
        assert!(!is_same_origin(
            "http://127.0.0.1:8531.evil",
            "127.0.0.1:8531"
        ));
    }

    #[test]
    fn bodies_must_be_typed_exactly() {
        let typed = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, t.parse().unwrap());
            h
        };
        let json = typed("application/json; charset=utf-8");
        assert!(check_content_type("/api/v1/rules", &json, false).is_ok());
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            let e = check_content_type("/api/v1/rules", &typed(bad), false).unwrap_err();
            assert_eq!(e.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        }
        assert!(check_content_type("/api/v1/catalog", &typed("application/xml"), false).is_ok());
        assert!(check_content_type("/api/v1/rules", &typed("application/xml"), false).is_err());
        // Untyped: only without a body.
        assert!(check_content_type("/api/v1/updates/x/approve", &HeaderMap::new(), true).is_ok());
        assert!(check_content_type("/api/v1/rules", &HeaderMap::new(), false).is_err());
    }
}
