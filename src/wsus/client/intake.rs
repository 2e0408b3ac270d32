//! Where every client report enters the node: kept for the primary first
//! (on a follower, `outbox`), then stored here by the `fleet`. A
//! follower's reports, forwarded, are stored on the primary by the same
//! [`ClientServices::apply`] as its own clients' reports.

use super::outbox::{ClientReport, ForwardBatch};
use super::{reporting, ClientError, ClientServices};

/// What storing a report gives back.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// A scan's: the groups the computer is in (its approvals).
    pub groups: Vec<i64>,
}

impl ClientServices {
    /// Takes one report of a client of this node.
    pub(crate) fn take(&self, report: ClientReport) -> Result<Taken, ClientError> {
        self.outbox.keep(&report)?;
        self.apply(&report)
    }

    /// Applies a follower's batch: once per report, however often it is
    /// sent (and kept for this node's own primary, if it has one). The seq
    /// through which the batch is applied here.
    pub fn apply_forwarded(&self, batch: &ForwardBatch) -> Result<i64, ClientError> {
        self.outbox
            .apply_forwarded(&batch.origin, &batch.reports, |report| {
                self.outbox.keep(report)?;
                self.apply(report).map(drop)
            })
    }

    /// Stores one report.
    fn apply(&self, report: &ClientReport) -> Result<Taken, ClientError> {
        match report {
            ClientReport::Registered {
                id,
                info,
                target_group,
                address,
                at,
            } => {
                let r = crate::fleet::Registration {
                    id: id.clone(),
                    name: info.dns_name.clone(),
                    os: info.os.clone(),
                    os_version: info.os_version.clone(),
                    manufacturer: info.manufacturer.clone(),
                    model: info.model.clone(),
                    target_group: target_group.clone(),
                    address: *address,
                };
                self.fleet.register(&r, *at)?;
                Ok(Taken::default())
            }
            ClientReport::Scanned {
                id,
                target_group,
                address,
                at,
            } => {
                let groups = self.fleet.scanned(id, target_group, *address, *at)?;
                Ok(Taken { groups })
            }
            ClientReport::Events { id, events, at } => {
                let events: Vec<_> = events.iter().map(reporting::event).collect();
                self.fleet.report(id, &events, *at)?;
                Ok(Taken::default())
            }
        }
    }
}
