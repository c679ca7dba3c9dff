//! Decide: the devices go through one pinned access-policy version in batches.
//!
//! A batch the plugin fails (trap, deadline, memory, a bad answer) decides nothing: its devices
//! keep their current state on Exchange and their stored verdict, and the run records the
//! error. The connector never blocks because a policy failed.
//!
//! Wasm calls are synchronous and CPU-bound, so the batches run on the blocking pool, never on
//! the async workers that drive the HTTP clients. A [`Decider`] takes batches as they come, so a
//! sync decides the devices it has listed while it lists the rest.

use std::sync::Arc;

use tokio::sync::mpsc;

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
    let decider = Decider::start(plugin, info, decided);
    let mut devices = devices.into_iter().peekable();
    while devices.peek().is_some() {
        let batch = devices.by_ref().take(batch_size.max(1)).collect();
        decider.decide(batch).await;
    }
    decider.finish().await
}

/// Batches waiting for the plugin: enough that it never waits for the next one, few enough
/// that no more than a few batches of contexts are alive at a time.
const QUEUED_BATCHES: usize = 2;

/// The pinned policy, deciding batches on the blocking pool as they are handed to it, in
/// order: a full sync decides each page of the device listing while the next one is fetched.
pub struct Decider {
    batches: mpsc::Sender<Vec<types::DeviceContext>>,
    task: tokio::task::JoinHandle<Decisions>,
}

impl Decider {
    /// Starts deciding with `plugin`; each batch's devices count in `decided` once it is
    /// through.
    pub fn start(plugin: Arc<AccessPolicyPlugin>, info: types::SyncInfo, decided: Counter) -> Self {
        let (batches, mut queue) = mpsc::channel::<Vec<types::DeviceContext>>(QUEUED_BATCHES);
        let task = tokio::task::spawn_blocking(move || {
            let mut out = Decisions::default();
            while let Some(batch) = queue.blocking_recv() {
                decide_batch(&plugin, &info, &batch, &mut out);
                decided.add(batch.len() as u64);
            }
            out
        });
        Decider { batches, task }
    }

    /// Queues the next batch (the devices after the previous batch's), waiting while
    /// [`QUEUED_BATCHES`] are queued already.
    pub async fn decide(&self, batch: Vec<types::DeviceContext>) {
        if batch.is_empty() {
            return;
        }
        self.batches
            .send(batch)
            .await
            .expect("the decide task runs until its queue closes");
    }

    /// The decisions of every device queued, in their order, once the last batch is through.
    pub async fn finish(self) -> Decisions {
        drop(self.batches);
        self.task.await.expect("the decide task does not panic")
    }
}

/// Decides `batch`, the devices after those already in `out`, and adds the decisions to `out`.
fn decide_batch(
    plugin: &AccessPolicyPlugin,
    info: &types::SyncInfo,
    batch: &[types::DeviceContext],
    out: &mut Decisions,
) {
    match plugin.decide(info, batch) {
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
                first: out.decisions.len(),
                len: batch.len(),
                error: e.to_string(),
                kind: e.kind(),
            });
            out.decisions.extend(batch.iter().map(|_| None));
        }
    }
}
