//! The PROXY protocol (v1 text, v2 binary; HAProxy's `send-proxy`), so that
//! behind a load balancer the access log names the Windows client, not the
//! balancer.
//!
//! Only peers in `proxy_protocol_from` may send the header; from them it is
//! optional (a health check may come without one). From anyone else the
//! bytes are plain HTTP, so no client can name another's address.

use std::net::IpAddr;
use std::time::Duration;

use bytes::BytesMut;
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header taken: v1's is at most 107 bytes; HAProxy's v2 with
/// its usual TLVs is a few hundred.
pub const MAX_HEADER: usize = 1024;

const V1_SIGNATURE: &[u8] = b"PROXY ";

/// What the start of a connection from a trusted peer held.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// A header naming the client; the bytes after it.
    Proxied(IpAddr, BytesMut),
    /// A header without a client (v2 `LOCAL`, v1 `UNKNOWN`: the balancer's
    /// own health check), or none at all: the socket's peer is the client.
    Direct(BytesMut),
}

/// Why a connection was dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("a malformed PROXY protocol header")]
    Malformed,
    #[error("a PROXY protocol header over {MAX_HEADER} bytes")]
    TooLong,
    #[error("the connection closed or stalled before its PROXY protocol header ended")]
    Cut,
}

/// Reads from `stream` until it is clear whether it starts with a PROXY
/// header and, if so, until the header ends (within `limit`).
pub async fn read_start(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<Start, ProxyHeaderError> {
    let mut buf = BytesMut::with_capacity(4096);
    let reading = async {
        loop {
            match classify(&mut buf) {
                Classified::NeedMore if buf.len() >= MAX_HEADER => {
                    return Err(ProxyHeaderError::TooLong)
                }
                Classified::NeedMore => {}
                Classified::Done(result) => return result,
            }
            match stream.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ if buf.is_empty() => return Ok(Start::Direct(buf)),
                _ => return Err(ProxyHeaderError::Cut),
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or(Err(ProxyHeaderError::Cut))
}

enum Classified {
    NeedMore,
    Done(Result<Start, ProxyHeaderError>),
}

/// Looks at what has been read so far; a whole header is split off `buf`.
fn classify(buf: &mut BytesMut) -> Classified {
    if buf.is_empty() {
        return Classified::NeedMore;
    }
    let could_be = |signature: &[u8]| {
        let n = buf.len().min(signature.len());
        buf[..n] == signature[..n]
    };
    if !could_be(V1_SIGNATURE) && !could_be(ppp::v2::PROTOCOL_PREFIX) {
        return Classified::Done(Ok(Start::Direct(std::mem::take(buf))));
    }
    if let Some(announced) = v2_length(buf) {
        // The length is known from the 16th byte: a header announced
        // longer than we take is refused now, not after waiting for it.
        if announced > MAX_HEADER {
            return Classified::Done(Err(ProxyHeaderError::TooLong));
        }
    }
    let parsed = HeaderResult::parse(buf);
    if !parsed.is_complete() {
        return Classified::NeedMore;
    }
    let (client, len) = match parsed {
        HeaderResult::V1(Ok(h)) => (v1_client(&h.addresses), h.header.len()),
        HeaderResult::V2(Ok(h)) => (v2_client(&h), h.len()),
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => {
            return Classified::Done(Err(ProxyHeaderError::Malformed))
        }
    };
    let rest = buf.split_off(len);
    *buf = BytesMut::new();
    Classified::Done(Ok(match client {
        Some(ip) => Start::Proxied(ip, rest),
        None => Start::Direct(rest),
    }))
}

/// A v2 header's whole length, as its fixed 16 bytes announce it.
fn v2_length(buf: &[u8]) -> Option<usize> {
    let prefix = ppp::v2::PROTOCOL_PREFIX;
    if buf.len() < 16 || &buf[..prefix.len()] != prefix {
        return None;
    }
    Some(16 + u16::from_be_bytes([buf[14], buf[15]]) as usize)
}

fn v1_client(addresses: &ppp::v1::Addresses) -> Option<IpAddr> {
    match addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(a.source_address.into()),
        ppp::v1::Addresses::Tcp6(a) => Some(a.source_address.into()),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_client(header: &ppp::v2::Header<'_>) -> Option<IpAddr> {
    if header.command == ppp::v2::Command::Local {
        return None;
    }
    match &header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(a.source_address.into()),
        ppp::v2::Addresses::IPv6(a) => Some(a.source_address.into()),
        ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified => None,
    }
}

/// The classification of a whole input, for the fuzz target: what a connection
/// starting with `bytes` (and then closing) would be taken as.
pub fn classify_all(bytes: &[u8]) -> Option<Result<Start, ProxyHeaderError>> {
    let mut buf = BytesMut::from(bytes);
    match classify(&mut buf) {
        Classified::Done(result) => Some(result),
        Classified::NeedMore => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(bytes: &[u8]) -> Option<Result<Start, ProxyHeaderError>> {
        classify_all(bytes)
    }

    #[test]
    fn a_v1_header_names_the_client_and_leaves_the_request() {
        let got = start(b"PROXY TCP4 192.0.2.7 10.0.0.5 50123 8530\r\nGET / HTTP/1.1\r\n");
        assert_eq!(
            got,
            Some(Ok(Start::Proxied(
                "192.0.2.7".parse().unwrap(),
                BytesMut::from(&b"GET / HTTP/1.1\r\n"[..])
            )))
        );
        let v6 = start(b"PROXY TCP6 2001:db8::7 2001:db8::1 50123 8530\r\n");
        assert_eq!(
            v6,
            Some(Ok(Start::Proxied(
                "2001:db8::7".parse().unwrap(),
                BytesMut::new()
            )))
        );
        assert_eq!(
            start(b"PROXY UNKNOWN\r\nGET"),
            Some(Ok(Start::Direct(BytesMut::from(&b"GET"[..]))))
        );
    }

    #[test]
    fn a_v2_header_names_the_client_and_local_names_none() {
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.9:40000"
                    .parse::<std::net::SocketAddr>()
                    .unwrap(),
                "10.0.0.5:8530".parse::<std::net::SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let mut input = header.clone();
        input.extend_from_slice(b"GET /x HTTP/1.1\r\n");
        assert_eq!(
            start(&input),
            Some(Ok(Start::Proxied(
                "198.51.100.9".parse().unwrap(),
                BytesMut::from(&b"GET /x HTTP/1.1\r\n"[..])
            )))
        );
        // Cut anywhere inside: more is needed.
        for cut in 1..header.len() {
            assert_eq!(start(&header[..cut]), None, "{cut}");
        }
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(start(&local), Some(Ok(Start::Direct(BytesMut::new()))));
    }

    #[test]
    fn plain_requests_pass_and_bad_headers_are_refused() {
        assert_eq!(
            start(b"GET / HTTP/1.1\r\n"),
            Some(Ok(Start::Direct(BytesMut::from(
                &b"GET / HTTP/1.1\r\n"[..]
            ))))
        );
        // "PRI * HTTP/2.0" (h2c) starts like neither signature past "PR".
        assert!(matches!(
            start(b"PRI * HTTP/2.0\r\n"),
            Some(Ok(Start::Direct(_)))
        ));
        assert_eq!(start(b"PROX"), None);
        // A v2 header announcing more than MAX_HEADER is refused at its
        // 16th byte, not waited for.
        let mut long = ppp::v2::PROTOCOL_PREFIX.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(start(&long), Some(Err(ProxyHeaderError::TooLong)));
        assert_eq!(
            start(b"PROXY TCP4 not-an-address 10.0.0.5 1 2\r\n"),
            Some(Err(ProxyHeaderError::Malformed))
        );
    }
}
