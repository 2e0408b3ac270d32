//! What the CLI prints: a server's status, update lists, rules, cleanup
//! reports. The admin client itself never prints.

use crate::admin::Status;
use crate::catalog::rules::Rule;
use crate::catalog::UpdateList;
use crate::upkeep::cleanup::CleanupReport;
use crate::upkeep::scrub::ScrubStatus;

/// `#3  approve  classification=Security Updates  product=Windows 10`.
pub fn describe_rule(r: &Rule) -> String {
    let mut out = format!("#{}  {}", r.id, r.action);
    for (name, value) in [
        ("classification", &r.classification),
        ("product", &r.product),
        ("title contains", &r.title),
        ("for group", &r.group),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("  {name}={v}"));
        }
    }
    out
}

/// "valid until 2027-03-01 (95 days)", or what is wrong with it.
fn expiry(not_after: Option<i64>) -> String {
    let Some(until) = not_after.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
    else {
        return "expiry unreadable".into();
    };
    let date = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let left = until - time::OffsetDateTime::now_utc();
    if left.is_negative() {
        format!("EXPIRED {date}")
    } else {
        format!("valid until {date} ({} days)", left.whole_days())
    }
}

/// What a cleanup found, largest files first, then the totals.
/// `shared`: the report is of the shared tier's bucket.
pub fn print_cleanup(r: &CleanupReport, shared: bool) {
    let verb = match (r.removed, shared) {
        (true, false) => "removed",
        (false, false) => "would remove",
        (true, true) => "removed from the shared tier",
        (false, true) => "would remove from the shared tier",
    };
    for f in &r.listed {
        let sha1 = f.sha1.map_or("-".to_owned(), |s| s.to_hex());
        let why = serde_json::to_value(f.why).unwrap_or_default();
        println!(
            "{verb} {}  sha1 {sha1}  {} bytes  ({})",
            f.sha256,
            f.size,
            why.as_str().unwrap_or("")
        );
    }
    if (r.files as usize) > r.listed.len() {
        println!(
            "... and {} smaller files",
            r.files as usize - r.listed.len()
        );
    }
    if r.failed > 0 {
        println!(
            "{} unneeded files could not be removed (each one is logged)",
            r.failed
        );
    }
    if r.recent > 0 {
        let written = if shared {
            "written to the bucket"
        } else {
            "published"
        };
        println!(
            "{} unneeded files {written} in the last minute left for the next cleanup",
            r.recent
        );
    }
    let whose = if shared { " in the shared tier" } else { "" };
    if r.removed {
        println!(
            "{} files{whose} no update needs; freed {} bytes",
            r.files, r.bytes
        );
    } else {
        println!(
            "{} files{whose} no update needs; would free {} bytes (run with --yes to remove them)",
            r.files, r.bytes
        );
    }
}

pub fn print_status(s: &Status) {
    let c = &s.catalog;
    println!("upcache {}  up {}s", s.version, s.uptime_seconds);
    println!(
        "policy     {}",
        serde_json::to_string(&s.policy).unwrap_or_default()
    );
    println!(
        "updates    {} approved, {} not approved, {} declined, {} superseded",
        c.updates_approved, c.updates_not_approved, c.updates_declined, c.updates_superseded
    );
    if let Some(f) = &s.follow {
        let error = f
            .error
            .as_deref()
            .map_or(String::new(), |e| format!("; last pull failed: {e}"));
        println!("follows    {} at change {}{error}", f.primary, f.seq);
    }
    let u = &s.upstream;
    if let Some(proxy) = &u.proxy {
        let direct = u
            .no_proxy
            .as_deref()
            .map_or(String::new(), |d| format!(" (direct: {d})"));
        println!("upstream   through {proxy}{direct}");
    }
    if let Some(rate) = u.rate_limit {
        println!("upstream   at most {rate} bytes a second, all downloads together");
    }
    if let Some(scrub) = &s.scrub {
        println!("{}", scrub_summary(scrub));
    }
    if let Some(tls) = &s.admin_tls {
        println!("admin TLS  {}, {}", tls.cert, expiry(tls.not_after));
    }
    if let Some(tls) = &s.content_tls {
        println!("HTTPS      {}, {}", tls.cert, expiry(tls.not_after));
    }
    let t = &s.traffic;
    if let Some(ratio) = t.hit_ratio {
        println!(
            "traffic    hit ratio {:.1} %, {} bytes served, {} fetched upstream",
            ratio * 100.0,
            t.bytes_served,
            t.bytes_upstream
        );
    }
    println!(
        "files      {} known, {} stored ({} bytes), {} quarantined",
        c.files, c.files_stored, c.bytes_stored, s.quarantined
    );
    if let Some(i) = &s.import {
        println!(
            "import     {} for {:.0}s: {} updates, {} file locations read",
            i.phase, i.seconds, i.updates, i.files
        );
    }
    if let Some(max) = s.max_store_bytes {
        println!(
            "quota      {} of {max} bytes used ({:.0} %), least recently served evicted beyond",
            c.bytes_stored,
            c.bytes_stored as f64 * 100.0 / max.max(1) as f64
        );
    }
    if s.fetches.is_empty() {
        println!("fetches    none in progress");
    }
    for f in &s.fetches {
        if f.queued {
            println!(
                "queued     {}  waiting for a download slot  {} clients",
                f.name, f.clients
            );
            continue;
        }
        let total = f.bytes_total.map_or("?".to_owned(), |t| t.to_string());
        println!(
            "fetching   {}  {}/{} bytes  {:.1} MB/s  {} clients  {} resumes  {:.1}s",
            f.name,
            f.bytes_done,
            total,
            f.bytes_per_second as f64 / 1e6,
            f.clients,
            f.resumes,
            f.seconds
        );
    }
}

pub fn print_updates(list: &UpdateList) {
    for u in &list.updates {
        let kb =
            u.kb.as_deref()
                .map(|k| format!("KB{k}"))
                .unwrap_or_default();
        println!(
            "{:<38} {:<13} {:<10} {}",
            u.id,
            u.state.as_str(),
            kb,
            u.title
        );
    }
    println!("({} of {} updates)", list.updates.len(), list.total);
}

/// One line on a scrub: how far it got and what it found.
pub fn scrub_summary(s: &ScrubStatus) -> String {
    let state = match (s.running, s.stopped) {
        (true, _) => "running",
        (false, true) => "stopped",
        (false, false) => "done",
    };
    format!(
        "scrub {state}: {} of {} files, {} bytes verified, {} bad",
        s.files_done, s.files_total, s.bytes_done, s.bad_files
    )
}
