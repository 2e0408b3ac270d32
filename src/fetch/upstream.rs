//! The HTTP client every upstream transfer goes by: timeouts, an
//! administrator's CA for an internal mirror, and the organisation's proxy.

use super::{FetchError, FetchSettings};

/// An HTTP proxy for upstream downloads: plain HTTP through it, HTTPS by
/// `CONNECT`; credentials in the URL are sent as Basic
/// `Proxy-Authorization`.
#[derive(Clone)]
pub struct UpstreamProxy {
    pub url: reqwest::Url,
    /// Hosts, domains and networks reached directly (`NO_PROXY` syntax:
    /// `upcache.corp, .corp.example, 10.0.0.0/8`).
    pub no_proxy: Option<String>,
}

impl UpstreamProxy {
    /// The URL as logs and errors show it: without the password.
    pub fn shown(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }

    /// Adds `url`'s host to the hosts reached without the proxy: the shared
    /// tier's own endpoint is inside the network, like the nodes.
    pub fn reach_directly(&mut self, url: &str) {
        let Some(host) = reqwest::Url::parse(url)
            .ok()
            // An IPv6 literal without its brackets, as `NO_PROXY` lists it.
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
        else {
            return;
        };
        self.no_proxy = Some(match self.no_proxy.take() {
            Some(list) if !list.trim().is_empty() => format!("{list},{host}"),
            _ => host,
        });
    }
}

impl std::fmt::Debug for UpstreamProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamProxy")
            .field("url", &self.shown())
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The upstream client for `settings`, through `proxy` if there is one.
pub(super) fn client(
    settings: &FetchSettings,
    proxy: Option<&UpstreamProxy>,
) -> Result<reqwest::Client, FetchError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .user_agent(concat!("upcache/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.upstream_ca_file {
        builder = crate::net::pem::trust_roots_from(builder, path)
            .map_err(|e| FetchError::Setup(e.to_string()))?;
    }
    if let Some(proxy) = proxy {
        let no_proxy = proxy
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        let all = reqwest::Proxy::all(proxy.url.clone())
            .map_err(|e| FetchError::Setup(format!("upstream_proxy: {e}")))?;
        builder = builder.proxy(all.no_proxy(no_proxy));
        tracing::info!(proxy = %proxy.shown(), no_proxy = ?proxy.no_proxy, "upstream downloads through a proxy");
    }
    builder
        .build()
        .map_err(|e| FetchError::Setup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_tier_endpoint_is_reached_without_the_proxy() {
        let mut proxy = UpstreamProxy {
            url: "http://u:secret@proxy:3128".parse().unwrap(),
            no_proxy: None,
        };
        proxy.reach_directly("http://seaweed.corp:8333");
        assert_eq!(proxy.no_proxy.as_deref(), Some("seaweed.corp"));
        proxy.reach_directly("https://[fd00::5]:9000/");
        assert_eq!(proxy.no_proxy.as_deref(), Some("seaweed.corp,fd00::5"));
        proxy.reach_directly("not a url");
        assert_eq!(proxy.no_proxy.as_deref(), Some("seaweed.corp,fd00::5"));
        assert!(!format!("{proxy:?}").contains("secret"));
    }
}
