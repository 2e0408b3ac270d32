//! The `upcache` binary: parse arguments, set up logging, run.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = upcache::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "upcache=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(upcache::cli::run(cli))
}
