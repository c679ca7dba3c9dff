//! The sync engine: discover → match → decide → plan → apply → notify → record.
//!
//! This module holds the stages that are pure functions of their inputs, so each is tested on
//! its own:
//!
//! * [`matching`]: joins partnerships to Intune records and users; builds the policy's input.
//! * [`plan`](mod@plan): the minimal `Set-CASMailbox` commands for a set of verdicts, and the blast-radius
//!   guard.
//!
//! And the stages that talk to the services, with [`runner`] tying all of them together:
//!
//! * [`discover`]: reads Exchange and Intune into an [`Inventory`](crate::model::Inventory)
//!   (full, or the changes since the quick-sync cursor).
//! * [`decide`](mod@decide): the pinned policy version, batch by batch; a failed batch decides nothing.
//! * [`save`]: the inventory into the store, page by page while the listing goes on.
//! * [`dry_run`]: what a dry run reports: every device whose access a real run would change.
//! * [`apply`](mod@apply): journaled commands through the Exchange client's parallel pool.
//! * [`notices`]: which devices get a notice, and the delivery of the outbox's due notices.
//! * [`progress`]: how far a running stage got, counted where items complete.
//! * [`runner`]: one run of one organization, from discovery to the finished run record.
//!
//! What the stages hand each other (the inventory, verdicts, commands, settings) is the ground
//! floor's vocabulary, [`crate::model`], which the store and the clients share without
//! depending on the sync.
//!
//! What the sync remembers between runs (verdicts, runs, the command journal, the audit trail)
//! lives in [`crate::store`].

pub mod apply;
pub mod decide;
pub mod discover;
pub mod dry_run;
pub mod matching;
pub mod notices;
pub mod plan;
pub mod progress;
pub mod runner;
pub mod save;
pub mod statistics;
pub mod whatif;

pub use matching::{MatchReport, Matched, MatchedDevice, Retired, match_inventory};
pub use notices::{NoticeReport, NoticeStage, TemplateSource};
pub use plan::{Decided, Plan, plan};
pub use runner::{OrgSync, Summary, SyncError};

use std::sync::Arc;

use crate::store::{Store, StoreError};

/// Runs the store call `f` on the blocking pool: the store's calls wait on SQLite, which must
/// not hold up the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .expect("a store task does not panic")
}
pub use whatif::{Diff, DiffError, DirectorySource, VerdictChange};
