//! Figures over a whole organization, for the status page and `/metrics`.

use super::{OrgId, Store, StoreError, VerdictCounts};
use crate::model::Verdict;

impl Store {
    /// The organization's devices per current verdict; devices never decided are `undecided`.
    /// One grouped query: the status page polls it.
    pub fn verdict_counts(&self, org: OrgId) -> Result<VerdictCounts, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT verdict, count(*) FROM devices WHERE org_id = ?1 GROUP BY verdict",
            )
            .map_err(self.sql("counting verdicts"))?;
        let rows = stmt
            .query_map([org.0], |row| {
                Ok((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(self.sql("counting verdicts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql("counting verdicts"))?;
        let mut counts = VerdictCounts::default();
        for (verdict, n) in rows {
            let n = n as u64;
            match verdict.as_deref().map(Verdict::parse) {
                Some(Some(Verdict::Allow)) => counts.allow += n,
                Some(Some(Verdict::Block)) => counts.block += n,
                Some(Some(Verdict::Quarantine)) => counts.quarantine += n,
                Some(Some(Verdict::Exempt)) => counts.exempt += n,
                None => counts.undecided += n,
                Some(None) => {
                    return Err(StoreError::Decode {
                        what: "verdict",
                        detail: verdict.unwrap_or_default(),
                    });
                }
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::ExchangeDevice;
    use crate::model::RunKind;
    use crate::store::{DecisionBatch, DecisionRecord, DeviceView};

    #[test]
    fn devices_count_by_current_verdict_and_never_decided_ones_as_undecided() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let other = store.organization("Fabrikam", 1).unwrap();
        let devices: Vec<ExchangeDevice> = (0..5)
            .map(|n| ExchangeDevice {
                device_id: format!("D{n}"),
                identity: format!("alice\\ExchangeActiveSyncDevices\\D{n}"),
                mailbox: Some("alice".into()),
                ..ExchangeDevice::default()
            })
            .collect();
        let views: Vec<DeviceView<'_>> = devices
            .iter()
            .map(|exchange| DeviceView {
                exchange,
                managed: None,
            })
            .collect();
        store.save_inventory(org, &views, 2).unwrap();
        store.save_inventory(other, &views[..1], 2).unwrap();
        let run = store.start_run(org, RunKind::Full, Some("d"), 3).unwrap();
        let decide = |n: usize, verdict| DecisionRecord {
            key: devices[n].key(),
            verdict,
            reason: "r".into(),
            notify: false,
        };
        let decisions = [
            decide(0, Verdict::Allow),
            decide(1, Verdict::Allow),
            decide(2, Verdict::Quarantine),
        ];
        store
            .record_decisions(&DecisionBatch {
                run,
                plugin_digest: "d",
                decided_at: 4,
                decisions: &decisions,
                commands: &[],
                held: false,
                shown: &[],
            })
            .unwrap();
        let counts = store.verdict_counts(org).unwrap();
        assert_eq!(
            counts,
            VerdictCounts {
                allow: 2,
                quarantine: 1,
                undecided: 2,
                ..VerdictCounts::default()
            }
        );
        assert_eq!(
            store.verdict_counts(other).unwrap(),
            VerdictCounts {
                undecided: 1,
                ..VerdictCounts::default()
            }
        );
    }

    #[test]
    fn an_empty_organization_counts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        assert_eq!(store.verdict_counts(org).unwrap(), VerdictCounts::default());
    }
}
