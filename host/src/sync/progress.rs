//! Progress within a sync stage: how many pages discovery listed, devices the policy decided,
//! commands Exchange answered, told to whoever watches the run (the daemon's status, the CLI's
//! progress bar).
//!
//! Items are counted where they complete, with one relaxed atomic add each ([`Counter`]); the
//! runner's own task reads the count on a timer ([`stage`]) and calls the reporter at most every
//! [`REPORT_EVERY`], and only when the count moved. So the cost of a report does not grow with the
//! items, and a slow reporter (a terminal, a mutex) never slows the stage.
//!
//! Pages and commands complete deep inside the Exchange and Graph clients, which are shared by
//! everything an organization does: a stage hands its counter down to them in a task-local
//! scope ([`count_pages`], [`count_commands`]), defined on the ground floor
//! ([`crate::model::progress`]) so that the clients never import the sync.

use std::future::Future;
use std::time::Duration;

/// Where a sync reports how far it got: the stage, items done in it, and items in it when known.
pub type Report<'a> = &'a (dyn Fn(&str, u64, Option<u64>) + Sync);

/// The stages a sync reports, in order, as the reporter receives them.
pub const DISCOVER: &str = "discover";
pub const DECIDE: &str = "decide";
pub const PLAN: &str = "plan and record";
pub const APPLY: &str = "apply";

/// What a stage counts, for display (`apply 1200/37562 commands`).
pub fn unit(stage: &str) -> &'static str {
    match stage {
        DISCOVER => "pages",
        DECIDE => "devices",
        APPLY => "commands",
        _ => "",
    }
}

/// At most this often a stage's count goes to the reporter: fine for a human watching, and a
/// handful of calls a second whatever the stage's size.
pub const REPORT_EVERY: Duration = Duration::from_millis(200);

pub use crate::model::progress::{
    Counter, command_done, count_commands, count_pages, inherit_commands, inherit_pages,
    page_listed,
};

/// Runs the stage `name` (`total` items when known) to completion, reporting `counter` as it
/// moves: at the start, then at most every [`REPORT_EVERY`], then once more at the end when it
/// moved since the last report.
pub async fn stage<F: Future>(
    report: Report<'_>,
    name: &str,
    total: Option<u64>,
    counter: &Counter,
    future: F,
) -> F::Output {
    let mut last = counter.get();
    report(name, last, total);
    let mut future = std::pin::pin!(future);
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            out = &mut future => {
                let done = counter.get();
                if done != last {
                    report(name, done, total);
                }
                return out;
            }
            _ = ticks.tick() => {
                let done = counter.get();
                if done != last {
                    report(name, done, total);
                    last = done;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test(start_paused = true)]
    async fn a_stage_reports_its_count_throttled_and_its_end() {
        let seen = Mutex::new(Vec::new());
        let report = |stage: &str, done: u64, total: Option<u64>| {
            seen.lock().unwrap().push((stage.to_owned(), done, total));
        };
        let counter = Counter::default();
        let work = async {
            // 1 000 items, one every millisecond: a report per item would be 1 000 calls.
            for _ in 0..1_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.add(1);
            }
        };
        stage(&report, APPLY, Some(1_000), &counter, work).await;
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.first(), Some(&(APPLY.to_owned(), 0, Some(1_000))));
        assert_eq!(seen.last(), Some(&(APPLY.to_owned(), 1_000, Some(1_000))));
        // One second of work: the start, five ticks, the end at most.
        assert!(seen.len() <= 7, "{seen:?}");
        assert!(seen.len() >= 4, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{seen:?}");
    }
}
