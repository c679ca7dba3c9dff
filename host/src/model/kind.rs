//! Which sync runs, and what a run record says it was.

use serde::{Deserialize, Serialize};

/// Which sync to run: what the scheduler queues, the CLI asks for and the runner does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncKind {
    /// The devices that changed since the last successful run; a full sync when there is none.
    Quick,
    /// Everything, plus the organization settings. Ordered after `Quick`: merging two queued
    /// triggers keeps the larger.
    Full,
}

impl SyncKind {
    /// The spelling in the API, the metrics and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Quick => "quick",
            SyncKind::Full => "full",
        }
    }
}

/// What a recorded run was: a sync of a [`SyncKind`], or a rehearsal (the plugin contract's
/// `sync-kind` has the same three cases). Kept apart from [`SyncKind`] because nothing queues or
/// asks for a rehearsal as a sync: `what-if` is only ever a run's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// The devices that changed since the last run.
    Quick,
    /// Every device, plus the organization settings.
    Full,
    /// A rehearsal: planned and recorded, nothing applied.
    WhatIf,
}

impl RunKind {
    /// Every kind, in declaration order.
    pub const ALL: [RunKind; 3] = [RunKind::Quick, RunKind::Full, RunKind::WhatIf];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Quick => "quick",
            RunKind::Full => "full",
            RunKind::WhatIf => "what-if",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl From<SyncKind> for RunKind {
    fn from(kind: SyncKind) -> Self {
        match kind {
            SyncKind::Quick => RunKind::Quick,
            SyncKind::Full => RunKind::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_match_serde() {
        for kind in RunKind::ALL {
            assert_eq!(RunKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
        for kind in [SyncKind::Quick, SyncKind::Full] {
            assert_eq!(RunKind::from(kind).as_str(), kind.as_str());
        }
        assert!(SyncKind::Quick < SyncKind::Full);
    }
}
