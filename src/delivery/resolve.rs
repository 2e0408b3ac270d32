//! Name resolution for DO origins reached directly (no `upstream_proxy`):
//! upcache resolves the name itself, refuses it if any answer is internal
//! (see [`OriginPolicy::check_answers`]), and pins the checked answer for
//! the connection. The reqwest client of direct DO fetches takes its
//! addresses from [`PinnedResolver`] (`ClientBuilder::dns_resolver`), so the
//! connection goes to the very addresses that were checked: there is no
//! second lookup for a rebinding name to answer differently.
//!
//! reqwest 0.12 also offers `resolve`/`resolve_to_addrs`, but those fix
//! addresses per client at build time: one client per origin name. A
//! resolver of our own keeps one client (and its connection pool).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::origin::{OriginError, OriginPolicy};

/// How long a checked answer is used for new connections before the name
/// is looked up (and checked) again.
const PIN_TTL: Duration = Duration::from_secs(60);
/// Most names pinned at once (a bound on what clients can make us keep).
const MAX_PINS: usize = 1024;

/// Why a name gives no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// An answer is internal: refused (403), nothing connected.
    #[error(transparent)]
    Refused(#[from] OriginError),
    /// No answer (NXDOMAIN, a failing resolver): an upstream failure (502).
    #[error("resolving {0}: {1}")]
    Failed(String, String),
    /// The resolver did not answer in time (504).
    #[error("resolving {0} timed out")]
    Timeout(String),
}

/// Resolves and checks origin names, and remembers what it checked.
pub struct PinnedResolver {
    policy: Arc<OriginPolicy>,
    timeout: Duration,
    pins: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

impl PinnedResolver {
    pub fn new(policy: Arc<OriginPolicy>, timeout: Duration) -> Arc<PinnedResolver> {
        Arc::new(PinnedResolver {
            policy,
            timeout,
            pins: Mutex::default(),
        })
    }

    /// The checked addresses of `name`: pinned ones while fresh, else a
    /// lookup whose every answer is checked, then pinned.
    pub async fn checked(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(addrs) = self.pinned(name) {
            return Ok(addrs);
        }
        let lookup = tokio::net::lookup_host((name, 0));
        let answers: Vec<IpAddr> = tokio::time::timeout(self.timeout, lookup)
            .await
            .map_err(|_| ResolveError::Timeout(name.to_owned()))?
            .map_err(|e| ResolveError::Failed(name.to_owned(), e.to_string()))?
            .map(|a| a.ip())
            .collect();
        if answers.is_empty() {
            return Err(ResolveError::Failed(name.to_owned(), "no address".into()));
        }
        self.policy.check_answers(name, &answers)?;
        self.pin(name, answers.clone());
        Ok(answers)
    }

    fn pinned(&self, name: &str) -> Option<Vec<IpAddr>> {
        let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        pins.get(name)
            .filter(|(at, _)| at.elapsed() < PIN_TTL)
            .map(|(_, addrs)| addrs.clone())
    }

    fn pin(&self, name: &str, addrs: Vec<IpAddr>) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if pins.len() >= MAX_PINS {
            pins.retain(|_, (at, _)| at.elapsed() < PIN_TTL);
            if pins.len() >= MAX_PINS {
                pins.clear();
            }
        }
        pins.insert(name.to_owned(), (Instant::now(), addrs));
    }
}

/// reqwest's view: the connection's addresses come from [`PinnedResolver::checked`].
pub struct ForClient(pub Arc<PinnedResolver>);

impl reqwest::dns::Resolve for ForClient {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let addrs = resolver.checked(name.as_str()).await?;
            let addrs = addrs.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(addrs) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loopback_answer_is_refused_and_an_allowed_network_pinned() {
        let strict = PinnedResolver::new(Arc::default(), Duration::from_secs(5));
        let e = strict.checked("localhost").await.unwrap_err();
        assert!(
            matches!(&e, ResolveError::Refused(OriginError::PrivateAnswer(n, ip)) if n == "localhost" && ip.is_loopback()),
            "{e:?}"
        );
        assert!(
            strict.pinned("localhost").is_none(),
            "a refused name is not pinned"
        );

        let loopback = OriginPolicy::new(
            Vec::new(),
            vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        );
        let allowed = PinnedResolver::new(Arc::new(loopback), Duration::from_secs(5));
        let addrs = allowed.checked("localhost").await.unwrap();
        assert!(addrs.iter().all(|a| a.is_loopback()));
        assert_eq!(allowed.pinned("localhost"), Some(addrs));
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_an_upstream_failure() {
        let r = PinnedResolver::new(Arc::default(), Duration::from_secs(5));
        let e = r.checked("no-such-name.invalid").await.unwrap_err();
        assert!(
            matches!(e, ResolveError::Failed(..) | ResolveError::Timeout(_)),
            "{e:?}"
        );
    }
}
