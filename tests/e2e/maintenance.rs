//! `upcache gc` and `upcache verify` on a real data directory.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::*;

fn run(args: &[&str], data_dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_files_no_approved_update_references() {
    let mut h = Harness::new().await;
    h.setup(&[ID_A, ID_B]).await;
    for f in [&h.a, &h.b] {
        assert_eq!(h.get(&f.content_path()).await.status(), 200);
    }
    h.settled().await;
    h.set_state(ID_B, "unapprove").await;
    h.server.take().unwrap().shutdown().await;
    let dir = h.dir.path().to_owned();

    let (ok, out) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || run(&["gc"], &dir)
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("would remove {}", h.b.sha256)),
        "{out}"
    );
    assert!(!out.contains(&h.a.sha256.to_hex()), "{out}");
    let (ok, out) = tokio::task::spawn_blocking(move || run(&["gc", "--yes"], &dir))
        .await
        .unwrap();
    assert!(
        ok && out.contains(&format!("freed {} bytes", h.b.bytes.len())),
        "{out}"
    );
    h.restart_stopped().await;
    assert_eq!(h.stored(), vec![h.a.sha256]);
    assert!(h.get(&h.a.content_path()).await.bytes().await.unwrap() == h.a.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_quarantines_a_corrupted_stored_file_and_it_is_fetched_again() {
    let mut h = Harness::new().await;
    h.setup(&[ID_B]).await;
    assert_eq!(h.get(&h.b.content_path()).await.status(), 200);
    h.settled().await;
    h.server.take().unwrap().shutdown().await;
    let dir = h.dir.path().to_owned();
    let (ok, out) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || run(&["verify"], &dir)
    })
    .await
    .unwrap();
    assert!(ok && out.contains("1 good, 0 bad"), "{out}");
    // Flip a byte of the stored file behind upcache's back.
    let hex = h.b.sha256.to_hex();
    let path = dir
        .join("store/sha256")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (ok, out) = tokio::task::spawn_blocking(move || run(&["verify"], &dir))
        .await
        .unwrap();
    assert!(
        !ok && out.contains("BAD") && out.contains("0 good, 1 bad"),
        "{out}"
    );
    assert!(!path.exists());
    h.restart_stopped().await;
    assert!(h.get(&h.b.content_path()).await.bytes().await.unwrap() == h.b.bytes);
    assert_eq!(h.upstream.requests(&h.b.path), 2, "fetched again");
}
