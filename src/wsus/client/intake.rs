//! Where every client report enters the node: kept for the primary first
//! (on a follower, `outbox`), then stored here. A follower's reports,
//! forwarded, are stored on the primary by the same [`ClientServices::apply`]
//! as its own clients' reports.

use super::outbox::{ClientReport, ForwardBatch};
use super::{ClientError, ClientServices};

impl ClientServices {
    /// Takes one report of a client of this node; how many new events it held.
    pub(crate) fn take(&self, report: ClientReport) -> Result<usize, ClientError> {
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
    fn apply(&self, report: &ClientReport) -> Result<usize, ClientError> {
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
                Ok(0)
            }
            ClientReport::Scanned {
                id,
                target_group,
                address,
                at,
            } => {
                self.fleet.scanned(id, target_group, *address, *at)?;
                Ok(0)
            }
            ClientReport::Events { id, events, at } => {
                let events: Vec<_> = events.iter().map(super::reporting::event).collect();
                Ok(self.fleet.report(id, &events, *at)?)
            }
        }
    }
}
