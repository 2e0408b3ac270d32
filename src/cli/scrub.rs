//! `upcache scrub`: starts a scrub on the server and follows it to the end.

use std::time::Duration;

use anyhow::{bail, Context};

use super::client::AdminClient;

pub async fn run(
    client: &AdminClient,
    rate: Option<&str>,
    no_wait: bool,
    stop: bool,
) -> anyhow::Result<()> {
    if stop {
        let status = client.stop_scrub().await?;
        println!("{}", super::print::scrub_summary(&status));
        return Ok(());
    }
    let rate = rate
        .map(|r| crate::config::parse_size(r).map_err(anyhow::Error::msg))
        .transpose()
        .context("--rate")?;
    let mut status = client.start_scrub(rate).await?;
    if no_wait {
        println!("scrub started: `upcache status` follows it");
        return Ok(());
    }
    let bar = super::progress::spinner("scrubbing");
    while status.running {
        bar.set_message(format!(
            "{} of {} files, {} bytes, {} bad",
            status.files_done, status.files_total, status.bytes_done, status.bad_files
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        status = client.scrub_status().await?;
    }
    bar.finish_and_clear();
    for digest in &status.bad {
        println!("BAD  {digest}: bytes do not match the name; quarantined");
    }
    println!("{}", super::print::scrub_summary(&status));
    if status.bad_files > 0 {
        bail!(
            "{} stored files failed verification and were quarantined",
            status.bad_files
        );
    }
    Ok(())
}
