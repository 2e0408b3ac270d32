//! Delivery Optimization-like clients for the DO benchmark (`do.py`):
//! each client has its own connection and its own token, and asks for
//! every 1 MiB range of one object in its own shuffled order, as DO does
//! with a cache host.
//!
//! Usage:
//! - `do_ranges make FILE MIB`: writes the object (each 8-byte word is its
//!   own offset, mixed), so a range can be checked without a copy of it.
//! - `do_ranges cold HOST:PORT PATH ORIGIN CLIENTS MIB`: every client
//!   fetches every range once; prints
//!   `{"ttlb_s":…,"clients_s":[…],"requests":…,"bytes":…,"retries":…,"bad":…}`,
//!   the time from the first request until every client has its last byte.
//! - `do_ranges warm HOST:PORT PATH ORIGIN CLIENTS MIB SECS`: the same
//!   ranges over and over for SECS; prints `{"rps":…,"requests":…,…}`.
//!
//! Every range's status and length are checked, and one word in every
//! 4 KiB of its body against the object's pattern (a misplaced page would
//! not pass); the full byte-exact check is the e2e test's.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1 << 20;

/// The object's 8-byte word at `offset` (a multiple of 8).
fn word(offset: u64) -> u64 {
    let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD0D0_CAFE;
    x ^= x >> 29;
    x
}

fn make(path: &str, mib: u64) {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path).unwrap());
    for i in 0..mib * MIB / 8 {
        out.write_all(&word(i * 8).to_le_bytes()).unwrap();
    }
    out.flush().unwrap();
}

/// A small deterministic shuffle (xorshift), one order per client.
fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..n).collect();
    let mut s = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    for i in (1..order.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    order
}

struct Target {
    addr: String,
    path: String,
    origin: String,
}

impl Target {
    /// A client's request for one range: its own token, as DO sends it.
    fn request(&self, client: u64, serial: u64, start: u64) -> String {
        // P1 looks like an expiry time; each client (and each retry) has its own.
        let p1 = 1_900_000_000 + client * 1000 + serial;
        format!(
            "GET {}?P1={p1}&P2=404&P3=2&P4=c{client}s{serial}&cacheHostOrigin={} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Microsoft-Delivery-Optimization/10.0\r\nRange: bytes={}-{}\r\n\r\n",
            self.path,
            self.origin,
            self.addr,
            start,
            start + MIB - 1
        )
    }
}

#[derive(Default)]
struct Tally {
    requests: u64,
    bytes: u64,
    retries: u64,
    bad: u64,
    last_byte: Duration,
    /// Each range's (offset in MiB, began, ended) in ms since t0, kept when
    /// `DO_TRACE` names a file to write them to.
    trace: Vec<(u64, f64, f64)>,
}

/// One keep-alive connection; reconnects after a close or an error.
struct Conn {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes read past the last response (pipelining never happens, but a
    /// read may end inside the next head after a `Connection: close`).
    head: Vec<u8>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            stream: None,
            buf: vec![0; MIB as usize],
            head: Vec::with_capacity(1024),
        }
    }

    /// Fetches `start..start+1MiB`; `Ok(true)` when it came whole and right.
    async fn range(&mut self, t: &Target, req: &str, start: u64) -> std::io::Result<bool> {
        if self.stream.is_none() {
            let s = TcpStream::connect(t.addr.as_str()).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let s = self.stream.as_mut().unwrap();
        s.write_all(req.as_bytes()).await?;
        self.head.clear();
        let head_end = loop {
            let n = s.read(&mut self.buf[..16 << 10]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.head.extend_from_slice(&self.buf[..n]);
            if let Some(i) = self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&self.head[..head_end]).to_ascii_lowercase();
        let status_ok = head.starts_with("http/1.1 206");
        let close = head.contains("\r\nconnection: close");
        let length: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        // Body bytes already read with the head.
        let early = self.head.len() - head_end;
        let mut body = vec![];
        std::mem::swap(&mut body, &mut self.buf);
        body[..early].copy_from_slice(&self.head[head_end..]);
        let mut got = early as u64;
        let mut ok = status_ok && length == MIB;
        let result = async {
            while got < length {
                let want = ((length - got) as usize).min(body.len() - (got as usize % body.len()));
                let at = (got as usize) % body.len();
                let n = s.read(&mut body[at..at + want]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got += n as u64;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if ok {
            for page in (0..MIB).step_by(4096) {
                let at = page as usize;
                let w = u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
                ok &= w == word(start + page);
            }
        }
        self.buf = body;
        if result.is_err() || close || !status_ok {
            self.stream = None;
        }
        result.map(|_| ok)
    }
}

async fn client(
    t: std::sync::Arc<Target>,
    id: u64,
    mib: u64,
    t0: Instant,
    until: Option<Instant>,
) -> Tally {
    let mut conn = Conn::new();
    let mut tally = Tally::default();
    let mut serial = 0;
    let mut round = 0;
    let tracing = std::env::var_os("DO_TRACE").is_some();
    loop {
        for i in shuffled(mib, id * 7919 + round + 1) {
            let start = i * MIB;
            let began = t0.elapsed();
            loop {
                serial += 1;
                let req = t.request(id, serial, start);
                match conn.range(&t, &req, start).await {
                    Ok(true) => break,
                    Ok(false) => tally.bad += 1,
                    Err(_) => {}
                }
                tally.retries += 1;
                if tally.retries > 10_000 {
                    panic!("client {id}: too many failures");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tally.requests += 1;
            tally.bytes += MIB;
            if tracing {
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                tally.trace.push((i, ms(began), ms(t0.elapsed())));
            }
            if let Some(until) = until {
                if Instant::now() >= until {
                    tally.last_byte = t0.elapsed();
                    return tally;
                }
            }
        }
        round += 1;
        if until.is_none() {
            tally.last_byte = t0.elapsed();
            return tally;
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, file, mib] = args.as_slice() {
        assert_eq!(mode, "make");
        make(file, mib.parse().unwrap());
        return;
    }
    let (mode, addr, path, origin, clients, mib, secs) = match args.as_slice() {
        [_, m, a, p, o, c, s] => (m, a, p, o, c, s, None),
        [_, m, a, p, o, c, s, d] => (m, a, p, o, c, s, Some(d)),
        _ => {
            eprintln!("usage: do_ranges make FILE MIB | cold|warm HOST:PORT PATH ORIGIN CLIENTS MIB [SECS]");
            std::process::exit(2);
        }
    };
    let clients: u64 = clients.parse().unwrap();
    let mib: u64 = mib.parse().unwrap();
    let t = std::sync::Arc::new(Target {
        addr: addr.clone(),
        path: path.clone(),
        origin: origin.clone(),
    });
    let t0 = Instant::now();
    let until = match (mode.as_str(), secs) {
        ("cold", None) => None,
        ("warm", Some(s)) => Some(t0 + Duration::from_secs_f64(s.parse().unwrap())),
        _ => panic!("cold takes no SECS, warm needs them"),
    };
    let tasks: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(client(t.clone(), id, mib, t0, until)))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.unwrap());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if let Some(file) = std::env::var_os("DO_TRACE") {
        use std::fmt::Write as _;
        let mut out = String::from("client,mib,began_ms,ended_ms\n");
        for (id, t) in all.iter().enumerate() {
            for (mib, began, ended) in &t.trace {
                let _ = writeln!(out, "{id},{mib},{began:.2},{ended:.2}");
            }
        }
        std::fs::write(file, out).expect("writing DO_TRACE");
    }
    let requests: u64 = all.iter().map(|t| t.requests).sum();
    let bytes: u64 = all.iter().map(|t| t.bytes).sum();
    let retries: u64 = all.iter().map(|t| t.retries).sum();
    let bad: u64 = all.iter().map(|t| t.bad).sum();
    let mut ends: Vec<f64> = all.iter().map(|t| t.last_byte.as_secs_f64()).collect();
    ends.sort_by(f64::total_cmp);
    let list: Vec<String> = ends.iter().map(|t| format!("{t:.3}")).collect();
    println!(
        "{{\"ttlb_s\":{:.3},\"rps\":{:.1},\"elapsed_s\":{elapsed:.3},\"clients_s\":[{}],\"requests\":{requests},\"bytes\":{bytes},\"retries\":{retries},\"bad\":{bad}}}",
        ends.last().copied().unwrap_or(0.0),
        requests as f64 / elapsed,
        list.join(",")
    );
}
