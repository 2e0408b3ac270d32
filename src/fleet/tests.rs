//! The fleet over a real catalog file: reports move states, counts add up
//! per group, filters find the computers, and an old computers table
//! migrates.

use std::sync::Arc;

use super::status::{Event, State};
use super::views::ComputerQuery;
use super::*;
use crate::catalog::Catalog;

const U1: &str = "11111111-0000-4000-8000-000000000001";
const U2: &str = "11111111-0000-4000-8000-000000000002";
const U3: &str = "11111111-0000-4000-8000-000000000003";
const ALL: i64 = crate::catalog::groups::ALL_COMPUTERS;

struct World {
    _dir: tempfile::TempDir,
    catalog: Arc<Catalog>,
    fleet: Fleet,
}

fn world(targeting: Targeting) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::DiskStore::open(dir.path(), 16).unwrap();
    let catalog = Catalog::open(dir.path(), store).unwrap();
    let fleet = Fleet::open(
        dir.path(),
        FleetSettings {
            targeting,
            ..FleetSettings::default()
        },
    )
    .unwrap();
    World {
        _dir: dir,
        catalog,
        fleet,
    }
}

fn register(f: &Fleet, id: &str, group: &str) {
    f.register(
        &Registration {
            id: id.into(),
            name: format!("{id}.example.test"),
            target_group: group.into(),
            ..Registration::default()
        },
        100,
    )
    .unwrap();
}

fn status_event(needed: &[&str], installed: &[&str]) -> Event {
    Event {
        event_id: 156,
        misc: vec![
            format!("U={}", needed.join(";")),
            format!("V={}", installed.join(";")),
        ],
        ..Event::default()
    }
}

fn install_event(id: u32, update: &str, hresult: i32) -> Event {
    Event {
        event_id: id,
        update_id: update.into(),
        hresult,
        ..Event::default()
    }
}

#[test]
fn reports_move_states_and_counts_add_up_per_group() {
    let w = world(Targeting::Server);
    let f = &w.fleet;
    w.catalog.create_group("Pilot").unwrap();
    w.catalog.create_group("Ring 2").unwrap();
    for id in ["a", "b", "c", "d"] {
        register(f, id, "");
    }
    f.set_groups("a", &["Pilot".into()]).unwrap();
    f.set_groups("b", &["pilot".into(), "Ring 2".into()])
        .unwrap();
    assert!(matches!(
        f.set_groups("c", &["Nope".into()]),
        Err(FleetError::UnknownGroup(_))
    ));

    let failed = 0x8024_0017_u32 as i32;
    f.report("a", &[status_event(&[U1, U2], &[U3])], 200)
        .unwrap();
    f.report("a", &[install_event(182, U1, failed)], 210)
        .unwrap();
    f.report(
        "b",
        &[
            status_event(&[U1], &[]),
            install_event(201, U1, 0x0024_0005),
        ],
        220,
    )
    .unwrap();
    f.report("d", &[status_event(&[], &[U3])], 230).unwrap();
    // c never reports: unknown everywhere.

    let s = f.update_status(U1).unwrap();
    let total = &s.total;
    assert_eq!(
        (total.computers, total.unknown, total.not_applicable),
        (4, 1, 1)
    );
    assert_eq!((total.failed, total.installed_pending_reboot), (1, 1));
    let group = |name: &str| {
        s.groups
            .iter()
            .find(|g| g.group == name)
            .unwrap_or_else(|| panic!("{name}: {s:?}"))
            .counts
            .clone()
    };
    let pilot = group("Pilot");
    assert_eq!(
        (
            pilot.computers,
            pilot.failed,
            pilot.installed_pending_reboot
        ),
        (2, 1, 1)
    );
    let ring = group("Ring 2");
    assert_eq!(
        (ring.computers, ring.installed_pending_reboot, ring.failed),
        (1, 1, 0)
    );
    let unassigned = group("Unassigned Computers");
    assert_eq!(
        (
            unassigned.computers,
            unassigned.unknown,
            unassigned.not_applicable
        ),
        (2, 1, 1)
    );

    // A later scan: U1 installed on a, U3 not applicable any more; the
    // failure's error is shown until then.
    let page = f.computer("a", 300).unwrap();
    let u1 = page.updates.iter().find(|u| u.update_id == U1).unwrap();
    assert_eq!(
        (u1.state, u1.error.as_deref()),
        (State::Failed, Some("0x80240017"))
    );
    f.report("a", &[status_event(&[U2], &[U1])], 300).unwrap();
    let page = f.computer("a", 300).unwrap();
    let states: Vec<_> = page
        .updates
        .iter()
        .map(|u| (u.update_id.as_str(), u.state))
        .collect();
    assert_eq!(states, [(U2, State::Needed), (U1, State::Installed)]);
    assert_eq!(page.computer.groups, ["Pilot"]);
    assert_eq!(page.recent_events.len(), 3);

    // Filters: by group, by state (any update or one), by staleness.
    let ids = |q: ComputerQuery| -> Vec<String> {
        f.computers(&q, 400)
            .unwrap()
            .computers
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(
        ids(ComputerQuery {
            group: Some("Pilot".into()),
            ..Default::default()
        }),
        ["a", "b"]
    );
    assert_eq!(
        ids(ComputerQuery {
            group: Some("Unassigned Computers".into()),
            ..Default::default()
        }),
        ["c", "d"]
    );
    assert_eq!(
        ids(ComputerQuery {
            status: Some("installed-pending-reboot".into()),
            update: Some(U1.into()),
            ..Default::default()
        }),
        ["b"]
    );
    assert_eq!(
        ids(ComputerQuery {
            status: Some("unknown".into()),
            ..Default::default()
        }),
        ["c"]
    );
    assert_eq!(
        ids(ComputerQuery {
            status: Some("not-applicable".into()),
            update: Some(U1.into()),
            ..Default::default()
        }),
        ["d"]
    );
    let later = 300 + 31 * 86_400;
    let stale = f
        .computers(
            &ComputerQuery {
                stale: Some(true),
                ..Default::default()
            },
            later,
        )
        .unwrap();
    assert_eq!(stale.total, 4);
    assert!(stale.computers.iter().all(|c| c.stale));

    // Deleting a group drops its memberships: b stays in Ring 2 only.
    w.catalog.delete_group("Pilot").unwrap();
    assert_eq!(f.computer("b", 400).unwrap().computer.groups, ["Ring 2"]);
    assert_eq!(
        f.computer("a", 400).unwrap().computer.groups,
        ["Unassigned Computers"]
    );
}

#[test]
fn an_update_that_arrived_after_the_last_status_report_is_unknown_not_inapplicable() {
    let w = world(Targeting::Server);
    let f = &w.fleet;
    register(f, "a", "");
    register(f, "b", "");
    let before = super::now() - 60;
    f.report("a", &[status_event(&[], &[])], before).unwrap();
    f.report("b", &[status_event(&[], &[])], before).unwrap();
    let catalog =
        serde_json::json!({"updates": [{"id": U1, "revision": 1, "title": "New", "files": []}]});
    w.catalog
        .import_json(catalog.to_string().as_bytes(), false)
        .unwrap();

    // Neither has scanned since U1 came: what each would say is unknown.
    let s = f.update_status(U1).unwrap();
    assert_eq!((s.total.unknown, s.total.not_applicable), (2, 0), "{s:?}");
    let unknown = ComputerQuery {
        status: Some("unknown".into()),
        update: Some(U1.into()),
        ..ComputerQuery::default()
    };
    assert_eq!(f.computers(&unknown, super::now()).unwrap().total, 2);

    // a scans again and does not list it: not applicable to a.
    f.report("a", &[status_event(&[], &[])], super::now() + 1)
        .unwrap();
    let s = f.update_status(U1).unwrap();
    assert_eq!((s.total.unknown, s.total.not_applicable), (1, 1), "{s:?}");
    let inapplicable = ComputerQuery {
        status: Some("not-applicable".into()),
        update: Some(U1.into()),
        ..ComputerQuery::default()
    };
    let listed = f.computers(&inapplicable, super::now()).unwrap();
    assert_eq!(
        listed
            .computers
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(f.computers(&unknown, super::now()).unwrap().total, 1);
}

#[test]
fn a_batch_that_moves_one_update_twice_leaves_its_last_state() {
    let w = world(Targeting::Server);
    let f = &w.fleet;
    register(f, "a", "");
    let failed = 0x8024_0017_u32 as i32;
    f.report(
        "a",
        &[
            status_event(&[U1, U2], &[]),
            install_event(162, U1, 0),
            install_event(183, U1, 0),
            install_event(182, U2, failed),
            status_event(&[U2], &[U1]),
            install_event(182, U3, failed),
        ],
        300,
    )
    .unwrap();
    let d = f.computer("a", 300).unwrap();
    let states: Vec<(String, State, Option<String>)> = d
        .updates
        .iter()
        .map(|u| (u.update_id.clone(), u.state, u.error.clone()))
        .collect();
    assert_eq!(
        states,
        [
            (U2.to_owned(), State::Failed, Some("0x80240017".to_owned())),
            (U3.to_owned(), State::Failed, Some("0x80240017".to_owned())),
            (U1.to_owned(), State::Installed, None),
        ],
        "{d:?}"
    );
}

#[test]
fn client_side_targeting_follows_the_names_the_client_sends() {
    let w = world(Targeting::Client);
    let f = &w.fleet;
    let pilot = w.catalog.create_group("Pilot").unwrap();
    register(f, "a", "Pilot;Unknown group");
    assert_eq!(f.groups_of("a").unwrap(), [1, pilot.id]);
    // A scan asking for nothing leaves it unassigned.
    assert_eq!(f.scanned("a", "", None, 200).unwrap(), [1, 2]);
    assert!(matches!(
        f.set_groups("a", &["Pilot".into()]),
        Err(FleetError::ClientTargeting)
    ));
}

#[test]
fn computers_and_events_of_release_0_1_0_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("catalog.sqlite3")).unwrap();
        crate::metadata::apply_once(&conn, "clients_schema_version", 1, schema::V1).unwrap();
        conn.execute_batch(
            "INSERT INTO computers(id, name, target_group, registered, last_report)
               VALUES ('pc1', 'pc1.example.test', 'Pilot', 10, 20);
             INSERT INTO computer_events(computer_id, received, event_id, update_id, hresult, event)
               VALUES ('pc1', 20, '182', 'u', '-2145124329', '{}');",
        )
        .unwrap();
    }
    let store = crate::store::DiskStore::open(dir.path(), 16).unwrap();
    let _catalog = Catalog::open(dir.path(), store).unwrap();
    let f = Fleet::open(dir.path(), FleetSettings::default()).unwrap();
    let page = f.computer("pc1", 30).unwrap();
    assert_eq!(page.computer.name, "pc1.example.test");
    assert_eq!(page.computer.last_report, Some(20));
    assert_eq!(page.recent_events[0].event_id, "182");
    assert_eq!(page.computer.groups, ["Unassigned Computers"]);
}

/// The figures of issue #26 on a generated fleet: `cargo test --release
/// --lib fleet::tests::scale -- --ignored --nocapture` (sizes:
/// `UPCACHE_FLEET_COMPUTERS`, `UPCACHE_FLEET_UPDATES`; each update is
/// applicable to a tenth of the computers).
#[test]
#[ignore]
fn scale() {
    use std::time::Instant;
    let env = |k: &str, d: i64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (computers, updates) = (
        env("UPCACHE_FLEET_COMPUTERS", 50_000),
        env("UPCACHE_FLEET_UPDATES", 2_000),
    );
    let w = world(Targeting::Server);
    for g in ["Pilot", "Ring 1", "Broad"] {
        w.catalog.create_group(g).unwrap();
    }
    let started = Instant::now();
    {
        let mut db = w.fleet.db();
        let tx = db.transaction().unwrap();
        tx.execute_batch(&format!(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {computers})
             INSERT INTO computers(cid, id, name, registered, last_scan, last_report, last_status)
               SELECT i, printf('%08x-0000-4000-8000-000000000000', i), printf('pc%06d', i), 1, 2, 2, 2 FROM c;
             INSERT INTO group_members(cid, gid) SELECT cid, 3 + cid % 3 FROM computers;
             WITH RECURSIVE u(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM u WHERE n < {updates})
             INSERT INTO status_updates(n, update_id)
               SELECT n, printf('%08x-1111-4000-8000-000000000000', n) FROM u;
             INSERT INTO update_status(cid, n, state, error, at)
               SELECT c.cid, u.n, 2 + (c.cid / 10 + u.n) % 5, NULL, 2
               FROM computers c JOIN status_updates u ON c.cid % 10 = u.n % 10
               ORDER BY c.cid, u.n;"
        ))
        .unwrap();
        tx.commit().unwrap();
    }
    let rows: i64 = w
        .fleet
        .reader()
        .query_row("SELECT count(*) FROM update_status", [], |r| r.get(0))
        .unwrap();
    eprintln!(
        "generated {computers} computers, {updates} updates, {rows} rows in {:?}",
        started.elapsed()
    );
    let time = |what: &str, f: &mut dyn FnMut()| {
        f();
        let started = Instant::now();
        for _ in 0..5 {
            f();
        }
        eprintln!("{what}: {:?} each", started.elapsed() / 5);
    };
    let update = "00000007-1111-4000-8000-000000000000";
    time("one update's counts per group", &mut || {
        let s = w.fleet.update_status(update).unwrap();
        assert_eq!(s.total.computers, computers as u64);
    });
    let pc = "00000007-0000-4000-8000-000000000000";
    time("one computer's page", &mut || {
        w.fleet.computer(pc, 3).unwrap();
    });
    time("a page of 100 computers that need an update", &mut || {
        let page = w
            .fleet
            .computers(
                &ComputerQuery {
                    status: Some("needed".into()),
                    update: Some(update.into()),
                    ..Default::default()
                },
                3,
            )
            .unwrap();
        assert!(page.total > 0 && !page.computers.is_empty());
    });
    let batch: Vec<Event> = (0..200)
        .map(|i| {
            install_event(
                183,
                &format!("{:08x}-1111-4000-8000-000000000000", i + 1),
                0,
            )
        })
        .collect();
    let mut at = 10;
    time("a batch of 200 events stored", &mut || {
        at += 1;
        w.fleet.report(pc, &batch, at).unwrap();
    });
    let db_bytes = std::fs::metadata(w._dir.path().join("catalog.sqlite3"))
        .unwrap()
        .len();
    eprintln!("database: {} MiB", db_bytes >> 20);
}

/// An event with its `EventInstanceID`.
fn instance_event(id: u32, update: &str, instance: u8) -> Event {
    Event {
        instance: Some([instance; 16]),
        ..install_event(id, update, 0)
    }
}

fn events_kept(f: &Fleet, id: &str) -> u64 {
    f.computer(id, 1_000).unwrap().computer.events
}

#[test]
fn an_event_sent_again_is_stored_once_and_applied_once() {
    let w = world(Targeting::Server);
    let f = &w.fleet;
    register(f, "a", "");
    // The same instance twice in one batch: once.
    let batch = [
        instance_event(162, U1, 1),
        instance_event(162, U1, 1),
        instance_event(183, U2, 2),
    ];
    assert_eq!(f.report("a", &batch, 200).unwrap(), 2);
    assert_eq!(events_kept(f, "a"), 2);
    // The whole batch again (its acknowledgement was lost): nothing new.
    assert_eq!(f.report("a", &batch, 210).unwrap(), 0);
    assert_eq!(events_kept(f, "a"), 2);
    // A later failure, then the stale batch once more: the copy of the
    // install event moves nothing back.
    f.report("a", &[instance_event(182, U2, 3)], 220).unwrap();
    f.report("a", &batch, 230).unwrap();
    let page = f.computer("a", 240).unwrap();
    let state = |u: &str| {
        page.updates
            .iter()
            .find(|x| x.update_id == u)
            .map(|x| x.state)
    };
    assert_eq!(state(U2), Some(State::Failed));
    assert_eq!(state(U1), Some(State::Downloaded));
    assert_eq!(page.computer.events, 3);
    // Instance ids are per computer: another computer's same ids are its own.
    register(f, "b", "");
    assert_eq!(f.report("b", &batch, 250).unwrap(), 2);
    assert_eq!(events_kept(f, "b"), 2);
}

#[test]
fn events_without_an_instance_id_are_stored_every_time() {
    let w = world(Targeting::Server);
    let f = &w.fleet;
    register(f, "a", "");
    let batch = [install_event(183, U1, 0), install_event(183, U1, 0)];
    assert_eq!(f.report("a", &batch, 200).unwrap(), 2);
    assert_eq!(f.report("a", &batch, 210).unwrap(), 2);
    assert_eq!(events_kept(f, "a"), 4);
}

#[test]
fn retention_deletes_only_old_events_in_batches_and_keeps_states() {
    let w = world(Targeting::Server);
    let f = &w.fleet;
    register(f, "a", "");
    register(f, "b", "");
    let day = 86_400;
    let now = 1_000 * day;
    // 5 events 91 days old, 2 of them 89 days old.
    for i in 0..5 {
        f.report(
            "a",
            &[instance_event(183, U1, i)],
            now - 91 * day + i64::from(i),
        )
        .unwrap();
    }
    f.report("b", &[install_event(182, U2, 5)], now - 89 * day)
        .unwrap();
    f.report("a", &[instance_event(162, U3, 9)], now - 89 * day)
        .unwrap();
    assert_eq!(
        f.expire_before(now - 90 * day, 2, || true).unwrap(),
        retention::Expired {
            events: 5,
            batches: 3
        }
    );
    assert_eq!(events_kept(f, "a"), 1);
    assert_eq!(events_kept(f, "b"), 1);
    let page = f.computer("a", now).unwrap();
    let states: Vec<_> = page
        .updates
        .iter()
        .map(|u| (u.update_id.as_str(), u.state))
        .collect();
    assert!(states.contains(&(U1, State::Installed)), "{states:?}");
    // Through the setting (90 days): nothing more is that old.
    assert_eq!(f.expire_events(now, || true).unwrap().events, 0);
    assert_eq!(f.expire_events(now + 2 * day, || true).unwrap().events, 2);
    assert_eq!(events_kept(f, "a"), 0);
    assert_eq!(f.computer("a", now).unwrap().updates.len(), 2);
    // Events go in the order they were stored: one a follower forwarded
    // late (its client's older time) waits for the ones stored before it.
    f.report("a", &[instance_event(183, U1, 20)], now).unwrap();
    f.report("a", &[instance_event(183, U1, 21)], now - 200 * day)
        .unwrap();
    assert_eq!(f.expire_events(now + 2 * day, || true).unwrap().events, 0);
    assert_eq!(f.expire_events(now + 91 * day, || true).unwrap().events, 2);
    // A pass stops when told to (shutdown), before its next batch.
    f.report("a", &[instance_event(183, U1, 22)], now).unwrap();
    assert_eq!(f.expire_events(now + 91 * day, || false).unwrap().events, 0);
    assert_eq!(events_kept(f, "a"), 1);
}

#[test]
fn retention_0_keeps_events_forever() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::DiskStore::open(dir.path(), 16).unwrap();
    let _catalog = Catalog::open(dir.path(), store).unwrap();
    let settings = FleetSettings {
        event_retention_days: 0,
        ..FleetSettings::default()
    };
    let f = Fleet::open(dir.path(), settings).unwrap();
    register(&f, "a", "");
    f.report("a", &[instance_event(183, U1, 1)], 100).unwrap();
    let in_ten_years = 100 + 3650 * 86_400;
    assert_eq!(
        f.expire_events(in_ten_years, || true).unwrap(),
        retention::Expired::default()
    );
    assert_eq!(events_kept(&f, "a"), 1);
}

#[test]
fn duplicates_stored_before_instance_ids_do_not_stop_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::DiskStore::open(dir.path(), 16).unwrap();
    let _catalog = Catalog::open(dir.path(), store).unwrap();
    {
        // Version 3: the same batch stored twice.
        let conn = rusqlite::Connection::open(dir.path().join("catalog.sqlite3")).unwrap();
        schema::prepare_to(&conn, 3).unwrap();
        conn.execute_batch(
            "INSERT INTO computers(cid, id, registered) VALUES (1, 'pc1', 10);
             INSERT INTO computer_events(cid, received, event_id, update_id, hresult, event)
               VALUES (1, 20, '183', 'u', '0', '{\"ReportingEvent\":[]}'),
                      (1, 20, '183', 'u', '0', '{\"ReportingEvent\":[]}'),
                      (1, 30, '183', 'u', '0', '{\"ReportingEvent\":[]}'),
                      (1, 30, '183', 'u', '0', '{\"ReportingEvent\":[]}');",
        )
        .unwrap();
    }
    let f = Fleet::open(dir.path(), FleetSettings::default()).unwrap();
    // Kept as they were (they carry no instance id); new events are once.
    assert_eq!(events_kept(&f, "pc1"), 4);
    let batch = [instance_event(183, U1, 7), instance_event(183, U1, 7)];
    f.report("pc1", &batch, 40).unwrap();
    f.report("pc1", &batch, 50).unwrap();
    assert_eq!(events_kept(&f, "pc1"), 5);
    drop(f);
    let f = Fleet::open(dir.path(), FleetSettings::default()).unwrap();
    assert_eq!(events_kept(&f, "pc1"), 5);
}

/// A follower's pull of `from` into `to`: the catalog `since` and the
/// memberships `members` since; the change number reached, how many
/// computers' groups came, and the document.
fn pull(from: &World, to: &World, since: u64, members: u64) -> (u64, u64, String) {
    pull_as(from, to, since, members, crate::catalog::Memberships::Own)
}

/// [`pull`] with `from` giving `whose` memberships.
fn pull_as(
    from: &World,
    to: &World,
    since: u64,
    members: u64,
    whose: crate::catalog::Memberships,
) -> (u64, u64, String) {
    use crate::catalog::{FleetExport, FollowMembers};
    let mut doc = Vec::new();
    let ask = FleetExport {
        since: members,
        members: Some(whose),
    };
    from.catalog
        .export_to(&mut doc, Some(since), Some(ask))
        .unwrap();
    let mut sink = groups::FromPrimary::default();
    let follow = FollowMembers {
        since: members,
        sink: &mut sink,
    };
    let (_, seq) = to
        .catalog
        .import_from_primary(&doc[..], Some(follow))
        .unwrap();
    assert_eq!(to.catalog.follow_members_seq().unwrap(), Some(seq));
    (seq, sink.computers, String::from_utf8(doc).unwrap())
}

/// The names of the groups computer `id` is in, `All Computers` first.
fn group_names(w: &World, id: &str) -> Vec<String> {
    let groups = w.catalog.groups().unwrap();
    w.fleet
        .groups_of(id)
        .unwrap()
        .into_iter()
        .map(|gid| groups.iter().find(|g| g.id == gid).unwrap().name.clone())
        .collect()
}

fn own_group_names(w: &World) -> Vec<String> {
    let mut names: Vec<_> = w
        .catalog
        .groups()
        .unwrap()
        .into_iter()
        .filter(|g| !g.builtin)
        .map(|g| g.name)
        .collect();
    names.sort();
    names
}

#[test]
fn a_follower_takes_the_primarys_memberships_by_client_id_and_only_their_changes() {
    let primary = world(Targeting::Server);
    let follower = world(Targeting::Server);
    let p = &primary.fleet;
    primary.catalog.create_group("Pilot").unwrap();
    primary.catalog.create_group("Ring 2").unwrap();
    for id in ["a", "b", "c"] {
        register(p, id, "");
    }
    p.set_groups("a", &["Pilot".into()]).unwrap();
    p.set_groups("b", &["Pilot".into(), "Ring 2".into()])
        .unwrap();
    // Known here before the first pull: placed at once.
    register(&follower.fleet, "a", "");

    let (seq, computers, doc) = pull(&primary, &follower, 0, 0);
    assert_eq!(computers, 2, "{doc}");
    assert_eq!(own_group_names(&follower), ["Pilot", "Ring 2"]);
    assert_eq!(group_names(&follower, "a"), ["All Computers", "Pilot"]);
    // Unknown here until now: placed as it registers.
    register(&follower.fleet, "b", "");
    register(&follower.fleet, "c", "");
    assert_eq!(
        group_names(&follower, "b"),
        ["All Computers", "Pilot", "Ring 2"]
    );
    assert_eq!(
        group_names(&follower, "c"),
        ["All Computers", "Unassigned Computers"]
    );

    // Up to date: nothing comes.
    let (seq2, computers, doc) = pull(&primary, &follower, seq, seq);
    assert_eq!((seq2, computers), (seq, 0), "{doc}");
    assert!(
        doc.starts_with("{\"updates\":[]") && doc.contains("\"members\":[]"),
        "{doc}"
    );

    // Out of Pilot, and a computer the follower never saw.
    p.set_groups("a", &[]).unwrap();
    register(p, "d", "");
    p.set_groups("d", &["Ring 2".into()]).unwrap();
    // The same groups again is no change.
    p.set_groups("b", &["Ring 2".into(), "Pilot".into()])
        .unwrap();
    let (seq3, computers, doc) = pull(&primary, &follower, seq, seq);
    assert!(seq3 > seq);
    assert_eq!(computers, 2, "a and d only: {doc}");
    assert!(doc.starts_with("{\"updates\""), "no group changed: {doc}");
    assert_eq!(
        group_names(&follower, "a"),
        ["All Computers", "Unassigned Computers"]
    );
    // First seen by a scan: the scan's groups are the primary's.
    let ring_2 = follower.catalog.group("Ring 2").unwrap().id;
    assert_eq!(
        follower.fleet.scanned("d", "", None, 300).unwrap(),
        [ALL, ring_2]
    );
    assert_eq!(group_names(&follower, "d"), ["All Computers", "Ring 2"]);

    // A full pull (the primary's counter went back) replaces what is held.
    let fresh = world(Targeting::Server);
    let (_, computers, _) = pull(&fresh, &follower, 0, 0);
    assert_eq!(computers, 0);
    assert!(own_group_names(&follower).is_empty());
    assert_eq!(
        group_names(&follower, "b"),
        ["All Computers", "Unassigned Computers"]
    );
}

#[test]
fn groups_renamed_or_deleted_on_the_primary_follow_with_their_members() {
    let primary = world(Targeting::Server);
    let follower = world(Targeting::Server);
    let p = &primary.fleet;
    for name in ["Pilot", "Ring 1", "Ring 2", "Gone"] {
        primary.catalog.create_group(name).unwrap();
    }
    register(p, "a", "");
    p.set_groups("a", &["Pilot".into(), "Ring 1".into(), "Gone".into()])
        .unwrap();
    // Made here by name before (an approval named it): taken as the primary's.
    let pilot_here = follower.catalog.create_group("pilot").unwrap();
    follower.catalog.create_group("Stray").unwrap();
    register(&follower.fleet, "a", "");
    let (seq, _, _) = pull(&primary, &follower, 0, 0);
    assert_eq!(
        own_group_names(&follower),
        ["Gone", "Pilot", "Ring 1", "Ring 2"]
    );
    assert_eq!(follower.catalog.group("Pilot").unwrap().id, pilot_here.id);

    // Pilot renamed, Ring 1 and Ring 2 swap names, Gone deleted.
    primary.catalog.rename_group("Pilot", "Early").unwrap();
    primary.catalog.rename_group("Ring 1", "Swap").unwrap();
    primary.catalog.rename_group("Ring 2", "Ring 1").unwrap();
    primary.catalog.rename_group("Swap", "Ring 2").unwrap();
    primary.catalog.delete_group("Gone").unwrap();
    let (_, computers, doc) = pull(&primary, &follower, seq, seq);
    assert!(doc.starts_with("{\"groups\":["), "{doc}");
    assert_eq!(computers, 0, "renames move no member: {doc}");
    assert_eq!(own_group_names(&follower), ["Early", "Ring 1", "Ring 2"]);
    assert_eq!(
        group_names(&follower, "a"),
        ["All Computers", "Early", "Ring 2"]
    );
    assert_eq!(group_names(&primary, "a"), group_names(&follower, "a"));
}

#[test]
fn a_primarys_fleet_part_is_bounded_and_checked() {
    use crate::catalog::json::{parse_follow, FleetItem, MAX_MEMBER_GROUPS};
    let doc = |groups: &str, members: &str| {
        format!(r#"{{"groups":{groups},"updates":[],"members":{members},"seq":1}}"#)
    };
    let (_, items) = parse_follow(
        doc(
            r#"[{"id":3,"name":" Pilot "}]"#,
            r#"[{"id":"pc-1","groups":[3]}]"#,
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(items.len(), 3);
    assert!(matches!(&items[0], FleetItem::Groups(g) if g[0].name == "Pilot"));
    assert!(matches!(&items[2], FleetItem::Member(m) if m.id == "pc-1"));
    let many = format!("[{}]", vec!["3"; MAX_MEMBER_GROUPS + 1].join(","));
    for (groups, members) in [
        (r#"[{"id":1,"name":"All"}]"#.to_owned(), "[]".to_owned()),
        (r#"[{"id":3,"name":"a;b"}]"#.to_owned(), "[]".to_owned()),
        (
            r#"[{"id":3,"name":"A"},{"id":4,"name":"a"}]"#.to_owned(),
            "[]".to_owned(),
        ),
        (
            "[]".to_owned(),
            format!(r#"[{{"id":"pc","groups":{many}}}]"#),
        ),
        ("[]".to_owned(), r#"[{"id":"","groups":[]}]"#.to_owned()),
    ] {
        let e = parse_follow(doc(&groups, &members).as_bytes()).unwrap_err();
        assert!(!e.to_string().is_empty());
    }
    // A plain import knows no fleet part.
    assert!(crate::catalog::json::parse(doc("[]", "[]").as_bytes()).is_err());
}

#[test]
fn memberships_of_many_computers_come_page_by_page_each_once() {
    let primary = world(Targeting::Server);
    let follower = world(Targeting::Server);
    let pilot = primary.catalog.create_group("Pilot").unwrap().id;
    let ring = primary.catalog.create_group("Ring").unwrap().id;
    // Three pages' worth, all stamped with the same change number; every
    // third in Ring too, every fifth in no group of its own (taken out).
    let n = 2 * 1024 + 7;
    primary
        .fleet
        .db()
        .execute_batch(&format!(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
             INSERT INTO computers(id, registered, groups_changed)
                 SELECT 'pc-' || i, 0, (SELECT seq FROM change_seq) FROM k;
             INSERT INTO group_members(cid, gid) SELECT cid, {pilot} FROM computers
                 WHERE cid % 5 != 0;
             INSERT INTO group_members(cid, gid) SELECT cid, {ring} FROM computers
                 WHERE cid % 3 = 0 AND cid % 5 != 0;"
        ))
        .unwrap();
    let (_, computers, doc) = pull(&primary, &follower, 0, 0);
    assert_eq!(computers, n as u64);
    let (_, items) = crate::catalog::json::parse_follow(doc.as_bytes()).unwrap();
    let mut ids: Vec<_> = items
        .into_iter()
        .filter_map(|i| match i {
            crate::catalog::json::FleetItem::Member(m) => Some(m.id),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    // Each with its own groups, on either side of the pages' ends.
    for i in [1, 3, 5, 15, 1023, 1024, 1025, 2048, 2049, n] {
        let id = format!("pc-{i}");
        register(&follower.fleet, &id, "");
        assert_eq!(
            group_names(&follower, &id),
            group_names(&primary, &id),
            "{id}"
        );
    }
    assert_eq!(
        group_names(&follower, "pc-15"),
        ["All Computers", "Unassigned Computers"]
    );
    assert_eq!(
        group_names(&follower, "pc-3"),
        ["All Computers", "Pilot", "Ring"]
    );
    assert_eq!(group_names(&follower, "pc-1"), ["All Computers", "Pilot"]);
}

#[test]
fn a_follower_passes_the_memberships_it_took_on_to_its_own_follower() {
    use crate::catalog::Memberships::Mirrored;
    let primary = world(Targeting::Server);
    let middle = world(Targeting::Server);
    let last = world(Targeting::Server);
    primary.catalog.create_group("Pilot").unwrap();
    primary.catalog.create_group("Ring").unwrap();
    for id in ["a", "b", "c"] {
        register(&primary.fleet, id, "");
    }
    let groups = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    primary.fleet.set_groups("a", &groups(&["Pilot"])).unwrap();
    primary
        .fleet
        .set_groups("b", &groups(&["Pilot", "Ring"]))
        .unwrap();
    let (p1, _, _) = pull(&primary, &middle, 0, 0);
    let (m1, computers, doc) = pull_as(&middle, &last, 0, 0, Mirrored);
    assert_eq!(computers, 2, "{doc}");
    // Known at the chain's end only now: placed as they come.
    for id in ["a", "b", "c"] {
        register(&last.fleet, id, "");
    }
    assert_eq!(group_names(&last, "a"), ["All Computers", "Pilot"]);
    assert_eq!(group_names(&last, "b"), ["All Computers", "Pilot", "Ring"]);
    assert_eq!(
        group_names(&last, "c"),
        ["All Computers", "Unassigned Computers"]
    );
    let (_, computers, _) = pull_as(&middle, &last, m1, m1, Mirrored);
    assert_eq!(computers, 0, "nothing changed in the middle");

    // Changes on the primary pass down at the next pulls, out of every
    // group too.
    primary.fleet.set_groups("a", &[]).unwrap();
    primary.fleet.set_groups("c", &groups(&["Ring"])).unwrap();
    let (p2, computers, _) = pull(&primary, &middle, p1, p1);
    assert_eq!(computers, 2);
    let (m2, computers, doc) = pull_as(&middle, &last, m1, m1, Mirrored);
    assert_eq!(computers, 2, "{doc}");
    for id in ["a", "b", "c"] {
        assert_eq!(group_names(&last, id), group_names(&primary, id), "{id}");
    }
    assert_eq!(
        group_names(&last, "a"),
        ["All Computers", "Unassigned Computers"]
    );

    // The middle takes them all again (they replace what it held): every
    // id it held passes on again, in the groups it holds now.
    primary.fleet.set_groups("b", &groups(&["Ring"])).unwrap();
    pull(&primary, &middle, p2, 0);
    let (_, computers, doc) = pull_as(&middle, &last, m2, m2, Mirrored);
    assert_eq!(computers, 3, "{doc}");
    assert_eq!(group_names(&last, "b"), ["All Computers", "Ring"]);
}

/// The plan SQLite makes of a memberships page (`catalog::export`, which
/// reads these tables) on the real schema: the catalog's and the fleet's
/// tables in the one file.
fn plan_of_a_members_page(sql: &str) -> Vec<String> {
    let w = world(Targeting::Server);
    let db = rusqlite::Connection::open(w._dir.path().join("catalog.sqlite3")).unwrap();
    let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let plan = stmt
        .query_map(rusqlite::params![5, 190_000, 1024], |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    plan
}

#[test]
fn a_memberships_page_seeks_its_first_computer() {
    use crate::catalog::{MEMBERS_PAGE_SQL, MIRRORED_PAGE_SQL};
    let plan = plan_of_a_members_page(MEMBERS_PAGE_SQL);
    assert!(
        plan.iter()
            .any(|d| d.contains("(groups_changed=? AND cid>?)")),
        "{plan:#?}"
    );
    assert!(
        !plan.iter().any(|d| d.starts_with("SCAN computers")),
        "{plan:#?}"
    );
    let plan = plan_of_a_members_page(MIRRORED_PAGE_SQL);
    assert!(
        plan.iter().any(|d| d.contains("(changed=? AND pcid>?)")),
        "{plan:#?}"
    );
    assert!(
        !plan
            .iter()
            .any(|d| d.starts_with("SCAN primary_") || d.starts_with("SCAN m")),
        "{plan:#?}"
    );
}
