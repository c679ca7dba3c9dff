//! Decide: the devices go through one pinned access-policy version in batches.
//!
//! A batch the plugin fails (trap, deadline, memory, a bad answer) decides nothing: its devices
//! keep their current state on Exchange and their stored verdict, and the run records the
//! error. The connector never blocks because a policy failed.
//!
//! Wasm calls are synchronous and CPU-bound, so the batches run on the blocking pool, never on
//! the async workers that drive the HTTP clients.

use std::ops::Range;
use std::sync::Arc;

use super::progress::Counter;
use crate::plugin::{AccessPolicyPlugin, PluginErrorKind, types};

/// Devices per `decide` call: large enough that instantiation is noise next to evaluation,
/// small enough that a failing batch leaves few devices undecided.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// A batch the plugin failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// Index of the batch's first device in the input.
    pub first: usize,
    /// How many devices it held.
    pub len: usize,
    /// The plugin error.
    pub error: String,
    /// Its kind, for `/metrics`.
    pub kind: PluginErrorKind,
}

/// The policy's answers, one per input device (`None`: its batch failed).
#[derive(Debug, Default)]
pub struct Decisions {
    pub decisions: Vec<Option<types::Decision>>,
    pub failures: Vec<BatchFailure>,
}

impl Decisions {
    /// How many devices got no decision.
    pub fn undecided(&self) -> usize {
        self.failures.iter().map(|f| f.len).sum()
    }
}

/// Runs `devices` through `plugin` in batches of `batch_size`, adding each batch's devices to
/// `decided` (decided or not) once it is through.
pub async fn decide(
    plugin: Arc<AccessPolicyPlugin>,
    info: types::SyncInfo,
    devices: Vec<types::DeviceContext>,
    batch_size: usize,
    decided: Counter,
) -> Decisions {
    let count = devices.len();
    let mut devices = devices.into_iter();
    decide_built(plugin, info, count, batch_size, decided, move |batch| {
        devices.by_ref().take(batch.len()).collect()
    })
    .await
}

/// Runs `count` devices through `plugin` in batches of `batch_size`, building each batch's
/// contexts (`build` gets the batch's device indices) only when that batch is decided, so
/// that no more than one batch of contexts is alive at a time. Each batch's devices count in
/// `decided` once it is through.
pub async fn decide_built(
    plugin: Arc<AccessPolicyPlugin>,
    info: types::SyncInfo,
    count: usize,
    batch_size: usize,
    decided: Counter,
    mut build: impl FnMut(Range<usize>) -> Vec<types::DeviceContext> + Send + 'static,
) -> Decisions {
    let batch_size = batch_size.max(1);
    tokio::task::spawn_blocking(move || {
        let mut out = Decisions {
            decisions: Vec::with_capacity(count),
            failures: Vec::new(),
        };
        for first in (0..count).step_by(batch_size) {
            let batch = build(first..count.min(first + batch_size));
            match plugin.decide(&info, &batch) {
                Ok(verdicts) => {
                    for line in &verdicts.log {
                        tracing::debug!(plugin = %plugin.meta.name, "plugin log: {line:?}");
                    }
                    out.decisions
                        .extend(verdicts.decisions.into_iter().map(Some));
                }
                Err(e) => {
                    tracing::warn!(
                        plugin = %plugin.meta.name,
                        digest = %plugin.meta.digest.short(),
                        devices = batch.len(),
                        "a policy batch failed; its devices keep their state: {e}"
                    );
                    out.failures.push(BatchFailure {
                        first,
                        len: batch.len(),
                        error: e.to_string(),
                        kind: e.kind(),
                    });
                    out.decisions.extend(batch.iter().map(|_| None));
                }
            }
            decided.add(batch.len() as u64);
        }
        out
    })
    .await
    .expect("the decide task does not panic")
}
