//! The state of an update on a computer, as WSUS reports it, and how what
//! a client sends moves it. Pure: `report` applies it to the tables.
//!
//! What clients send (facts, from [MS-WUSP] `ReportEventBatch`, WSUS's
//! `WsusEventId` table, and what native Windows Update Agents were seen to
//! send to a real WSUS):
//!
//! - after a scan, event 156 ("reporting client status"), no update named
//!   (the zero GUID), with `MiscData` strings `U=<ids>` (applicable, not
//!   installed) and `V=<ids>` (installed), update ids joined by `;`. It is
//!   the scan's result: every update it lists neither way is not
//!   applicable to the computer;
//! - 161 download failed, 162 download succeeded;
//! - 182 installation failed (`Win32HResult`: the error), 183 installation
//!   succeeded, 184 succeeded with the restart done, 201 installation
//!   pending a restart (`Win32HResult` `0x00240005`, `WU_S_REBOOT_REQUIRED`);
//! - 197 and 199 installed at shutdown, 198 failed at shutdown, 200 timed
//!   out at shutdown.
//!
//! Anything else (147 scan done, 181 installation started, cancellations,
//! uninstalls) is kept among the computer's events and moves no state.

use serde::{Deserialize, Serialize};

/// The states of [`IUpdateInstallationState`](https://learn.microsoft.com/previous-versions/windows/desktop/ms752934(v=vs.85)),
/// stored as their number. `Unknown` and `NotApplicable` are never stored:
/// a computer that never sent a status report knows nothing of any update,
/// and one that did has no row for an update it found not applicable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Unknown = 0,
    NotApplicable = 1,
    Needed = 2,
    Downloaded = 3,
    Failed = 4,
    InstalledPendingReboot = 5,
    Installed = 6,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Unknown,
        State::NotApplicable,
        State::Needed,
        State::Downloaded,
        State::Failed,
        State::InstalledPendingReboot,
        State::Installed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::NotApplicable => "not-applicable",
            State::Needed => "needed",
            State::Downloaded => "downloaded",
            State::Failed => "failed",
            State::InstalledPendingReboot => "installed-pending-reboot",
            State::Installed => "installed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn from_i64(n: i64) -> State {
        State::ALL
            .get(n as usize)
            .copied()
            .unwrap_or(State::Unknown)
    }

    /// Applicable and not installed yet: what "needs" counts.
    pub fn is_needed(self) -> bool {
        matches!(
            self,
            State::Needed | State::Downloaded | State::Failed | State::InstalledPendingReboot
        )
    }
}

/// `EventID`s that move a state.
pub mod event_ids {
    pub const STATUS: u32 = 156;
    pub const DOWNLOAD_FAILED: u32 = 161;
    pub const DOWNLOADED: u32 = 162;
    pub const INSTALL_FAILED: u32 = 182;
    pub const INSTALLED: u32 = 183;
    pub const INSTALLED_WITH_REBOOT: u32 = 184;
    pub const INSTALLED_AT_SHUTDOWN: u32 = 197;
    pub const FAILED_AT_SHUTDOWN: u32 = 198;
    pub const INSTALLED_AT_SHUTDOWN_WITH_REBOOT: u32 = 199;
    pub const TIMED_OUT_AT_SHUTDOWN: u32 = 200;
    pub const PENDING_REBOOT: u32 = 201;
}

/// Most ids one status report may list (both lists together).
pub const MAX_LISTED: usize = 50_000;

/// One reported event, as `wsus::client` read it.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub event_id: u32,
    /// The update it names, lowercase (empty or the zero GUID: none).
    pub update_id: String,
    /// `Win32HResult`, as an HRESULT.
    pub hresult: i32,
    /// `ExtendedData/MiscData` strings.
    pub misc: Vec<String>,
    /// The text of `EventID` and `Win32HResult` as sent, and the whole
    /// event as JSON: kept among the computer's events.
    pub event_id_text: String,
    pub hresult_text: String,
    pub raw: serde_json::Value,
    /// `BasicData/EventInstanceID`, the GUID the client gives each event
    /// (its 16 bytes as written): an event sent again (a batch whose
    /// acknowledgement was lost) is stored once. `None`: not sent, or not
    /// a GUID, or the zero GUID; such events are stored every time.
    pub instance: Option<[u8; 16]>,
}

/// What an event does to the states of the computer's updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// One update moves (`error`: the failure's HRESULT).
    One {
        update_id: String,
        state: State,
        error: Option<i32>,
    },
    /// A status report: the whole applicable set.
    Status {
        needed: Vec<String>,
        installed: Vec<String>,
    },
    None,
}

const ZERO_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// What `e` does.
pub fn effect(e: &Event) -> Effect {
    use event_ids::*;
    if e.event_id == STATUS {
        return status_lists(&e.misc);
    }
    if e.update_id.is_empty() || e.update_id == ZERO_GUID {
        return Effect::None;
    }
    let (state, error) = match e.event_id {
        DOWNLOADED => (State::Downloaded, None),
        DOWNLOAD_FAILED | INSTALL_FAILED | FAILED_AT_SHUTDOWN | TIMED_OUT_AT_SHUTDOWN => {
            (State::Failed, Some(e.hresult))
        }
        INSTALLED
        | INSTALLED_WITH_REBOOT
        | INSTALLED_AT_SHUTDOWN
        | INSTALLED_AT_SHUTDOWN_WITH_REBOOT => (State::Installed, None),
        PENDING_REBOOT => (State::InstalledPendingReboot, None),
        _ => return Effect::None,
    };
    Effect::One {
        update_id: e.update_id.clone(),
        state,
        error,
    }
}

/// The `U=` and `V=` lists of a status event, bounded; ids that are not
/// GUIDs are dropped.
fn status_lists(misc: &[String]) -> Effect {
    let mut needed = Vec::new();
    let mut installed = Vec::new();
    let mut room = MAX_LISTED;
    for m in misc {
        let (list, ids) = match m.split_once('=') {
            Some(("U", ids)) => (&mut needed, ids),
            Some(("V", ids)) => (&mut installed, ids),
            _ => continue,
        };
        for id in ids.split(';').map(str::trim).filter(|i| is_guid(i)) {
            if room == 0 {
                break;
            }
            room -= 1;
            list.push(id.to_ascii_lowercase());
        }
    }
    Effect::Status { needed, installed }
}

/// `8-4-4-4-12` hex digits.
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The state a computer's update takes when `incoming` arrives over
/// `current`. Events are facts in the order they happened: the latest
/// wins, except that a download does not undo an installation, and a
/// status report's "not installed" keeps the finer state (downloaded,
/// failed, pending a restart) it already has.
pub fn next(current: Option<State>, incoming: State, from_status_report: bool) -> State {
    use State::*;
    match (current, incoming) {
        (Some(Installed | InstalledPendingReboot), Downloaded) => current.unwrap_or(incoming),
        (Some(Downloaded | Failed | InstalledPendingReboot), Needed) if from_status_report => {
            current.unwrap_or(incoming)
        }
        _ => incoming,
    }
}

/// `0x80240017`, as HRESULTs are written.
pub fn hresult_hex(h: i32) -> String {
    format!("0x{:08X}", h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u32, update: &str, hresult: i32, misc: &[&str]) -> Event {
        Event {
            event_id: id,
            update_id: update.into(),
            hresult,
            misc: misc.iter().map(|s| s.to_string()).collect(),
            ..Event::default()
        }
    }

    const U1: &str = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe";
    const U2: &str = "266f6222-c89d-43f2-9f8a-69340271e677";

    #[test]
    fn install_events_set_one_update() {
        let failed = effect(&event(182, U1, 0x8024_0017_u32 as i32, &[]));
        assert_eq!(
            failed,
            Effect::One {
                update_id: U1.into(),
                state: State::Failed,
                error: Some(0x8024_0017_u32 as i32)
            }
        );
        for (id, state) in [
            (162, State::Downloaded),
            (183, State::Installed),
            (184, State::Installed),
            (201, State::InstalledPendingReboot),
        ] {
            assert!(
                matches!(effect(&event(id, U1, 0, &[])), Effect::One { state: s, .. } if s == state),
                "{id}"
            );
        }
        // Started, scan done, an event with no update: nothing moves.
        assert_eq!(effect(&event(181, U1, 0, &[])), Effect::None);
        assert_eq!(effect(&event(183, ZERO_GUID, 0, &[])), Effect::None);
        assert_eq!(effect(&event(183, "", 0, &[])), Effect::None);
    }

    #[test]
    fn a_status_report_lists_needed_and_installed_updates() {
        let e = event(
            156,
            ZERO_GUID,
            0,
            &[
                &format!("U={};{}", U1.to_uppercase(), "not-a-guid"),
                &format!("V={U2}"),
                "AppName=AutomaticUpdates",
            ],
        );
        assert_eq!(
            effect(&e),
            Effect::Status {
                needed: vec![U1.into()],
                installed: vec![U2.into()]
            }
        );
        let many = format!("U={}", vec![U1; MAX_LISTED + 5].join(";"));
        let Effect::Status { needed, .. } = effect(&event(156, "", 0, &[&many])) else {
            panic!()
        };
        assert_eq!(needed.len(), MAX_LISTED);
    }

    #[test]
    fn the_latest_event_wins_but_finer_states_survive_a_status_report() {
        use State::*;
        assert_eq!(next(Some(Failed), Installed, false), Installed);
        assert_eq!(next(Some(Installed), Failed, false), Failed);
        assert_eq!(next(Some(Installed), Downloaded, false), Installed);
        assert_eq!(next(Some(Failed), Needed, true), Failed);
        assert_eq!(
            next(Some(InstalledPendingReboot), Needed, true),
            InstalledPendingReboot
        );
        assert_eq!(
            next(Some(InstalledPendingReboot), Installed, true),
            Installed
        );
        assert_eq!(next(None, Needed, true), Needed);
        assert_eq!(next(Some(Installed), Needed, true), Needed);
    }

    #[test]
    fn states_round_trip_as_text_and_numbers() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(State::from_i64(s as i64), s);
        }
        assert_eq!(hresult_hex(0x8024_0017_u32 as i32), "0x80240017");
    }
}
