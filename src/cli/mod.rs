//! The command line: `serve`, the admin subcommands (thin clients of the
//! admin API), and `demo`.

pub mod client;
mod export;
mod fleet;
mod maintenance;
pub mod print;
mod progress;
mod scrub;
mod server_sync;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::catalog::rules::Rule;
use crate::catalog::{UpdateQuery, UpdateState};
use crate::config::{Config, ServeArgs};
use crate::policy::{Download, Mode};
pub use client::{AdminArgs, AdminClient, ForGroup};

/// upcache: a caching proxy for Windows update files.
#[derive(Debug, Parser)]
#[command(name = "upcache", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server
    Serve(Box<ServeArgs>),
    /// Import a catalog file: upcache JSON, Microsoft's package.xml, or the
    /// wsusscn2.cab / package.cab it comes in (by extension)
    Import {
        file: PathBuf,
        /// Apply the approval states a JSON catalog carries (one written by
        /// `upcache export` on a server this one cannot reach)
        #[arg(long)]
        with_approvals: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Approve updates by id, or all that a selector picks
    Approve(StateChange),
    /// Decline updates by id, or all that a selector picks (e.g. --superseded)
    Decline(StateChange),
    /// Return updates to not-approved, by id or selector
    Unapprove(StateChange),
    /// Show the storage policy, or change it with `policy set`
    Policy {
        #[command(subcommand)]
        action: Option<PolicyAction>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the upstream rate limit, or set it (e.g. `12MiB` a second, or
    /// `off`) until the next change or a restart: a timer can hold it to
    /// business hours
    RateLimit {
        /// Bytes a second for all upstream downloads together (at least
        /// 64KiB), or `off`
        rate: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show server status: catalog counts, storage, downloads in progress;
    /// or, given an update, its state on computers, by group
    Status {
        /// An update id: how many computers have it installed, need it,
        /// failed...
        update: Option<String>,
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
        /// Follow downloads with progress bars until none is left
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List and search updates
    Updates {
        /// not-approved, approved or declined
        #[arg(long, value_parser = parse_state)]
        state: Option<UpdateState>,
        /// Search title, KB, MSRC number or id
        #[arg(long)]
        q: Option<String>,
        #[command(flatten)]
        select: Selector,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the computers that scan against this server (filter by group,
    /// state, staleness), or show one with its updates and events
    Computers {
        /// A computer's id: show it
        id: Option<String>,
        #[command(flatten)]
        filter: fleet::ComputerFilter,
        /// With an id: put it in exactly these groups (comma-separated;
        /// empty: Unassigned Computers)
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        set_groups: Option<Vec<String>>,
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List computer groups, or create, rename and delete them
    Groups {
        #[command(subcommand)]
        action: Option<fleet::GroupsAction>,
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Automatic approval rules: list them, or add and remove them
    Rules {
        #[command(subcommand)]
        action: Option<RulesAction>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Sync update metadata from an upstream server now (--server: Microsoft
    /// Update, a WSUS or another upcache over [MS-WSUSSS]), or copy another
    /// upcache's catalog and approvals into this one (--from: a downstream
    /// server; point its --upstream at the other's content URL)
    Sync {
        /// The upstream's URL for this sync [default: the server's upstream_server]
        #[arg(long, num_args = 0..=1, default_missing_value = "", conflicts_with = "from")]
        server: Option<String>,
        /// The upstream upcache's admin API, e.g. https://upstream-upcache:8531
        #[arg(long, required_unless_present = "server")]
        from: Option<String>,
        /// Bearer token for the upstream's admin API
        #[arg(long, env = "UPCACHE_FROM_TOKEN", hide_env_values = true)]
        from_token: Option<String>,
        /// PEM file of the CA of the upstream's admin certificate
        #[arg(long, env = "UPCACHE_FROM_CA")]
        from_ca: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the products and classifications synced from the upstream, the
    /// selected ones marked; with --select, sync exactly these from now on
    Categories {
        /// A product or classification (title or GUID); repeat for more
        #[arg(long)]
        select: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Write the catalog with its approval states, policy and rules to a
    /// JSON file (for `import --with-approvals` on a server that cannot
    /// reach this one, as WSUS's export and import; or a backup)
    Export {
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove the stored files no update needs (declined, not approved and
    /// not downloaded ahead, or not in the catalog) while the server runs;
    /// a dry run unless --yes
    Cleanup {
        /// Really remove
        #[arg(long)]
        yes: bool,
        /// The shared tier's bucket (every node's copies) instead of this
        /// node's disk; on the primary, whose catalog decides
        #[arg(long)]
        shared: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Re-hash every stored file while the server serves (at --rate);
    /// quarantine bad ones, which are fetched again when asked for. Waits
    /// and fails if any was bad, unless --no-wait
    Scrub {
        /// Bytes hashed a second at most (e.g. 64MiB; at least 1MiB)
        #[arg(long)]
        rate: Option<String>,
        /// Start it and return
        #[arg(long, conflicts_with = "stop")]
        no_wait: bool,
        /// Stop the running scrub
        #[arg(long)]
        stop: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Re-hash every stored file; quarantine and report bad ones (offline)
    Verify {
        /// Data directory [default: ./upcache-data]
        #[arg(long, env = "UPCACHE_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// `cleanup` with the server stopped (dry run unless --yes)
    Gc {
        /// Data directory [default: ./upcache-data]
        #[arg(long, env = "UPCACHE_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Really delete
        #[arg(long)]
        yes: bool,
    },
    /// Run an offline demonstration: a local upstream, a catalog, approvals, downloads
    Demo,
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write every page (upcache.1,
    /// upcache-serve.1, ...) into a directory
    #[command(hide = true)]
    Man { out_dir: Option<PathBuf> },
}

/// The updates an approve, decline or unapprove changes: by id, by selector, or both.
#[derive(Debug, clap::Args)]
pub struct StateChange {
    #[arg(required_unless_present_any = ["kb", "classification", "product", "superseded", "title"])]
    ids: Vec<String>,
    #[command(flatten)]
    select: Selector,
    #[command(flatten)]
    group: ForGroup,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Selects updates for a bulk approval change (WSUS-style rules, applied now).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selector {
    /// Every update with this KB number
    #[arg(long)]
    pub kb: Option<String>,
    /// Every update of this classification (name or GUID)
    #[arg(long)]
    pub classification: Option<String>,
    /// Every update for this product (name or GUID)
    #[arg(long)]
    pub product: Option<String>,
    /// Every superseded update
    #[arg(long)]
    pub superseded: bool,
    /// Every update whose title contains this (case-insensitive)
    #[arg(long)]
    pub title: Option<String>,
}

impl Selector {
    fn is_set(&self) -> bool {
        self.query().selects_something()
    }

    /// The selection as the admin API's filters.
    pub fn query(&self) -> UpdateQuery {
        UpdateQuery {
            kb: self.kb.clone(),
            classification: self.classification.clone(),
            product: self.product.clone(),
            superseded: self.superseded.then_some(true),
            title: self.title.clone(),
            ..UpdateQuery::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RulesAction {
    /// Add a rule, applied to updates imported from now on (declines win)
    Add {
        /// approve or decline
        #[arg(value_parser = ["approve", "decline"])]
        action: String,
        /// Updates of this classification (name or GUID)
        #[arg(long, required_unless_present_any = ["product", "title"])]
        classification: Option<String>,
        /// Updates for this product (name or GUID)
        #[arg(long)]
        product: Option<String>,
        /// Updates whose title contains this (case-insensitive)
        #[arg(long)]
        title: Option<String>,
        /// Approve for this computer group only [default: All Computers]
        #[arg(long)]
        group: Option<String>,
    },
    /// Remove a rule by its id
    Remove { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Change the policy; unspecified parts keep their value
    Set {
        #[arg(long, value_parser = parse_mode)]
        mode: Option<Mode>,
        #[arg(long, value_parser = parse_download)]
        download: Option<Download>,
        #[arg(long)]
        prefetch_on_approve: Option<bool>,
    },
}

/// Refuses, before uploading anything, a file that cannot be the catalog
/// its extension says (a gigabyte of something else fails in a moment).
fn check_looks_like(file: &std::path::Path, ext: &str) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut head = [0u8; 4096];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading {}", file.display()))?;
    let head = &head[..n];
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = text.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let (expected, ok) = match ext {
        "cab" => (
            "a cabinet (wsusscn2.cab or package.cab)",
            head.starts_with(b"MSCF"),
        ),
        "xml" => ("a package.xml", first == Some(b'<')),
        _ => ("an upcache JSON catalog", first == Some(b'{')),
    };
    if !ok {
        let starts = first.map_or("nothing".to_owned(), |b| format!("byte 0x{b:02x}"));
        bail!(
            "{} does not look like {expected} (it starts with {starts}); nothing was sent",
            file.display()
        );
    }
    Ok(())
}

fn parse_state(s: &str) -> Result<UpdateState, String> {
    UpdateState::parse(s).ok_or_else(|| format!("{s:?}: use not-approved, approved or declined"))
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("{s:?}: use metadata-only or store-locally"))
}

fn parse_download(s: &str) -> Result<Download, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("{s:?}: use on-approval or at-sync"))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Import {
            file,
            with_approvals,
            admin,
        } => import(&file, with_approvals, &admin).await,
        Command::Export { file, admin } => export::to_file(&admin, &file).await,
        Command::Approve(args) => change(&args, "approve").await,
        Command::Decline(args) => change(&args, "decline").await,
        Command::Unapprove(args) => change(&args, "unapprove").await,
        Command::Policy { action, admin } => policy(&AdminClient::new(&admin)?, action).await,
        Command::RateLimit { rate, admin } => {
            rate_limit(&AdminClient::new(&admin)?, rate.as_deref()).await
        }
        Command::Status {
            update: Some(update),
            json,
            admin,
            ..
        } => fleet::update_status(&AdminClient::new(&admin)?, &update, json).await,
        Command::Status {
            json, watch, admin, ..
        } => {
            let client = AdminClient::new(&admin)?;
            if watch {
                return progress::watch(&client).await;
            }
            let status = client.status().await?;
            print_json_or(json, &status, print::print_status)
        }
        Command::Updates {
            state,
            q,
            select,
            limit,
            offset,
            json,
            admin,
        } => {
            let query = UpdateQuery {
                state,
                q,
                limit: Some(limit),
                offset: Some(offset),
                ..select.query()
            };
            let list = AdminClient::new(&admin)?.updates(&query).await?;
            print_json_or(json, &list, print::print_updates)
        }
        Command::Rules { action, admin } => rules(&AdminClient::new(&admin)?, action).await,
        Command::Computers {
            id,
            filter,
            set_groups,
            json,
            admin,
        } => {
            let client = AdminClient::new(&admin)?;
            fleet::computers(&client, id.as_deref(), &filter, set_groups.as_deref(), json).await
        }
        Command::Groups {
            action,
            json,
            admin,
        } => fleet::groups(&AdminClient::new(&admin)?, action, json).await,
        Command::Sync {
            server: Some(server),
            admin,
            ..
        } => {
            let upstream = Some(server).filter(|s| !s.is_empty());
            server_sync::run(&AdminClient::new(&admin)?, upstream).await
        }
        Command::Categories {
            select,
            json,
            admin,
        } => server_sync::categories(&AdminClient::new(&admin)?, &select, json).await,
        Command::Sync {
            from,
            from_token,
            from_ca,
            admin,
            ..
        } => {
            let from = AdminArgs {
                url: from.unwrap_or_default(),
                token: from_token,
                ca: from_ca,
            };
            sync(&from, &admin).await
        }
        Command::Verify { data_dir } => {
            tokio::task::spawn_blocking(move || maintenance::verify(&data_dir)).await?
        }
        Command::Scrub {
            rate,
            no_wait,
            stop,
            admin,
        } => scrub::run(&AdminClient::new(&admin)?, rate.as_deref(), no_wait, stop).await,
        Command::Cleanup { yes, shared, admin } => {
            let asked = crate::admin::CleanupRequest {
                remove: yes,
                shared,
            };
            let report = AdminClient::new(&admin)?.cleanup(&asked).await?;
            print::print_cleanup(&report, shared);
            Ok(())
        }
        Command::Gc { data_dir, yes } => {
            tokio::task::spawn_blocking(move || maintenance::gc(&data_dir, yes)).await?
        }
        // The demo drives this CLI, so the binary runs it (`main.rs`).
        Command::Demo => bail!("the demo is started by the upcache binary"),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "upcache", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out_dir } => man(out_dir),
    }
}

/// `--json`: the API's answer as it is; otherwise for people.
fn print_json_or<T: serde::Serialize>(json: bool, value: &T, print: fn(&T)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print(value);
    }
    Ok(())
}

/// Sends a catalog file by its kind (a cabinet is expanded here), checked
/// for what it claims to be before anything is sent.
async fn import(
    file: &std::path::Path,
    with_approvals: bool,
    admin: &AdminArgs,
) -> anyhow::Result<()> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    check_looks_like(file, &ext)?;
    if with_approvals && matches!(ext.as_str(), "cab" | "xml") {
        bail!(
            "--with-approvals takes an upcache JSON catalog (from `upcache export`); \
             {} carries no approvals; nothing was sent",
            file.display()
        );
    }
    let client = AdminClient::new(admin)?;
    let report = if ext == "cab" {
        let documents = client
            .import_cab(
                file.to_path_buf(),
                progress::import_bar("importing"),
                &mut |report| println!("imported {}: {report}", file.display()),
                &mut print_cabinet,
            )
            .await?;
        print_cabinet_documents(documents.as_deref());
        return Ok(());
    } else {
        let body = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        client
            .import(
                body,
                ext == "xml",
                with_approvals,
                progress::import_bar("uploading"),
            )
            .await?
    };
    println!("imported {}: {report}", file.display());
    Ok(())
}

/// What one detail cabinet of `wsusscn2.cab` gave, and each revision
/// skipped, as the server answers for it.
fn print_cabinet(r: &crate::admin::documents::CabinetReport) {
    let c = &r.counts;
    println!(
        "{}: {} documents added, {} replaced, {} unchanged, {} kept (synced), {} skipped",
        r.cabinet,
        c.added,
        c.replaced,
        c.unchanged,
        c.kept_synced,
        r.skipped.len()
    );
    for s in &r.skipped {
        println!(
            "  skipped revision {} of {}: {}",
            s.rid, r.cabinet, s.reason
        );
    }
}

/// The totals of the detail cabinets.
fn print_cabinet_documents(reports: Option<&[crate::admin::documents::CabinetReport]>) {
    let Some(reports) = reports else {
        println!("no index.xml: no detail cabinets, no update documents");
        return;
    };
    let mut total = crate::metadata::store::CabinetCounts::default();
    let mut skipped = 0;
    for r in reports {
        let c = &r.counts;
        total.added += c.added;
        total.replaced += c.replaced;
        total.unchanged += c.unchanged;
        total.kept_synced += c.kept_synced;
        skipped += r.skipped.len();
    }
    println!(
        "update documents from {} detail cabinets: {} added, {} replaced, {} unchanged, {} kept (synced), {} skipped",
        reports.len(),
        total.added,
        total.replaced,
        total.unchanged,
        total.kept_synced,
        skipped
    );
}

/// Shows the policy, after changing what `set` names.
async fn policy(client: &AdminClient, action: Option<PolicyAction>) -> anyhow::Result<()> {
    let mut policy = client.policy().await?;
    if let Some(PolicyAction::Set {
        mode,
        download,
        prefetch_on_approve,
    }) = action
    {
        policy.mode = mode.unwrap_or(policy.mode);
        policy.download = download.unwrap_or(policy.download);
        policy.prefetch_on_approve = prefetch_on_approve.unwrap_or(policy.prefetch_on_approve);
        policy = client.set_policy(&policy).await?;
    }
    println!("{}", serde_json::to_string_pretty(&policy)?);
    Ok(())
}

/// Shows the upstream rate limit, after setting it to `rate` (`off` lifts it).
async fn rate_limit(client: &AdminClient, rate: Option<&str>) -> anyhow::Result<()> {
    let limit = match rate {
        None => client.rate_limit().await?,
        Some("off" | "none") => client.set_rate_limit(None).await?,
        Some(text) => {
            let bytes = crate::config::parse_size(text)
                .map_err(|e| anyhow::anyhow!("{text:?}: {e}; or `off`"))?;
            client.set_rate_limit(Some(bytes)).await?
        }
    };
    match limit.bytes_per_sec {
        Some(rate) => println!("upstream downloads: at most {rate} bytes a second together"),
        None => println!("upstream downloads: no rate limit"),
    }
    Ok(())
}

/// Pipes another upcache's export into this one's import, approvals
/// included.
async fn sync(from: &AdminArgs, admin: &AdminArgs) -> anyhow::Result<()> {
    let catalog = AdminClient::new(from)?
        .export()
        .await
        .with_context(|| format!("reading the catalog of {}", from.url))?;
    let report = AdminClient::new(admin)?
        .import_with_approvals(catalog, progress::import_bar("syncing"))
        .await?;
    println!("synced from {}: {report}", from.url);
    Ok(())
}

/// Writes the man pages into `out_dir`, or the main one to stdout.
fn man(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let command = <Cli as clap::CommandFactory>::command();
    match out_dir {
        Some(dir) => clap_mangen::generate_to(command, &dir)
            .with_context(|| format!("writing man pages into {}", dir.display()))?,
        None => clap_mangen::Man::new(command).render(&mut std::io::stdout())?,
    }
    Ok(())
}

async fn rules(client: &AdminClient, action: Option<RulesAction>) -> anyhow::Result<()> {
    match action {
        None => {
            let rules = client.rules().await?;
            if rules.is_empty() {
                println!("no rules");
            }
            for r in rules {
                println!("{}", print::describe_rule(&r));
            }
        }
        Some(RulesAction::Add {
            action,
            classification,
            product,
            title,
            group,
        }) => {
            let rule = client
                .add_rule(&Rule {
                    id: 0,
                    action,
                    classification,
                    product,
                    title,
                    group,
                })
                .await?;
            println!("added {}", print::describe_rule(&rule));
        }
        Some(RulesAction::Remove { id }) => {
            client.remove_rule(id).await?;
            println!("removed rule {id}");
        }
    }
    Ok(())
}

async fn change(args: &StateChange, action: &str) -> anyhow::Result<()> {
    let StateChange {
        ids,
        select,
        group,
        admin,
    } = args;
    if select.is_set() {
        let changed = AdminClient::new(admin)?
            .set_state_where(select, action, group)
            .await?;
        println!("{action}: {changed} updates changed");
    }
    if ids.is_empty() {
        return Ok(());
    }
    set_states(admin, ids, action, group).await
}

async fn set_states(
    admin: &AdminArgs,
    ids: &[String],
    action: &str,
    group: &ForGroup,
) -> anyhow::Result<()> {
    let client = AdminClient::new(admin)?;
    let mut failed = 0;
    for id in ids {
        match client.set_state_for(id, action, group).await {
            Ok(s) => println!("{}  {}  {}", s.id, s.state.as_str(), s.title),
            Err(e) => {
                eprintln!("{id}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} updates could not be changed", ids.len());
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args).context("configuration")?;
    // Handlers first: a stop asked for the moment we are ready (systemd,
    // a test) must drain, not kill.
    let stop = shutdown_signal()?;
    log_hangups()?;
    let running = crate::server::start(config)
        .await
        .context("starting upcache")?;
    let https = running
        .content_tls_addr
        .map_or(String::new(), |addr| format!(" and https://{addr}"));
    println!(
        "upcache {} serving content on http://{}{https} and the admin API on {}",
        env!("CARGO_PKG_VERSION"),
        running.content_addr,
        running.admin_url
    );
    // Both listeners are bound: a Type=notify unit is started from here.
    let status = format!(
        "serving content on {} and the admin API on {}",
        running.content_addr, running.admin_addr
    );
    notify_service_manager(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let token = running.shutdown_token();
    tokio::spawn(async move {
        stop.await;
        tracing::info!("shutting down");
        notify_service_manager(&[sd_notify::NotifyState::Stopping]);
        token.cancel();
    });
    running.wait().await;
    Ok(())
}

/// Tells systemd (when it started us with `$NOTIFY_SOCKET`) how we are; a
/// failure to tell it is logged, never fatal.
fn notify_service_manager(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify the service manager ($NOTIFY_SOCKET)");
    }
}

/// SIGHUP (`systemctl reload`, logrotate) never stops the server: the
/// access log reopens on it (its own listener), and this one says so.
fn log_hangups() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!(
                "SIGHUP: the access log and the TLS certificates (if any) are read again; other settings need a restart"
            );
        }
    });
    Ok(())
}

/// Resolves at SIGINT or SIGTERM; the handlers are in place on return.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
