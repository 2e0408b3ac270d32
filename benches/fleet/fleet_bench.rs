//! Status at scale (issue #26): COMPUTERS computers × UPDATES updates of
//! status, generated through the fleet's store (`upcache::fleet::Fleet`,
//! the code `ReportEventBatch` ends in, not SOAP), then timed: one
//! update's summary by group, one computer's page, a batch of 200 events
//! stored, and the data on disk.
//!
//! Usage: `fleet_bench [COMPUTERS] [UPDATES] [--dir DIR] [--rounds N] [--bulk]`
//! (defaults 50000, 2000, a temp dir, 20). With `--dir` an existing
//! generated directory is measured again without generating (after a
//! schema change, generate again). `--bulk` writes the same fleet with
//! set-based SQL into the fleet's own tables (computers, memberships,
//! states; the `(n, state, cid)` index built after the rows), which takes
//! minutes where one status report per computer through the store takes
//! most of an hour on the 2-core machine; every figure is then measured
//! through the store as without it.
//!
//! The fleet it generates, so that every computer × update pair has a
//! state: computers in 10 groups of their own (`Ring 0` … `Ring 9`), each
//! on one of 3 OS families; an update applies to one family, or (one in
//! ten) to all. So about 40% of the pairs are applicable and stored;
//! the rest are not applicable (a status report leaves no row for them).
//! Of the applicable ones about 88% installed, 8% needed, and per computer
//! a few download, failure and pending-reboot events (2% of applicable).
//! Every computer sends one status report (event 156 with `U=` needed and
//! `V=` installed lists), then its events.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use upcache::catalog::Catalog;
use upcache::fleet::status::event_ids;
use upcache::fleet::views::ComputerQuery;
use upcache::fleet::{Event, Fleet, FleetSettings, Registration};
use upcache::store::DiskStore;

const GROUPS: usize = 10;
const FAMILIES: usize = 3;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut computers, mut updates, mut dir, mut rounds) = (50_000usize, 2_000usize, None, 20);
    let mut bulk = false;
    let mut only: Option<String> = None;
    let mut positional = 0;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--rounds" => rounds = args.next().unwrap_or_default().parse()?,
            "--bulk" => bulk = true,
            "--only" => only = args.next(),
            n => {
                match positional {
                    0 => computers = n.parse()?,
                    _ => updates = n.parse()?,
                }
                positional += 1;
            }
        }
    }
    let temp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let store = DiskStore::open(&dir, 64)?;
    let catalog = Catalog::open(&dir, store)?;
    let fleet = Fleet::open(&dir, FleetSettings::default())?;
    let generated = fleet.computers(&ComputerQuery::default(), now())?.total > 0;
    if !generated {
        generate(&dir, &catalog, &fleet, computers, updates, bulk)?;
    }
    drop(catalog);
    checkpoint(&dir)?;
    let bytes = disk_bytes(&dir)?;
    println!(
        "data on disk: {:.2} GiB ({bytes} bytes: catalog.sqlite3 and its WAL after a checkpoint)",
        bytes as f64 / (1u64 << 30) as f64
    );
    measure(&fleet, computers, updates, rounds, only.as_deref())?;
    Ok(())
}

fn now() -> i64 {
    upcache::fleet::now()
}

fn update_id(u: usize) -> String {
    format!("{u:08x}-0000-4000-8000-{:012x}", u * 7919)
}

fn computer_id(c: usize) -> String {
    format!("{c:08x}-5601-43c9-bac3-{:012x}", c * 104_729)
}

/// Whether update `u` applies to computer `c`.
fn applies(c: usize, u: usize) -> bool {
    u.is_multiple_of(10) || u % FAMILIES == c % FAMILIES
}

/// A cheap deterministic hash of a pair, 0..1000.
fn roll(c: usize, u: usize) -> u64 {
    let mut x = (c as u64) << 32 | u as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % 1000
}

fn generate(
    dir: &Path,
    catalog: &Catalog,
    fleet: &Fleet,
    computers: usize,
    updates: usize,
    bulk: bool,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let entries: Vec<_> = (0..updates)
        .map(|u| {
            serde_json::json!({
                "id": update_id(u),
                "revision": 1,
                "title": format!("2026-{:02} Cumulative Update {u} (KB{})", u % 12 + 1, 5_000_000 + u),
                "kb": (5_000_000 + u).to_string(),
                "classification": "Security Updates",
                "products": ["Windows 11"],
                "release_date": "2026-01-13",
                "files": [{
                    "name": format!("windows-kb{}.msu", 5_000_000 + u),
                    "sha1": format!("{:040x}", u + 1),
                    "size": 1000,
                    "url": format!("http://download.example.invalid/u{u}.msu"),
                }],
            })
        })
        .collect();
    let doc = serde_json::to_vec(&serde_json::json!({ "updates": entries }))?;
    catalog.import_json(&doc[..], false)?;
    for g in 0..GROUPS {
        catalog.create_group(&format!("Ring {g}"))?;
    }
    println!(
        "catalog: {updates} updates, {GROUPS} groups in {:.1?}",
        t.elapsed()
    );
    if bulk {
        return generate_bulk(dir, computers, updates);
    }

    let t = Instant::now();
    let at = now();
    let (mut rows, mut events) = (0u64, 0u64);
    for c in 0..computers {
        let id = computer_id(c);
        fleet.register(
            &Registration {
                id: id.clone(),
                name: format!("pc{c:05}.corp.example"),
                os: [
                    "Windows 10 Enterprise",
                    "Windows 11 Enterprise",
                    "Windows Server 2022",
                ][c % FAMILIES]
                    .into(),
                os_version: "10.0.26200".into(),
                target_group: String::new(),
                ..Registration::default()
            },
            at,
        )?;
        fleet.set_groups(&id, &[format!("Ring {}", c % GROUPS)])?;
        let (mut needed, mut installed, mut later) = (Vec::new(), Vec::new(), Vec::new());
        for u in (0..updates).filter(|&u| applies(c, u)) {
            rows += 1;
            match roll(c, u) {
                0..=79 => needed.push(update_id(u)),
                80..=84 => later.push((u, event_ids::DOWNLOADED, 0)),
                85..=94 => later.push((u, event_ids::INSTALL_FAILED, 0x8024_2016u32 as i32)),
                95..=99 => later.push((u, event_ids::PENDING_REBOOT, 0)),
                _ => installed.push(update_id(u)),
            }
        }
        // The events' updates are needed until the events say otherwise.
        needed.extend(later.iter().map(|(u, ..)| update_id(*u)));
        let mut batch = vec![status_event(&needed, &installed)];
        batch.extend(later.iter().map(|&(u, e, h)| one_event(u, e, h)));
        events += batch.len() as u64;
        fleet.report(&id, &batch, at)?;
        if c % 5000 == 4999 {
            println!(
                "  {} computers, {rows} stored states, {events} events, {:.1?}",
                c + 1,
                t.elapsed()
            );
        }
    }
    println!(
        "fleet: {computers} computers, {rows} stored states ({:.0}% of the {} pairs), {events} events in {:.1?}",
        rows as f64 * 100.0 / (computers * updates) as f64,
        computers * updates,
        t.elapsed()
    );
    Ok(())
}

/// The same fleet as [`generate`]'s loop, written set by set: ids, names,
/// groups, which updates apply and their states follow the same rules
/// (`roll` is replaced by an arithmetic hash SQLite computes).
fn generate_bulk(dir: &Path, computers: usize, updates: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut db = rusqlite::Connection::open(dir.join("catalog.sqlite3"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    let at = now();
    let tx = db.transaction()?;
    tx.execute_batch("DROP INDEX update_status_by_update;")?;
    tx.execute(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < ?1)
         INSERT INTO computers(cid, id, name, os, os_version, registered, last_scan, last_report, last_status)
         SELECT i + 1, printf('%08x-5601-43c9-bac3-%012x', i, i * 104729), printf('pc%05d.corp.example', i),
                CASE i % 3 WHEN 0 THEN 'Windows 10 Enterprise' WHEN 1 THEN 'Windows 11 Enterprise'
                           ELSE 'Windows Server 2022' END,
                '10.0.26200', ?2, ?2, ?2, ?2 FROM c",
        rusqlite::params![computers as i64, at],
    )?;
    tx.execute(
        "INSERT INTO group_members(cid, gid)
         SELECT c.cid, g.gid FROM computers c
         JOIN computer_groups g ON g.name = 'Ring ' || ((c.cid - 1) % 10)",
        [],
    )?;
    tx.execute(
        "WITH RECURSIVE u(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM u WHERE i + 1 < ?1)
         INSERT INTO status_updates(n, update_id)
         SELECT i + 1, printf('%08x-0000-4000-8000-%012x', i, i * 7919) FROM u",
        [updates as i64],
    )?;
    // The loop's proportions: 8% needed, 0.5% downloaded, 1% failed, 0.5%
    // pending reboot, the rest installed. CROSS JOIN keeps computers
    // outside, so rows come in primary-key order.
    let rows = tx.execute(
        "INSERT INTO update_status(cid, n, state, error, at)
         SELECT cid, n,
                CASE WHEN r < 80 THEN 2 WHEN r < 85 THEN 3 WHEN r < 95 THEN 4 WHEN r < 100 THEN 5 ELSE 6 END,
                CASE WHEN r >= 85 AND r < 95 THEN -2145124330 END, ?1
         FROM (SELECT c.cid, s.n, (c.cid * 2654435761 + s.n * 40503) % 1000 AS r
               FROM computers c CROSS JOIN status_updates s
               WHERE (s.n - 1) % 10 = 0 OR (s.n - 1) % 3 = (c.cid - 1) % 3)",
        [at],
    )?;
    tx.execute(
        "INSERT INTO computer_events(cid, received, event_id, update_id, hresult, event)
         SELECT cid, ?1, '156', '', '0', '{\"ReportingEvent\":\"status\"}' FROM computers",
        [at],
    )?;
    println!(
        "  {rows} rows written in {:.1?}; building the (n, state, cid) index",
        t.elapsed()
    );
    tx.execute_batch("CREATE INDEX update_status_by_update ON update_status(n, state, cid);")?;
    tx.commit()?;
    println!(
        "fleet (bulk): {computers} computers, {rows} stored states ({:.0}% of the {} pairs) in {:.1?}",
        rows as f64 * 100.0 / (computers * updates) as f64,
        computers * updates,
        t.elapsed()
    );
    Ok(())
}

fn status_event(needed: &[String], installed: &[String]) -> Event {
    Event {
        event_id: event_ids::STATUS,
        event_id_text: event_ids::STATUS.to_string(),
        hresult_text: "0".into(),
        misc: vec![
            format!("U={}", needed.join(";")),
            format!("V={}", installed.join(";")),
        ],
        raw: serde_json::json!({"ReportingEvent": "status"}),
        ..Event::default()
    }
}

fn one_event(u: usize, event_id: u32, hresult: i32) -> Event {
    Event {
        event_id,
        update_id: update_id(u),
        hresult,
        event_id_text: event_id.to_string(),
        hresult_text: hresult.to_string(),
        raw: serde_json::json!({"ReportingEvent": [{"EventID": event_id.to_string()}]}),
        ..Event::default()
    }
}

fn checkpoint(dir: &Path) -> anyhow::Result<()> {
    let db = rusqlite::Connection::open(dir.join("catalog.sqlite3"))?;
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

fn disk_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for name in [
        "catalog.sqlite3",
        "catalog.sqlite3-wal",
        "catalog.sqlite3-shm",
    ] {
        total += std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    }
    Ok(total)
}

/// Min, median and max of `rounds` timings of `f`.
fn timed(
    what: &str,
    target: Duration,
    rounds: usize,
    mut f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut all = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let t = Instant::now();
        f(r)?;
        all.push(t.elapsed());
    }
    let shown: Vec<String> = all
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect();
    all.sort();
    let median = all[all.len() / 2];
    println!(
        "{what}: min {:.1} ms, median {:.1} ms, max {:.1} ms (target < {} ms: {}); rounds {}",
        all[0].as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        all[all.len() - 1].as_secs_f64() * 1e3,
        target.as_millis(),
        if all[all.len() - 1] < target {
            "met"
        } else if median < target {
            "median met, max missed"
        } else {
            "MISSED"
        },
        shown.join(" ")
    );
    Ok(())
}

/// Times each figure (`only`: one of `summary`, `page`, `batch`).
fn measure(
    fleet: &Fleet,
    computers: usize,
    updates: usize,
    rounds: usize,
    only: Option<&str>,
) -> anyhow::Result<()> {
    // Spread over the fleet, the same picks every run.
    let pick = |r: usize, n: usize| (r * 7_919 + 13) % n;
    let wanted = |figure: &str| only.is_none_or(|o| o == figure);
    if wanted("summary") {
        timed(
            "one update's summary by group (GET /api/v1/updates/{id}/status)",
            Duration::from_millis(100),
            rounds,
            |r| {
                let s = fleet.update_status(&update_id(pick(r, updates)))?;
                assert!(s.total.computers as usize == computers);
                Ok(())
            },
        )?;
    }
    if wanted("page") {
        timed(
            "one computer's page (GET /api/v1/computers/{id})",
            Duration::from_millis(50),
            rounds,
            |r| {
                let d = fleet.computer(&computer_id(pick(r, computers)), now())?;
                assert!(!d.updates.is_empty());
                Ok(())
            },
        )?;
    }
    if wanted("batch") {
        timed(
            "a batch of 200 events stored (ReportEventBatch)",
            Duration::from_millis(5),
            rounds,
            |r| {
                let c = pick(r + 1000, computers);
                let batch: Vec<Event> = (0..200)
                    .map(|i| {
                        let u = pick(i + r * 200, updates);
                        let e = [
                            event_ids::DOWNLOADED,
                            event_ids::INSTALLED,
                            event_ids::INSTALL_FAILED,
                        ][i % 3];
                        one_event(
                            u,
                            e,
                            if e == event_ids::INSTALL_FAILED {
                                0x8024_2016u32 as i32
                            } else {
                                0
                            },
                        )
                    })
                    .collect();
                fleet.report(&computer_id(c), &batch, now())?;
                Ok(())
            },
        )?;
    }
    Ok(())
}
