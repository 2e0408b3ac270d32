//! Running as a service: `READY=1` to systemd once both listeners are
//! bound, `STOPPING=1` at shutdown, and a unit file systemd accepts.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{serve_args, skipped_without};

/// One notification datagram, as text.
fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_is_sent_once_both_listeners_accept_and_stopping_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(serve_args(&dir.path().join("data")))
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = receive(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("a STATUS line: {ready:?}"));
    // Both addresses are in the status, and both accept now.
    let addrs: Vec<&str> = status
        .split_whitespace()
        .filter(|w| w.starts_with("127.0.0.1:"))
        .collect();
    assert_eq!(addrs.len(), 2, "{status}");
    for addr in &addrs {
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    }
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(
        banner.contains(addrs[0]) && banner.contains(addrs[1]),
        "{banner}"
    );
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stopping = receive(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn without_a_notify_socket_nothing_is_sent_and_nothing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(serve_args(dir.path()))
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "upcache=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.contains("serving content"), "{banner}");
    let (lines, log_lines) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .try_for_each(|l| lines.send(l))
    });
    let mut log = String::new();
    // `systemctl reload` sends SIGHUP: with no access log it changes nothing
    // and stops nothing. Checked once the server has logged it.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    while !log.contains("SIGHUP:") {
        let line = log_lines.recv_timeout(Duration::from_secs(10));
        log += &line.expect("the SIGHUP logged within 10 s");
        log.push('\n');
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the server"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    log.extend(log_lines.iter().map(|l| l + "\n"));
    assert!(!log.contains("NOTIFY_SOCKET"), "{log}");
}

/// `systemd-analyze verify` on the shipped unit, with `ExecStart` pointed
/// at the binary under test (verify checks that the command exists). Any
/// finding at all fails: unknown keys are only warnings to systemd.
#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        skipped_without("systemd-analyze", "apt-get install systemd");
        return;
    };
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/upcache.service"))
            .unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/upcache serve"), "{unit}");
    for required in [
        "Type=notify",
        "User=upcache",
        "StateDirectory=upcache",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.contains(required), "{required}");
    }
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE")
        .parse()
        .unwrap();
    assert!(
        limit >= upcache::net::NetSettings::default().max_connections as u64 + 1024,
        "LimitNOFILE={limit} is below max_connections plus what the server keeps"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upcache.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/upcache", env!("CARGO_BIN_EXE_upcache")),
    )
    .unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "{findings}"
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

/// What the package installs besides the binary comes from the binary:
/// completions, man pages, the version.
#[tokio::test]
async fn completions_man_pages_and_version_come_from_the_binary() {
    let version = crate::common::run_cli(&["--version"], &[]).await;
    assert!(version.ok);
    assert_eq!(
        version.stdout.trim(),
        format!("upcache {}", env!("CARGO_PKG_VERSION"))
    );
    for (shell, marker) in [
        ("bash", "_upcache()"),
        ("zsh", "#compdef upcache"),
        ("fish", "complete -c upcache"),
    ] {
        let out = crate::common::run_cli(&["completions", shell], &[]).await;
        assert!(out.ok, "{}", out.stderr);
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..200.min(out.stdout.len())]
        );
        assert!(
            out.stdout.contains("access-log"),
            "{shell} completes serve's flags"
        );
    }
    let bad = crate::common::run_cli(&["completions", "tcsh"], &[]).await;
    assert!(
        !bad.ok && bad.stderr.contains("possible values"),
        "{}",
        bad.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::run_cli(&["man", dir.path().to_str().unwrap()], &[]).await;
    assert!(out.ok, "{}", out.stderr);
    let serve = std::fs::read_to_string(dir.path().join("upcache-serve.1")).unwrap();
    assert!(serve.starts_with(".ie") || serve.contains(".TH"), "roff");
    assert!(serve.contains("access\\-log") && serve.contains("UPCACHE_ACCESS_LOG"));
    assert!(dir.path().join("upcache.1").exists());
    let page = crate::common::run_cli(&["man"], &[]).await;
    assert!(page.ok && page.stdout.contains(".SH SUBCOMMANDS"));
}
