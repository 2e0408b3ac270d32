//! `upcache computers`, `upcache groups` and `upcache status UPDATE`: the
//! fleet as the admin API shows it, for people or (`--json`) for scripts.

use clap::Subcommand;

use super::client::AdminClient;
use super::print_json_or;
use crate::admin::GroupInfo;
use crate::fleet::views::{ComputerDetail, ComputerList, ComputerQuery, StateCounts, UpdateStatus};

/// Which computers `upcache computers` lists.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ComputerFilter {
    /// In this group
    #[arg(long)]
    group: Option<String>,
    /// With an update in this state: needed, downloaded, failed,
    /// installed-pending-reboot, installed, not-applicable, unknown (never
    /// reported)
    #[arg(long)]
    status: Option<String>,
    /// With --status: this update's state
    #[arg(long, requires = "status")]
    update: Option<String>,
    /// Only computers silent for stale_after_days
    #[arg(long)]
    stale: bool,
    /// Name or id contains this
    #[arg(long)]
    q: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long, default_value_t = 0)]
    offset: u32,
}

#[derive(Debug, Subcommand)]
pub enum GroupsAction {
    /// Create a group
    Create { name: String },
    /// Rename a group
    Rename { from: String, to: String },
    /// Delete a group: its approvals and memberships go with it
    Delete { name: String },
}

pub async fn computers(
    client: &AdminClient,
    id: Option<&str>,
    f: &ComputerFilter,
    set_groups: Option<&[String]>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(id) = id {
        let detail = match set_groups {
            Some(groups) => client.set_groups(id, groups).await?,
            None => client.computer(id).await?,
        };
        return print_json_or(json, &detail, print_computer);
    }
    anyhow::ensure!(set_groups.is_none(), "--set-groups needs a computer id");
    let q = ComputerQuery {
        group: f.group.clone(),
        status: f.status.clone(),
        update: f.update.clone(),
        stale: f.stale.then_some(true),
        q: f.q.clone(),
        limit: Some(f.limit),
        offset: Some(f.offset),
    };
    let list = client.computers(&q).await?;
    print_json_or(json, &list, print_computers)
}

pub async fn groups(
    client: &AdminClient,
    action: Option<GroupsAction>,
    json: bool,
) -> anyhow::Result<()> {
    match action {
        None => {
            let groups = client.groups().await?;
            print_json_or(json, &groups, print_groups)
        }
        Some(GroupsAction::Create { name }) => {
            let g = client.create_group(&name).await?;
            println!("created group {} (id {})", g.name, g.id);
            Ok(())
        }
        Some(GroupsAction::Rename { from, to }) => {
            let g = client.rename_group(&from, &to).await?;
            println!("renamed {from} to {}", g.name);
            Ok(())
        }
        Some(GroupsAction::Delete { name }) => {
            client.delete_group(&name).await?;
            println!("deleted group {name}");
            Ok(())
        }
    }
}

pub async fn update_status(client: &AdminClient, id: &str, json: bool) -> anyhow::Result<()> {
    let status = client.update_status(id).await?;
    print_json_or(json, &status, print_update_status)
}

fn when(t: Option<i64>) -> String {
    t.map(crate::catalog::approvals::deadline_text::format)
        .unwrap_or_else(|| "never".into())
}

fn print_computers(list: &ComputerList) {
    for c in &list.computers {
        println!(
            "{:<38} {:<28} {:<30} last contact {}{}",
            c.id,
            c.name,
            c.groups.join(", "),
            when(Some(c.last_contact)),
            if c.stale { "  STALE" } else { "" }
        );
    }
    println!("({} of {} computers)", list.computers.len(), list.total);
}

fn print_computer(d: &ComputerDetail) {
    let c = &d.computer;
    println!("{}  {}", c.id, c.name);
    println!("os         {} {}", c.os, c.os_version);
    println!("groups     {}", c.groups.join(", "));
    println!(
        "seen       registered {}, last scan {}, last report {}, last status {}{}",
        when(Some(c.registered)),
        when(c.last_scan),
        when(c.last_report),
        when(c.last_status),
        if c.stale { "  STALE" } else { "" }
    );
    for u in &d.updates {
        let kb =
            u.kb.as_deref()
                .map(|k| format!("KB{k}"))
                .unwrap_or_default();
        println!(
            "{:<26} {:<10} {:<38} {}{}",
            u.state.as_str(),
            kb,
            u.update_id,
            u.title.as_deref().unwrap_or(""),
            u.error
                .as_deref()
                .map(|e| format!("  error {e}"))
                .unwrap_or_default()
        );
    }
    println!("({} events reported)", c.events);
}

fn print_groups(groups: &Vec<GroupInfo>) {
    for g in groups {
        println!(
            "{:>4}  {:<32} {:>7} computers{}",
            g.group.id,
            g.group.name,
            g.computers,
            if g.group.builtin { "  (built in)" } else { "" }
        );
    }
}

fn counts_line(c: &StateCounts) -> String {
    format!(
        "{:>6} installed {:>6} pending reboot {:>6} downloaded {:>6} needed {:>6} failed {:>6} not applicable {:>6} unknown",
        c.installed,
        c.installed_pending_reboot,
        c.downloaded,
        c.needed,
        c.failed,
        c.not_applicable,
        c.unknown
    )
}

fn print_update_status(s: &UpdateStatus) {
    let kb =
        s.kb.as_deref()
            .map(|k| format!("KB{k} "))
            .unwrap_or_default();
    println!(
        "{}  {kb}{}",
        s.update_id,
        s.title.as_deref().unwrap_or("(not in the catalog)")
    );
    for g in &s.groups {
        println!(
            "{:<28} {:>6} computers: {}",
            g.group,
            g.counts.computers,
            counts_line(&g.counts)
        );
    }
}
