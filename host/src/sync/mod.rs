//! The sync engine: discover → match → decide → plan → apply → record.
//!
//! This module holds the stages that are pure functions of their inputs, so each is tested on
//! its own:
//!
//! * [`inventory`]: what discover (Exchange) and fetch (Graph) produce, independent of the
//!   clients' own models.
//! * [`matching`]: joins partnerships to Intune records and users; builds the policy's input.
//! * [`plan`](mod@plan): the minimal `Set-CASMailbox` commands for a set of verdicts, and the blast-radius
//!   guard.
//! * [`settings`]: the sync's settings and their defaults.
//!
//! What the sync remembers between runs (verdicts, runs, the command journal, the audit trail)
//! lives in [`crate::store`].

pub mod inventory;
pub mod matching;
pub mod plan;
pub mod settings;

pub use inventory::{
    AccessLevel, AccessState, DeviceKey, DirectoryUser, ExchangeDevice, Inventory, Mailbox,
    ManagedDevice, Verdict,
};
pub use matching::{MatchReport, Matched, MatchedDevice, Retired, match_inventory};
pub use plan::{Command, Decided, Plan, PlannedCommand, plan};
pub use settings::{RestrictionLimit, SyncSettings};
