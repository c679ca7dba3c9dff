//! Counting progress from deep inside the Exchange and Graph clients without their knowing
//! who watches: the stage that awaits a listing or a batch of commands puts a [`Counter`] in a
//! task-local ([`count_pages`], [`count_commands`]); the clients add to whichever counter the
//! awaiting task set, if any ([`page_listed`], [`command_done`]). A call made outside a
//! counting scope counts nothing.
//!
//! The counter is handed down by the stage (the scope it opens), so the clients depend on this
//! ground-floor type only, never on the sync that reads it (`sync::progress` reports it).
//! Threading a counter through every client call instead would put a parameter on every
//! method the sync and the CLI call, for a count.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Items a stage completed; cheap to clone and to add to from any thread.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

tokio::task_local! {
    static PAGES: Option<Counter>;
    static COMMANDS: Option<Counter>;
}

/// Counts a page of a listing for the stage awaiting it (the Exchange and Graph clients call it).
pub fn page_listed() {
    let _ = PAGES.try_with(|c| c.as_ref().map(|c| c.add(1)));
}

/// Counts a command Exchange answered (or that failed for good) for the stage awaiting it.
pub fn command_done() {
    let _ = COMMANDS.try_with(|c| c.as_ref().map(|c| c.add(1)));
}

/// `future`, with the page counter of the task that creates it: a task spawned to list pages
/// on a stage's behalf counts for that stage.
pub fn inherit_pages<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let counter = PAGES.try_with(Clone::clone).ok().flatten();
    PAGES.scope(counter, future)
}

/// `future`, with the command counter of the task that creates it: a task spawned to send a
/// chunk of commands on a stage's behalf counts for that stage.
pub fn inherit_commands<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let counter = COMMANDS.try_with(Clone::clone).ok().flatten();
    COMMANDS.scope(counter, future)
}

/// Runs `future` with the pages it lists counted in `counter`.
pub async fn count_pages<F: Future>(counter: &Counter, future: F) -> F::Output {
    PAGES.scope(Some(counter.clone()), future).await
}

/// Runs `future` with the commands it runs counted in `counter`.
pub async fn count_commands<F: Future>(counter: &Counter, future: F) -> F::Output {
    COMMANDS.scope(Some(counter.clone()), future).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_count_only_inside_a_counting_stage_and_in_tasks_it_spawns() {
        page_listed();
        let counter = Counter::default();
        count_pages(&counter, async {
            page_listed();
            tokio::spawn(inherit_pages(async { page_listed() }))
                .await
                .unwrap();
            // A task spawned without inheriting counts for nobody.
            tokio::spawn(async { page_listed() }).await.unwrap();
            command_done();
        })
        .await;
        page_listed();
        assert_eq!(counter.get(), 2);
        let commands = Counter::default();
        count_commands(&commands, async { command_done() }).await;
        assert_eq!(commands.get(), 1);
    }
}
