//! The few answers the transport gives itself, before any service sees
//! the request (a client outside the allow list, plain HTTP on a TLS port).

use std::time::Duration;

use tokio::net::TcpStream;

/// Writes a whole HTTP/1.1 answer, then reads what the client sent until it
/// closes (bounded): closing on unread bytes would reset the connection,
/// and the client might lose the answer.
pub async fn answer_and_close(tcp: &mut TcpStream, status: &str, body: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let content_type = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if tcp.write_all(answer.as_bytes()).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    let draining = async {
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), draining).await;
}
