//! Apply: runs journaled commands through the Exchange client's parallel pool and records each
//! outcome in the journal.
//!
//! A command is in the journal (`planned`) before it is sent, in the transaction that records
//! the verdicts of the devices it changes: a sync records its plan chunk by chunk
//! ([`record_in_chunks`]) and apply starts on a chunk as soon as it is committed, so the
//! SQLite writes overlap the network instead of preceding it. Each batch is marked `sent`
//! before it goes out, so a crash leaves `planned` or `sent` entries that
//! [`crate::store::Store::recover`] abandons and the next sync re-plans from fresh Exchange
//! state.
//!
//! Order: the mailbox edits and partnership removals first, the organization default last, so
//! that the devices a plan allows are on their allow lists before the default turns to
//! Quarantine.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::blocking;
use super::plan::{
    Command, NEW_ACCESS_RULE, PlanStep, PlannedCommand, REMOVE_ACCESS_RULE, REMOVE_MOBILE_DEVICE,
    SET_CAS_MAILBOX, SET_ORG_SETTINGS,
};
use super::progress;
use crate::exchange::{Cmdlet, ExchangeClient, ExchangeError};
use crate::model::inventory::DeviceKey;
use crate::store::{
    CommandId, DecisionBatch, DecisionRecord, Enforces, NoticeBatch, NoticeRequest, RunId, Store,
    StoreError,
};
use crate::timestamp::unix_now;

/// What applying a plan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Commands sent to Exchange.
    pub sent: u64,
    /// Commands Exchange confirmed.
    pub done: u64,
    /// Commands that failed, with the error.
    pub failed: Vec<(CommandId, String)>,
}

/// Runs `group` chunk by chunk through a [`Pipeline`], each command as journaled.
async fn run_group(
    exchange: &ExchangeClient,
    store: &Arc<Store>,
    group: Vec<Journaled>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    let mut pipeline = Pipeline::<Command>::default();
    let mut group = group.into_iter().peekable();
    while group.peek().is_some() {
        let chunk = group.by_ref().take(CHUNK);
        pipeline
            .push(exchange, store, chunk.collect(), applied)
            .await?;
    }
    pipeline.drain(store, applied).await
}

/// Commands marked `sent` at once: one journal transaction per chunk instead of per command.
const CHUNK: usize = 500;

/// Chunks sent but not yet confirmed: a crash leaves at most this many chunks of commands of
/// unknown outcome (`sent`), which the next sync re-plans from Exchange's state.
const CHUNKS_IN_FLIGHT: usize = 2;

type ChunkResults<C> = Vec<Result<Vec<<C as Cmdlet>::Output>, ExchangeError>>;

/// Chunks of one cmdlet on their way: the next chunk is journaled `sent` and queued behind the
/// client's concurrency bound while the current one finishes, so the bound stays full across
/// chunk ends instead of draining at each one.
struct Pipeline<C: Cmdlet> {
    in_flight: VecDeque<(Vec<Confirming>, ChunkTask<C>)>,
}

/// A chunk's commands running as a task of their own, which stops when dropped: a sync
/// cancelled (the daemon stopping) sends nothing more, and cannot reopen a remote PowerShell
/// session the shutdown closed. Its `sent` entries are then of unknown outcome, as after a
/// crash, and the next sync re-plans them from Exchange's state.
struct ChunkTask<C: Cmdlet>(tokio::task::JoinHandle<ChunkResults<C>>);

impl<C: Cmdlet> Drop for ChunkTask<C> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A command sent, with what it enforces once confirmed.
type Confirming = (CommandId, Option<Enforces>);

impl<C: Cmdlet> Default for Pipeline<C> {
    fn default() -> Self {
        Self {
            in_flight: VecDeque::new(),
        }
    }
}

impl<C: Cmdlet + 'static> Pipeline<C> {
    /// Journals `chunk` as `sent` (before anything goes out) and starts sending it, first
    /// waiting for the oldest chunk when [`CHUNKS_IN_FLIGHT`] are going.
    async fn push(
        &mut self,
        exchange: &ExchangeClient,
        store: &Arc<Store>,
        chunk: Vec<(CommandId, C, Option<Enforces>)>,
        applied: &mut Applied,
    ) -> Result<(), StoreError> {
        if self.in_flight.len() >= CHUNKS_IN_FLIGHT {
            self.finish_oldest(store, applied).await?;
        }
        let mut sent_ids = Vec::with_capacity(chunk.len());
        let mut confirming = Vec::with_capacity(chunk.len());
        let mut cmdlets = Vec::with_capacity(chunk.len());
        for (id, cmdlet, enforces) in chunk {
            sent_ids.push(id);
            confirming.push((id, enforces));
            cmdlets.push(cmdlet);
        }
        let count = sent_ids.len() as u64;
        blocking(store, move |s| s.mark_sent(&sent_ids, unix_now())).await?;
        applied.sent += count;
        let exchange = exchange.clone();
        // The chunk's answers count for the apply stage that spawns it.
        let running = tokio::spawn(progress::inherit_commands(async move {
            exchange.run_all(cmdlets).await
        }));
        self.in_flight.push_back((confirming, ChunkTask(running)));
        Ok(())
    }

    async fn finish_oldest(
        &mut self,
        store: &Arc<Store>,
        applied: &mut Applied,
    ) -> Result<(), StoreError> {
        if let Some((sent, mut running)) = self.in_flight.pop_front() {
            let results = (&mut running.0)
                .await
                .expect("a command chunk does not panic");
            finish_chunk(store, sent, results, applied).await?;
        }
        Ok(())
    }

    /// Waits for every chunk sent.
    async fn drain(&mut self, store: &Arc<Store>, applied: &mut Applied) -> Result<(), StoreError> {
        while !self.in_flight.is_empty() {
            self.finish_oldest(store, applied).await?;
        }
        Ok(())
    }
}

/// Journals each command of a chunk `done` or `failed` from its result.
async fn finish_chunk<T>(
    store: &Arc<Store>,
    sent: Vec<Confirming>,
    results: Vec<Result<T, ExchangeError>>,
    applied: &mut Applied,
) -> Result<(), StoreError> {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for ((id, enforces), result) in sent.into_iter().zip(results) {
        match result {
            Ok(_) => done.push((id, enforces)),
            // The list already holds what the command adds: a plan approved after Exchange
            // moved on, or a retry of an applied command. The state is the one wanted.
            Err(e) if e.is_repeat_of_applied() => done.push((id, enforces)),
            Err(e) => failed.push((id, describe(&e))),
        }
    }
    applied.done += done.len() as u64;
    let failures = failed.clone();
    blocking(store, move |s| {
        let confirmed: Vec<(CommandId, Option<&Enforces>)> =
            done.iter().map(|(id, e)| (*id, e.as_ref())).collect();
        s.mark_done(&confirmed, unix_now())?;
        for (id, error) in &failures {
            s.mark_failed(*id, error, unix_now())?;
        }
        Ok(())
    })
    .await?;
    applied.failed.extend(failed);
    Ok(())
}

fn describe(e: &ExchangeError) -> String {
    e.to_string()
}

/// Runs `commands` (journaled, in plan order).
pub async fn apply(
    exchange: &ExchangeClient,
    store: &Arc<Store>,
    commands: Vec<Journaled>,
) -> Result<Applied, StoreError> {
    let (send, received) = mpsc::channel(1);
    let _ = send.try_send(commands);
    drop(send);
    apply_received(exchange, store, received).await
}

/// Chunks recorded ahead of apply: enough that apply never waits for the next one, few enough
/// that the recording's transactions come one at a time between apply's own. Recording all of
/// them at once kept the store's connection busy for seconds; apply, waiting to journal its
/// next chunk, let the commands in flight run dry (half a second without a command, at
/// 100 000 devices).
const RECORDED_AHEAD: usize = 2;

/// A journaled command: its journal id, the call, and what it enforces once confirmed (kept
/// from the planned command so that confirming it reads nothing back from the journal).
pub type Journaled = (CommandId, Command, Option<Enforces>);

/// One recorded chunk: its journaled commands, in plan order.
pub type RecordedChunk = Vec<Journaled>;

/// The way from [`record_in_chunks`] to [`apply_received`].
pub fn recorded_chunks() -> (mpsc::Sender<RecordedChunk>, mpsc::Receiver<RecordedChunk>) {
    mpsc::channel(RECORDED_AHEAD)
}

/// Runs the journaled commands `received` in batches (in plan order) until the sender is
/// gone: the mailbox edits as they arrive, the rest once every edit is done.
pub async fn apply_received(
    exchange: &ExchangeClient,
    store: &Arc<Store>,
    mut received: mpsc::Receiver<RecordedChunk>,
) -> Result<Applied, StoreError> {
    let mut edits = Pipeline::default();
    let mut removals = Vec::new();
    let mut org = Vec::new();
    let mut rule_removals = Vec::new();
    let mut new_rules = Vec::new();
    let mut applied = Applied::default();
    while let Some(batch) = received.recv().await {
        let mut batch_edits = Vec::new();
        for journaled in batch {
            let (id, command, _) = &journaled;
            let id = *id;
            match command.cmdlet.as_str() {
                SET_CAS_MAILBOX => batch_edits.push(journaled),
                REMOVE_MOBILE_DEVICE => removals.push(journaled),
                SET_ORG_SETTINGS => org.push(journaled),
                REMOVE_ACCESS_RULE => rule_removals.push(journaled),
                NEW_ACCESS_RULE => new_rules.push(journaled),
                other => {
                    let error = format!("the sync does not run `{other}`");
                    let s = store.clone();
                    tokio::task::spawn_blocking(move || s.mark_failed(id, &error, unix_now()))
                        .await
                        .expect("a store task does not panic")?;
                    applied
                        .failed
                        .push((id, format!("unknown cmdlet `{}`", command.cmdlet)));
                }
            }
        }
        let mut batch_edits = batch_edits.into_iter().peekable();
        while batch_edits.peek().is_some() {
            let chunk = batch_edits.by_ref().take(CHUNK).collect();
            edits.push(exchange, store, chunk, &mut applied).await?;
        }
    }
    edits.drain(store, &mut applied).await?;
    run_group(exchange, store, removals, &mut applied).await?;
    run_group(exchange, store, org, &mut applied).await?;
    // Removals first: a rule whose level changes is removed and created again under its name.
    run_group(exchange, store, rule_removals, &mut applied).await?;
    run_group(exchange, store, new_rules, &mut applied).await?;
    Ok(applied)
}

/// Commands per recording transaction in [`record_in_chunks`]: apply's chunk, so the first
/// chunk goes out after one small transaction.
const RECORD_CHUNK: usize = CHUNK;

/// Decisions per transaction for the devices no command changes.
const UNCHANGED_PER_TRANSACTION: usize = 2000;

/// A run's decisions and plan, to record.
pub struct ToRecord {
    pub run: RunId,
    pub plugin_digest: String,
    pub decided_at: i64,
    pub decisions: Vec<DecisionRecord>,
    /// The plan's commands, in plan order, built as each chunk is recorded.
    pub commands: Vec<PlanStep>,
    pub notices: Vec<NoticeRequest>,
    pub resend_interval_secs: i64,
}

/// Notices a recording enqueued and skipped as recent (see [`crate::store::Recorded`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoticesRecorded {
    pub queued: u64,
    pub deduplicated: u64,
}

/// Records a plan that is not held in transactions of [`RECORD_CHUNK`] commands, each with
/// the verdicts (and notices) of every device its commands change, and hands each chunk's
/// journaled commands to `send` once it is committed (waiting while [`RECORDED_AHEAD`] are
/// not taken yet): no command goes out before its devices' verdicts and its journal entry are
/// stored. Call it on the blocking pool. The verdicts of devices no command changes, and of
/// those the organization default changes, are spread over the chunks after the first (no
/// later than the org default's), or recorded last when there is none.
pub fn record_in_chunks(
    store: &Store,
    record: ToRecord,
    send: &mpsc::Sender<RecordedChunk>,
) -> Result<NoticesRecorded, StoreError> {
    let chunks = record.commands.len().div_ceil(RECORD_CHUNK);
    let Placement {
        decision_chunks,
        notice_chunks,
        transactions,
    } = place(&record.commands, &record.decisions, &record.notices);
    let mut decisions: Vec<Vec<DecisionRecord>> = (0..transactions).map(|_| Vec::new()).collect();
    for (d, chunk) in record.decisions.into_iter().zip(decision_chunks) {
        decisions[chunk].push(d);
    }
    let mut notices: Vec<Vec<NoticeRequest>> = (0..transactions).map(|_| Vec::new()).collect();
    for (n, chunk) in record.notices.into_iter().zip(notice_chunks) {
        if let Some(chunk) = notices.get_mut(chunk) {
            chunk.push(n);
        }
    }

    let mut recorded = NoticesRecorded::default();
    let mut commands = record.commands.into_iter();
    for (i, (decisions, notices)) in decisions.into_iter().zip(notices).enumerate() {
        let commands: Vec<PlannedCommand> = if i < chunks {
            commands
                .by_ref()
                .take(RECORD_CHUNK)
                .map(PlanStep::into_planned)
                .collect()
        } else {
            Vec::new()
        };
        let chunk = store.record_decisions_and_notices(
            &DecisionBatch {
                run: record.run,
                plugin_digest: &record.plugin_digest,
                decided_at: record.decided_at,
                decisions: &decisions,
                commands: &commands,
                held: false,
                shown: &[],
            },
            &NoticeBatch {
                requests: &notices,
                resend_interval_secs: record.resend_interval_secs,
            },
        )?;
        recorded.queued += chunk.notices_queued;
        recorded.deduplicated += chunk.notices_deduplicated;
        if !commands.is_empty() {
            let org = chunk.org;
            let journaled = chunk
                .commands
                .into_iter()
                .zip(commands)
                .map(|(id, planned)| {
                    let (command, enforces) = Enforces::split(org, planned);
                    (id, command, enforces)
                });
            // Apply gone (it failed on the store): the commands stay `planned`, which the
            // next sync's recovery abandons, like a crash's.
            let _ = send.blocking_send(journaled.collect());
        }
    }
    Ok(recorded)
}

/// Which transaction of [`record_in_chunks`] records each verdict and each notice.
struct Placement {
    /// The chunk of each decision, in order.
    decision_chunks: Vec<usize>,
    /// The chunk of each notice, in order.
    notice_chunks: Vec<usize>,
    /// Transactions in all: the command chunks, and any after them for verdicts alone.
    transactions: usize,
}

/// Places the verdicts and notices of a plan recorded in chunks of [`RECORD_CHUNK`] commands
/// (see [`record_in_chunks`]).
fn place(
    commands: &[PlanStep],
    decisions: &[DecisionRecord],
    notices: &[NoticeRequest],
) -> Placement {
    let chunks = commands.len().div_ceil(RECORD_CHUNK);
    // The chunk each device's verdict goes with. A verdict may be recorded before the chunk of
    // the command that changes it, never after.
    let mut chunk_of: HashMap<&DeviceKey, usize> = HashMap::new();
    // The latest chunk for the devices of the organization default's command: it changes every
    // device allowed by the default alone (30 000 in the first sync of the 100 000-device lab).
    // With it, its chunk, the last, was a transaction of a second that apply waited for with
    // nothing in flight.
    let mut no_later: HashMap<&DeviceKey, usize> = HashMap::new();
    for (i, step) in commands.iter().enumerate() {
        let chunk = i / RECORD_CHUNK;
        let of = match step {
            PlanStep::Command(c) if c.command.cmdlet == SET_ORG_SETTINGS => &mut no_later,
            _ => &mut chunk_of,
        };
        for key in step.devices() {
            of.entry(key).or_insert(chunk);
        }
    }
    // The other devices ride along with the chunks after the first (which goes out after one
    // small transaction), a share each. In transactions of their own, after the last chunk,
    // they held the store for a second while apply waited to journal its next chunk, and
    // the commands in flight ran dry. Without a second chunk, they come last, or with the
    // first chunk when a command of it changes them.
    let spread = chunks.saturating_sub(1);
    let mut placed = 0;
    let mut transactions = chunks;
    for d in decisions {
        chunk_of.entry(&d.key).or_insert_with(|| {
            placed += 1;
            let chunk = match no_later.get(&d.key) {
                // The org default is in the first chunk: with it.
                Some(0) => 0,
                // Chunks 1 to the org default's (the last, so `c` is `spread`).
                Some(&c) => 1 + (placed - 1) % c,
                None if spread == 0 => chunks + (placed - 1) / UNCHANGED_PER_TRANSACTION,
                None => 1 + (placed - 1) % spread,
            };
            transactions = transactions.max(chunk + 1);
            chunk
        });
    }
    drop(no_later);
    let decision_chunks: Vec<usize> = decisions.iter().map(|d| chunk_of[&d.key]).collect();
    // Each notice goes with its device's verdict (the runner asks for notices of decided
    // devices only).
    let notice_chunks: Vec<usize> = notices
        .iter()
        .map(|n| chunk_of.get(&n.key).copied().unwrap_or(0))
        .collect();
    drop(chunk_of);
    Placement {
        decision_chunks,
        notice_chunks,
        transactions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunKind;
    use crate::model::inventory::{ExchangeDevice, Verdict};
    use crate::store::DeviceView;

    fn device(n: usize) -> ExchangeDevice {
        ExchangeDevice {
            device_id: format!("D{n}"),
            identity: format!("m{n}\\ExchangeActiveSyncDevices\\iPhone\u{a7}D{n}"),
            mailbox: Some(format!("m{n}")),
            ..ExchangeDevice::default()
        }
    }

    fn set_cas_mailbox(device: &ExchangeDevice) -> PlannedCommand {
        let parameters = match &device.mailbox {
            Some(m) => crate::model::Parameters::new().text("Identity", m.clone()),
            None => crate::model::Parameters::new(),
        };
        PlannedCommand {
            mailbox: device.mailbox.clone(),
            devices: vec![device.key()],
            command: Command {
                cmdlet: SET_CAS_MAILBOX.into(),
                parameters,
            },
        }
    }

    fn decision(device: &ExchangeDevice, verdict: Verdict) -> DecisionRecord {
        DecisionRecord {
            key: device.key(),
            verdict,
            reason: "test".into(),
            notify: false,
        }
    }

    /// Records `commands` and `decisions` for `devices` (stored first) in a fresh store, as a
    /// full run does; returns the store, the run and the chunks in the order apply got them.
    fn record_plan(
        devices: &[ExchangeDevice],
        commands: Vec<PlanStep>,
        decisions: Vec<DecisionRecord>,
    ) -> (tempfile::TempDir, Arc<Store>, RunId, Vec<RecordedChunk>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("Contoso", 1).unwrap();
        let views: Vec<DeviceView<'_>> = devices
            .iter()
            .map(|d| DeviceView {
                exchange: d,
                managed: None,
            })
            .collect();
        store.save_inventory(org, &views, 1).unwrap();
        let run = store
            .start_run(org, RunKind::Full, Some("digest"), 2)
            .unwrap();
        let (send, mut received) = recorded_chunks();
        let record = ToRecord {
            run,
            plugin_digest: "digest".into(),
            decided_at: 2,
            decisions,
            commands,
            notices: Vec::new(),
            resend_interval_secs: 0,
        };
        let store = Arc::new(store);
        let recording = std::thread::spawn({
            let store = store.clone();
            move || record_in_chunks(&store, record, &send).unwrap()
        });
        let mut sent = Vec::new();
        while let Some(batch) = received.blocking_recv() {
            sent.push(batch);
        }
        recording.join().unwrap();
        (dir, store, run, sent)
    }

    /// When each device's verdict was written: its audit row's id.
    fn audit_ids(store: &Store, devices: &[ExchangeDevice]) -> Vec<i64> {
        let db = rusqlite::Connection::open(store.path()).unwrap();
        devices
            .iter()
            .map(|d| {
                db.query_row(
                    "SELECT id FROM decision_audit WHERE device_key = ?1",
                    [d.key().as_str()],
                    |row| row.get(0),
                )
                .unwrap()
            })
            .collect()
    }

    /// The chunks reach apply in plan order, each after the verdicts of the devices its
    /// commands change: their audit rows come before those of later chunks, and the devices
    /// no command changes come with the chunks after the first.
    #[test]
    fn each_chunk_is_sent_after_its_devices_verdicts() {
        let devices: Vec<ExchangeDevice> = (0..RECORD_CHUNK * 2 + 300).map(device).collect();
        // The last 100 devices get no command; the decisions come in the reverse order.
        let changed = RECORD_CHUNK * 2 + 200;
        let commands = devices[..changed]
            .iter()
            .map(|d| PlanStep::from(set_cas_mailbox(d)))
            .collect();
        let decisions = devices
            .iter()
            .rev()
            .map(|d| decision(d, Verdict::Block))
            .collect();
        let (_dir, store, run, sent) = record_plan(&devices, commands, decisions);
        let sizes: Vec<usize> = sent.iter().map(Vec::len).collect();
        assert_eq!(sizes, [RECORD_CHUNK, RECORD_CHUNK, 200]);
        let identities: Vec<serde_json::Value> = sent
            .iter()
            .flatten()
            .map(|(_, c, _)| match c.parameters.get("Identity") {
                Some(crate::model::ParamValue::Text(s)) => serde_json::Value::String(s.clone()),
                _ => serde_json::Value::Null,
            })
            .collect();
        let planned: Vec<serde_json::Value> = devices[..changed]
            .iter()
            .map(|d| d.mailbox.clone().into())
            .collect();
        assert_eq!(identities, planned, "plan order");
        let journal = store.journal(run).unwrap();
        let ids: Vec<CommandId> = sent.iter().flatten().map(|(id, _, _)| *id).collect();
        assert_eq!(ids, journal.iter().map(|e| e.id).collect::<Vec<_>>());

        let written = audit_ids(&store, &devices);
        let mut first_and_last = [(i64::MAX, i64::MIN); 3];
        for (i, &id) in written[..changed].iter().enumerate() {
            let (first, last) = &mut first_and_last[i / RECORD_CHUNK];
            (*first, *last) = ((*first).min(id), (*last).max(id));
        }
        for pair in first_and_last.windows(2) {
            assert!(
                pair[0].1 < pair[1].0,
                "chunks written in order: {first_and_last:?}"
            );
        }
        // The devices no command changes ride along with the chunks after the first.
        for &id in &written[changed..] {
            assert!(
                first_and_last[0].1 < id && id <= first_and_last[2].1,
                "{id} not after the first chunk: {first_and_last:?}"
            );
        }
    }

    /// The devices of the organization default's command, in the last chunk, are recorded
    /// before it, spread over the chunks after the first instead of all with it.
    #[test]
    fn the_org_defaults_devices_are_spread_over_the_chunks_up_to_its_own() {
        let devices: Vec<ExchangeDevice> = (0..RECORD_CHUNK * 3).map(device).collect();
        // Two chunks and a half of mailbox edits, then the org default for the rest.
        let edited = RECORD_CHUNK * 2 + RECORD_CHUNK / 2;
        let mut commands: Vec<PlanStep> = devices[..edited]
            .iter()
            .map(|d| PlanStep::from(set_cas_mailbox(d)))
            .collect();
        commands.push(PlanStep::Command(PlannedCommand {
            mailbox: None,
            devices: devices[edited..].iter().map(ExchangeDevice::key).collect(),
            command: Command {
                cmdlet: SET_ORG_SETTINGS.into(),
                parameters: crate::model::Parameters::new(),
            },
        }));
        let decisions = devices
            .iter()
            .map(|d| decision(d, Verdict::Quarantine))
            .collect();
        let (_dir, store, _run, sent) = record_plan(&devices, commands, decisions);
        let sizes: Vec<usize> = sent.iter().map(Vec::len).collect();
        assert_eq!(sizes, [RECORD_CHUNK, RECORD_CHUNK, RECORD_CHUNK / 2 + 1]);

        // Audit rows in the order written: a chunk's edited devices come before the org
        // default's devices riding with it.
        let written = audit_ids(&store, &devices);
        let end_of_first = written[..RECORD_CHUNK].iter().max().unwrap();
        let start_of_third = written[RECORD_CHUNK * 2..edited].iter().min().unwrap();
        let ids = &written[edited..];
        assert!(
            ids.iter().all(|id| id > end_of_first),
            "none with the first chunk"
        );
        let with_second = ids.iter().filter(|&id| id < start_of_third).count();
        assert_eq!(
            with_second,
            ids.len() / 2,
            "half ride with the second chunk"
        );
    }
}
