//! `upcache gc` and `upcache verify` on a real data directory.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

/// Runs a maintenance subcommand on `data_dir`: (success, stdout + stderr).
async fn run(args: &[&str], data_dir: &std::path::Path) -> (bool, String) {
    let mut args = args.to_vec();
    args.extend(["--data-dir", data_dir.to_str().unwrap()]);
    let out = run_cli(&args, &[]).await;
    (out.ok, out.stdout + &out.stderr)
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

    let (ok, out) = run(&["gc"], &dir).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("would remove {}", h.b.sha256)),
        "{out}"
    );
    assert!(!out.contains(&h.a.sha256.to_hex()), "{out}");
    let (ok, out) = run(&["gc", "--yes"], &dir).await;
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
    let (ok, out) = run(&["verify"], &dir).await;
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
    let (ok, out) = run(&["verify"], &dir).await;
    assert!(
        !ok && out.contains("BAD") && out.contains("0 good, 1 bad"),
        "{out}"
    );
    assert!(!path.exists());
    h.restart_stopped().await;
    assert!(h.get(&h.b.content_path()).await.bytes().await.unwrap() == h.b.bytes);
    assert_eq!(h.upstream.requests(&h.b.path), 2, "fetched again");
}
