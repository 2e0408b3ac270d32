//! `upcache export FILE`: the admin API's export (catalog, approval states,
//! policy, rules) to a file, for `import --with-approvals` on a server that
//! cannot reach this one, or a backup.
//!
//! The server cannot mark a stream that stops half-way (its HTTP framing
//! ends cleanly), so parsing the file whole is what tells a cut export from
//! a good one; it goes to `FILE.partial` first and replaces `FILE` only
//! then, so a good earlier file is never lost.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::client::AdminClient;
use super::AdminArgs;

pub async fn to_file(admin: &AdminArgs, file: &Path) -> anyhow::Result<()> {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    let partial = PathBuf::from(name);
    let response = AdminClient::new(admin)?.export().await?;
    let checked = match receive(response, &partial).await {
        Ok(bytes) => {
            let path = partial.clone();
            tokio::task::spawn_blocking(move || count_updates(&path))
                .await?
                .map(|updates| (updates, bytes))
        }
        Err(e) => Err(e.context("receiving the export")),
    };
    let (updates, bytes) = match checked {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!("{} was not written", file.display())));
        }
    };
    replace(&partial, file)?;
    println!(
        "exported {updates} updates ({bytes} bytes) to {}",
        file.display()
    );
    Ok(())
}

/// Writes the body to `path` and syncs it; returns its length.
async fn receive(response: reqwest::Response, path: &Path) -> anyhow::Result<u64> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let file = tokio::fs::File::create(path).await?;
    let mut out = tokio::io::BufWriter::with_capacity(256 << 10, file);
    let mut body = response.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    out.into_inner().sync_all().await?;
    Ok(bytes)
}

/// Parses an exported catalog whole: its updates, then its change number,
/// policy and rules.
fn count_updates(path: &Path) -> anyhow::Result<u64> {
    let input = std::io::BufReader::with_capacity(256 << 10, std::fs::File::open(path)?);
    let mut updates = 0;
    let extras = crate::catalog::json::parse_stream(input, |_| {
        updates += 1;
        Ok(())
    })
    .context("the export is not a whole catalog (cut short?)")?;
    anyhow::ensure!(
        extras.seq.is_some() && extras.policy.is_some() && extras.rules.is_some(),
        "the export is not a whole catalog: it ends without its policy and rules"
    );
    Ok(updates)
}

/// Renames `partial` over `file`, and syncs the directory so that the
/// rename survives a crash.
fn replace(partial: &Path, file: &Path) -> anyhow::Result<()> {
    std::fs::rename(partial, file)
        .with_context(|| format!("renaming {} to {}", partial.display(), file.display()))?;
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    if let Ok(dir) = std::fs::File::open(dir.unwrap_or(Path::new("."))) {
        let _ = dir.sync_all();
    }
    Ok(())
}
