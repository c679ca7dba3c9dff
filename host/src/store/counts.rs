//! Figures over a whole organization, for the status page and `/metrics`.

use super::{OrgId, Store, StoreError, VerdictCounts};
use crate::sync::Verdict;

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

    #[test]
    fn an_empty_organization_counts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        assert_eq!(store.verdict_counts(org).unwrap(), VerdictCounts::default());
    }
}
