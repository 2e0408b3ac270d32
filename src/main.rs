//! The `upcache` binary: parse arguments, set up logging, run.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = upcache::cli::Cli::parse();
    // The demo prints its own story; the server logs what it does.
    let default_filter = match cli.command {
        upcache::cli::Command::Demo => "upcache=warn",
        _ => "upcache=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person: log files and journals get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log pipe that closes (a crashed collector, `| head`) must not
        // take the server down: its fallback report is an eprintln!, which
        // panics when stderr is gone.
        .log_internal_errors(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match cli.command {
        upcache::cli::Command::Demo => runtime.block_on(upcache::demo::run()),
        _ => runtime.block_on(upcache::cli::run(cli)),
    };
    // A command that failed may leave a blocking task behind (`import`'s
    // cabinet reader, in the middle of a detail cabinet): its error is
    // printed now, not once that task ends. A command that succeeded has
    // waited for its own work.
    if result.is_err() {
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    }
    result
}
