//! Where a DO object may be fetched from: the `cacheHostOrigin` a client
//! names, checked against the administrator's host patterns and networks
//! before any upstream connection.
//!
//! upcache must never become an open proxy. So the origin is a plain ASCII
//! name or an IP literal, taken as written (never percent-decoded into a
//! match), exactly once, with no userinfo and no port; a name must match a
//! `do_origins` pattern, an IP literal must lie inside a `do_origin_networks`
//! network. Names are then resolved by upcache itself and every answer
//! checked (see [`OriginPolicy::check_answers`]); the connection goes to those checked
//! addresses (`resolve.rs`), so a second lookup cannot rebind the name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// The query parameter DO's cache-host rewrite appends.
pub const ORIGIN_PARAM: &str = "cacheHostOrigin";
/// Longest query looked at (DO's token is ~150 bytes).
pub const MAX_QUERY: usize = 4096;
/// Most parameters looked at.
const MAX_PARAMS: usize = 64;
/// Longest host name (RFC 1035).
const MAX_NAME: usize = 253;

/// The default `do_origins`: Microsoft's DO and Windows Update CDNs.
pub const DEFAULT_PATTERNS: [&str; 4] = [
    "*.dl.delivery.mp.microsoft.com",
    "*.delivery.mp.microsoft.com",
    "*.windowsupdate.com",
    "*.download.windowsupdate.com",
];

/// Why an origin is refused. Every refusal happens before any connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("no cacheHostOrigin in the query")]
    Missing,
    #[error("cacheHostOrigin given more than once")]
    Duplicate,
    #[error("cacheHostOrigin is percent-encoded")]
    Encoded,
    #[error("cacheHostOrigin carries userinfo")]
    Userinfo,
    #[error("cacheHostOrigin carries a port")]
    Port,
    #[error("cacheHostOrigin is not a plain host name")]
    NotAName,
    #[error("query longer than {MAX_QUERY} bytes or {MAX_PARAMS} parameters")]
    TooLong,
    #[error("origin {0} matches no do_origins pattern")]
    NotAllowed(String),
    #[error("origin address {0} is outside do_origin_networks")]
    AddressNotAllowed(IpAddr),
    #[error("origin {0} resolves to a loopback, private or link-local address ({1})")]
    PrivateAnswer(String, IpAddr),
}

impl OriginError {
    /// The `reason` label of `upcache_do_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Duplicate => "duplicate",
            Self::Encoded => "encoded",
            Self::Userinfo => "userinfo",
            Self::Port => "port",
            Self::NotAName => "not_a_name",
            Self::TooLong => "too_long",
            Self::NotAllowed(_) => "not_allowed",
            Self::AddressNotAllowed(_) => "address",
            Self::PrivateAnswer(..) => "private_answer",
        }
    }

    /// Malformed requests (400) as against refused origins (403). Both are
    /// 4xx on purpose: DO stops asking this cache host for that origin for
    /// a while, which is right, as the same request would be refused again.
    pub fn is_malformed(&self) -> bool {
        !matches!(
            self,
            Self::NotAllowed(_) | Self::AddressNotAllowed(_) | Self::PrivateAnswer(..)
        )
    }
}

/// A checked-syntax origin host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A lowercase DNS name.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// As it goes into a URL's authority.
    pub fn to_authority(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(IpAddr::V4(a)) => a.to_string(),
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        }
    }
}

/// A client's query split: the origin it names, and the rest of the query
/// exactly as sent (parameters in order, `cacheHostOrigin` taken out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginQuery {
    pub host: Host,
    /// `cacheHostOrigin=<value>` as the client sent it (for an upstream upcache).
    pub origin_param: String,
    /// The query to forward to the origin; empty if nothing is left.
    pub forward: String,
}

/// Splits `query` into its origin and the rest (bounded; nothing decoded).
pub fn split_query(query: Option<&str>) -> Result<OriginQuery, OriginError> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY {
        return Err(OriginError::TooLong);
    }
    let mut origin: Option<&str> = None;
    let mut rest: Vec<&str> = Vec::new();
    for (i, param) in query.split('&').enumerate() {
        if i >= MAX_PARAMS {
            return Err(OriginError::TooLong);
        }
        let name = param.split_once('=').map_or(param, |(n, _)| n);
        if name.eq_ignore_ascii_case(ORIGIN_PARAM) {
            if origin.replace(param).is_some() {
                return Err(OriginError::Duplicate);
            }
        } else if name.contains('%') && decodes_to_origin_param(name) {
            // Another server might decode it into the parameter we check.
            return Err(OriginError::Encoded);
        } else if !param.is_empty() {
            rest.push(param);
        }
    }
    let param = origin.ok_or(OriginError::Missing)?;
    let value = param.split_once('=').map_or("", |(_, v)| v);
    Ok(OriginQuery {
        host: parse_host(value)?,
        origin_param: param.to_owned(),
        forward: rest.join("&"),
    })
}

/// Whether a percent-encoded parameter name decodes to `cacheHostOrigin`.
fn decodes_to_origin_param(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(ORIGIN_PARAM.len());
    let mut i = 0;
    while i < bytes.len() && out.len() <= ORIGIN_PARAM.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out.eq_ignore_ascii_case(ORIGIN_PARAM.as_bytes())
}

/// A `cacheHostOrigin` value: a plain ASCII name, a dotted IPv4 address,
/// or a bracketed IPv6 address; nothing else.
pub fn parse_host(value: &str) -> Result<Host, OriginError> {
    if value.contains('%') {
        return Err(OriginError::Encoded);
    }
    if value.contains('@') {
        return Err(OriginError::Userinfo);
    }
    if let Some(inner) = value.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(OriginError::Port)?;
        return Ipv6Addr::from_str(inner)
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| OriginError::NotAName);
    }
    if value.contains(':') {
        return Err(OriginError::Port);
    }
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(OriginError::NotAName);
    }
    if let Ok(v4) = Ipv4Addr::from_str(value) {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    let labels_ok = value.split('.').all(is_label);
    // A numeric last label is an address in some other spelling (`127.1`,
    // `0x7f.1`, `2130706433`), which resolvers accept and patterns do not
    // expect: never a name.
    let last = value.rsplit('.').next().unwrap_or("");
    let numeric = last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x");
    if !labels_ok || numeric {
        return Err(OriginError::NotAName);
    }
    Ok(Host::Name(value.to_ascii_lowercase()))
}

fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// One `do_origins` entry: `example.com` (that name) or `*.example.com`
/// (one or more labels in front of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase; for a wildcard, with its leading dot (`.example.com`).
    suffix: String,
    wildcard: bool,
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        match parse_host(name) {
            Ok(Host::Name(name)) => Ok(HostPattern {
                suffix: if wildcard { format!(".{name}") } else { name },
                wildcard,
            }),
            _ => Err(format!(
                "{s:?} is not a host pattern (a name, or *. and a name)"
            )),
        }
    }
}

impl HostPattern {
    /// Whether a lowercase name matches.
    pub fn matches(&self, name: &str) -> bool {
        if self.wildcard {
            name.len() > self.suffix.len() && name.ends_with(&self.suffix)
        } else {
            name == self.suffix
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*{}", self.suffix)
        } else {
            f.write_str(&self.suffix)
        }
    }
}

/// `do_origins` and `do_origin_networks`, ready to check.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    patterns: Vec<HostPattern>,
    networks: Vec<IpNet>,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        let patterns = DEFAULT_PATTERNS.iter().map(|p| p.parse().expect("valid"));
        OriginPolicy {
            patterns: patterns.collect(),
            networks: Vec::new(),
        }
    }
}

impl OriginPolicy {
    pub fn new(patterns: Vec<HostPattern>, networks: Vec<IpNet>) -> OriginPolicy {
        OriginPolicy { patterns, networks }
    }

    /// Checks the host itself: a name against the patterns, an address
    /// against the networks.
    pub fn check_host(&self, host: &Host) -> Result<(), OriginError> {
        match host {
            Host::Name(name) if self.patterns.iter().any(|p| p.matches(name)) => Ok(()),
            Host::Name(name) => Err(OriginError::NotAllowed(name.clone())),
            Host::Ip(ip) if self.allows_address(*ip) => Ok(()),
            Host::Ip(ip) => Err(OriginError::AddressNotAllowed(*ip)),
        }
    }

    /// Checks what a name resolved to: every answer must be a public
    /// address, or inside `do_origin_networks`. One bad answer refuses the
    /// name (a rebinding name mixes them).
    pub fn check_answers(&self, name: &str, answers: &[IpAddr]) -> Result<(), OriginError> {
        match answers
            .iter()
            .find(|ip| is_internal(**ip) && !self.in_networks(**ip))
        {
            Some(ip) => Err(OriginError::PrivateAnswer(name.to_owned(), *ip)),
            None => Ok(()),
        }
    }

    /// An IP literal is allowed only inside `do_origin_networks`, and
    /// never when it cannot be a unicast host.
    fn allows_address(&self, ip: IpAddr) -> bool {
        !is_never_a_host(ip) && self.in_networks(ip)
    }

    fn in_networks(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Unspecified, multicast, broadcast: no origin lives there.
fn is_never_a_host(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    }
}

/// Loopback, private, link-local, shared (CGNAT), unique-local and
/// the like: addresses inside an organisation, which an origin named by a
/// client must never reach unless the administrator lists them.
pub fn is_internal(ip: IpAddr) -> bool {
    if is_never_a_host(ip) {
        return true;
    }
    match canonical(ip) {
        IpAddr::V4(a) => {
            let [a0, a1, ..] = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a0 == 0
                || (a0 == 100 && (64..128).contains(&a1)) // 100.64.0.0/10
                || (a0 == 192 && a1 == 0 && a.octets()[2] == 0) // 192.0.0.0/24
                || (a0 == 198 && (18..20).contains(&a1)) // benchmarking
                || a0 >= 240
        }
        IpAddr::V6(a) => {
            let s0 = a.segments()[0];
            a.is_loopback()
                || (s0 & 0xfe00) == 0xfc00 // unique local
                || (s0 & 0xffc0) == 0xfe80 // link-local
                || (s0 & 0xffc0) == 0xfec0 // site-local (deprecated)
                || nat64_internal(a)
        }
    }
}

/// `64:ff9b::a.b.c.d` reaches `a.b.c.d` through a NAT64 gateway.
fn nat64_internal(a: Ipv6Addr) -> bool {
    let s = a.segments();
    if s[..6] != [0x64, 0xff9b, 0, 0, 0, 0] {
        return false;
    }
    let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    is_internal(IpAddr::V4(v4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(networks: &[&str]) -> OriginPolicy {
        OriginPolicy {
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            ..OriginPolicy::default()
        }
    }

    fn refused(query: &str) -> OriginError {
        let p = policy(&[]);
        match split_query(Some(query)) {
            Err(e) => e,
            Ok(q) => p.check_host(&q.host).unwrap_err(),
        }
    }

    #[test]
    fn the_origin_is_split_off_and_the_rest_kept_verbatim() {
        let q = split_query(Some(
            "P1=1764650000&P2=404&P3=2&P4=a%2Bb%3D&cacheHostOrigin=7.tlu.dl.delivery.mp.microsoft.com",
        ))
        .unwrap();
        assert_eq!(
            q.host,
            Host::Name("7.tlu.dl.delivery.mp.microsoft.com".into())
        );
        assert_eq!(q.forward, "P1=1764650000&P2=404&P3=2&P4=a%2Bb%3D");
        assert_eq!(
            q.origin_param,
            "cacheHostOrigin=7.tlu.dl.delivery.mp.microsoft.com"
        );
        policy(&[]).check_host(&q.host).unwrap();
        let only = split_query(Some("cacheHostOrigin=DL.Delivery.MP.Microsoft.com")).unwrap();
        assert_eq!(only.forward, "");
        assert_eq!(only.host, Host::Name("dl.delivery.mp.microsoft.com".into()));
    }

    #[test]
    fn every_trick_is_refused() {
        let cases = [
            ("P1=1", "missing"),
            ("", "missing"),
            (
                "cacheHostOrigin=a.windowsupdate.com&cacheHostOrigin=b.windowsupdate.com",
                "duplicate",
            ),
            (
                "cacheHostOrigin=a.windowsupdate.com&CACHEHOSTORIGIN=evil.example",
                "duplicate",
            ),
            ("cacheHostOrigin=evil%2Ewindowsupdate.com", "encoded"),
            ("cacheHostOrigin=x.windowsupdate.com%00.evil", "encoded"),
            (
                "cacheHost%4Frigin=evil.example&cacheHostOrigin=a.windowsupdate.com",
                "encoded",
            ),
            ("cacheHostOrigin=user@a.windowsupdate.com", "userinfo"),
            ("cacheHostOrigin=a.windowsupdate.com:8080", "port"),
            ("cacheHostOrigin=[::1]:80", "port"),
            ("cacheHostOrigin=a.windowsupdate.com.", "not_a_name"),
            ("cacheHostOrigin=a_b.windowsupdate.com", "not_a_name"),
            ("cacheHostOrigin=a.windowsupdate.com/x", "not_a_name"),
            ("cacheHostOrigin=", "not_a_name"),
            ("cacheHostOrigin=127.1", "not_a_name"),
            ("cacheHostOrigin=2130706433", "not_a_name"),
            ("cacheHostOrigin=0x7f.0x1", "not_a_name"),
            (
                "cacheHostOrigin=xn--w.windowsupdate.com\u{e9}",
                "not_a_name",
            ),
            ("cacheHostOrigin=windowsupdate.com", "not_allowed"),
            ("cacheHostOrigin=evilwindowsupdate.com", "not_allowed"),
            (
                "cacheHostOrigin=windowsupdate.com.evil.example",
                "not_allowed",
            ),
            ("cacheHostOrigin=localhost", "not_allowed"),
            ("cacheHostOrigin=127.0.0.1", "address"),
            ("cacheHostOrigin=13.107.4.50", "address"),
            ("cacheHostOrigin=[::ffff:127.0.0.1]", "address"),
        ];
        for (query, reason) in cases {
            assert_eq!(refused(query).reason(), reason, "{query}");
        }
        let long = format!(
            "cacheHostOrigin=a.windowsupdate.com&P4={}",
            "a".repeat(5000)
        );
        assert_eq!(refused(&long), OriginError::TooLong);
        let many = "a=1&".repeat(100) + "cacheHostOrigin=a.windowsupdate.com";
        assert_eq!(refused(&many), OriginError::TooLong);
    }

    #[test]
    fn a_wildcard_matches_one_or_more_labels() {
        let p: HostPattern = "*.dl.delivery.mp.microsoft.com".parse().unwrap();
        assert!(p.matches("tlu.dl.delivery.mp.microsoft.com"));
        assert!(p.matches("7.tlu.dl.delivery.mp.microsoft.com"));
        assert!(!p.matches("dl.delivery.mp.microsoft.com"));
        assert!(!p.matches("xdl.delivery.mp.microsoft.com"));
        let exact: HostPattern = "Emdl.WS.Microsoft.com".parse().unwrap();
        assert!(exact.matches("emdl.ws.microsoft.com"));
        assert!(!exact.matches("a.emdl.ws.microsoft.com"));
        assert_eq!(exact.to_string(), "emdl.ws.microsoft.com");
        for bad in ["*", "*.", "a.*.b", "*.127.0.0.1", "a:80", "**.a.b"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
        }
        // The default list allows DO's own health-probe origin.
        let probe = Host::Name("dl.delivery.mp.microsoft.com".into());
        policy(&[]).check_host(&probe).unwrap();
    }

    #[test]
    fn addresses_need_a_network_and_answers_must_be_public() {
        let p = policy(&["127.0.0.0/8", "10.1.0.0/16"]);
        for ok in ["127.0.0.7", "10.1.2.3", "[::ffff:127.0.0.1]"] {
            let q = split_query(Some(&format!("cacheHostOrigin={ok}"))).unwrap();
            p.check_host(&q.host).unwrap();
        }
        for no in ["10.2.0.1", "0.0.0.0", "255.255.255.255"] {
            let q = split_query(Some(&format!("cacheHostOrigin={no}"))).unwrap();
            assert!(p.check_host(&q.host).is_err(), "{no}");
        }
        let public: IpAddr = "13.107.4.50".parse().unwrap();
        p.check_answers("a.windowsupdate.com", &[public]).unwrap();
        for internal in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = internal.parse().unwrap();
            assert!(is_internal(ip), "{internal}");
            let e = policy(&[])
                .check_answers("a.windowsupdate.com", &[public, ip])
                .unwrap_err();
            assert_eq!(e.reason(), "private_answer", "{internal}");
        }
        // Inside an allowed network, a private answer is the administrator's choice.
        p.check_answers("mirror.windowsupdate.com", &["10.1.0.9".parse().unwrap()])
            .unwrap();
    }
}
