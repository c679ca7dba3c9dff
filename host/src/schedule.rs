//! When syncs run: one queue per organization.
//!
//! Each organization has its own task, so a failing or hanging organization never stalls
//! another. Per organization at most one run goes at a time; a trigger while a run is going is
//! queued *once* (a second trigger merges into the queued one, a full sync absorbing a quick
//! one), and the queued run starts when the current one ends. Timers queue a quick sync every
//! `quick_interval` and a full sync every `full_interval`, or daily at `full_at` (UTC); a run
//! of a kind restarts that kind's timer (a full sync also restarts the quick timer: it covered
//! everything a quick one would). A daily full sync keeps its time of day: after any full run
//! the next one is at the next `full_at`.
//!
//! The scheduler does not know how a sync is done: it calls a [`RunFn`] (the sync runner in
//! the daemon, a test callback in tests) with a [`SyncRequest`] carrying a [`CancelToken`] the
//! run checks at its safe points and a [`Progress`] it reports into (shown by the admin API).
//!
//! Shutdown ([`Scheduler::shutdown`]) stops taking triggers, drops queued runs, and either
//! lets the current runs finish or cancels them (the runner stops at its next safe point).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// The wall clock in Unix seconds: the `now` of [`Scheduler::start`] outside tests.
pub use crate::timestamp::unix_now;

use crate::model::SyncKind;

/// The future of one run: `Err` is a failed run, recorded and logged; the next one still
/// starts.
pub type RunFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// How a run is done: the sync runner in the daemon.
pub type RunFn = Arc<dyn Fn(SyncRequest) -> RunFuture + Send + Sync>;

/// What a run is handed.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The organization's name, as in the configuration.
    pub org: String,
    pub kind: SyncKind,
    /// Set when the connector stops and runs are cancelled: check it at safe points.
    pub cancel: CancelToken,
    /// Where the run reports how far it got.
    pub progress: Progress,
}

/// A cancellation flag a run checks at its safe points (between stages, between batches).
#[derive(Debug, Clone)]
pub struct CancelToken(watch::Receiver<bool>);

impl CancelToken {
    /// Whether the run should stop at this safe point.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the run is cancelled (never, if it is not), for `select!`.
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|cancelled| *cancelled).await.is_err() {
            // The scheduler is gone without cancelling: nothing will cancel this run.
            std::future::pending::<()>().await;
        }
    }
}

/// How far a run got, as the runner reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProgressInfo {
    /// The stage in progress (`discover`, `decide`, `apply`, ...).
    pub stage: String,
    /// Items done in that stage.
    pub done: u64,
    /// Items in that stage, when known.
    pub total: Option<u64>,
}

/// The run's progress, shared with the admin API.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<ProgressInfo>>);

impl Progress {
    /// Reports that `done` of `total` items of `stage` are done.
    pub fn set(&self, stage: &str, done: u64, total: Option<u64>) {
        let mut info = self.0.lock().unwrap_or_else(|e| e.into_inner());
        info.stage.clear();
        info.stage.push_str(stage);
        info.done = done;
        info.total = total;
    }

    /// The last report.
    pub fn get(&self) -> ProgressInfo {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An organization's timers; `None` turns that timer off (manual triggers only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrgSchedule {
    pub quick_interval: Option<Duration>,
    pub full_interval: Option<Duration>,
    /// Seconds after midnight UTC: a daily full sync then, instead of every `full_interval`.
    pub full_at: Option<u32>,
}

impl From<&crate::config::Organization> for OrgSchedule {
    fn from(org: &crate::config::Organization) -> Self {
        OrgSchedule {
            quick_interval: Some(org.quick_interval),
            full_interval: Some(org.full_interval),
            full_at: org.full_at,
        }
    }
}

/// The answer to a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Triggered {
    /// Nothing was running: the run starts now.
    Started,
    /// A run is going: this one starts after it (merged with any already queued).
    Queued,
}

/// Why a trigger was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("no organization named {0:?} is configured")]
    UnknownOrg(String),
    #[error("the connector is shutting down; no new syncs start")]
    ShuttingDown,
}

/// The run going on now.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentRun {
    pub kind: SyncKind,
    /// Unix seconds.
    pub started_at: i64,
    pub progress: ProgressInfo,
}

/// How the last finished run went.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub kind: SyncKind,
    /// Unix seconds.
    pub started_at: i64,
    pub ended_at: i64,
    /// `None` when it succeeded.
    pub error: Option<String>,
}

/// What the scheduler knows of one organization.
#[derive(Debug, Clone, Serialize)]
pub struct OrgRunState {
    pub current: Option<CurrentRun>,
    pub queued: Option<SyncKind>,
    pub last: Option<LastRun>,
}

#[derive(Default)]
struct OrgState {
    running: Option<(SyncKind, i64, Progress)>,
    queued: Option<SyncKind>,
    last: Option<LastRun>,
}

struct Org {
    state: Mutex<OrgState>,
    wake: Notify,
}

impl Org {
    fn lock(&self) -> std::sync::MutexGuard<'_, OrgState> {
        // The state is a few plain fields, each written whole: a panic cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `kind`, merging with what is queued. Returns whether a run was going.
    fn enqueue(&self, kind: SyncKind) -> bool {
        let mut state = self.lock();
        state.queued = Some(state.queued.map_or(kind, |queued| queued.max(kind)));
        let running = state.running.is_some();
        drop(state);
        self.wake.notify_one();
        running
    }
}

struct Shared {
    orgs: BTreeMap<String, Arc<Org>>,
    /// Set once shutdown starts: triggers are refused and workers stop after their run.
    stopping: watch::Sender<bool>,
    /// Set when shutdown cancels the running syncs.
    cancel: watch::Sender<bool>,
}

/// The per-organization sync queues. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("orgs", &self.shared.orgs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether [`Scheduler::shutdown`] waits for the running syncs or cancels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Let each running sync finish.
    Finish,
    /// Cancel them; each stops at its next safe point.
    Cancel,
}

impl Scheduler {
    /// Starts one worker task per organization (on the current tokio runtime). `now` gives the
    /// wall clock in Unix seconds (injected so tests control it).
    pub fn start(
        orgs: impl IntoIterator<Item = (String, OrgSchedule)>,
        run: RunFn,
        metrics: Arc<Metrics>,
        now: fn() -> i64,
    ) -> Self {
        let schedules: Vec<(String, OrgSchedule)> = orgs.into_iter().collect();
        let shared = Arc::new(Shared {
            orgs: schedules
                .iter()
                .map(|(name, _)| {
                    let org = Org {
                        state: Mutex::new(OrgState::default()),
                        wake: Notify::new(),
                    };
                    (name.clone(), Arc::new(org))
                })
                .collect(),
            stopping: watch::channel(false).0,
            cancel: watch::channel(false).0,
        });
        let workers = schedules
            .into_iter()
            .map(|(name, schedule)| {
                let worker = Worker {
                    org: shared.orgs[&name].clone(),
                    name,
                    schedule,
                    run: run.clone(),
                    metrics: metrics.clone(),
                    stopping: shared.stopping.subscribe(),
                    cancel: CancelToken(shared.cancel.subscribe()),
                    now,
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Self {
            shared,
            workers: Arc::new(Mutex::new(workers)),
        }
    }

    /// The configured organizations, by name.
    pub fn organizations(&self) -> impl Iterator<Item = &str> {
        self.shared.orgs.keys().map(String::as_str)
    }

    /// Asks for a sync of `org`: it starts now, or after the running one.
    pub fn trigger(&self, org: &str, kind: SyncKind) -> Result<Triggered, ScheduleError> {
        if *self.shared.stopping.borrow() {
            return Err(ScheduleError::ShuttingDown);
        }
        let entry = self
            .shared
            .orgs
            .get(org)
            .ok_or_else(|| ScheduleError::UnknownOrg(org.to_owned()))?;
        Ok(if entry.enqueue(kind) {
            Triggered::Queued
        } else {
            Triggered::Started
        })
    }

    /// What is running, queued and last finished for `org`.
    pub fn state(&self, org: &str) -> Option<OrgRunState> {
        let entry = self.shared.orgs.get(org)?;
        let state = entry.lock();
        Some(OrgRunState {
            current: state
                .running
                .as_ref()
                .map(|(kind, started_at, progress)| CurrentRun {
                    kind: *kind,
                    started_at: *started_at,
                    progress: progress.get(),
                }),
            queued: state.queued,
            last: state.last.clone(),
        })
    }

    /// Stops taking syncs, drops queued ones, and waits for the workers to end: after the
    /// running syncs finish, or after they stop at a safe point when `mode` cancels them.
    pub async fn shutdown(&self, mode: Shutdown) {
        self.shared.stopping.send_replace(true);
        if mode == Shutdown::Cancel {
            self.shared.cancel.send_replace(true);
        }
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            if let Err(err) = worker.await {
                tracing::error!(error = %err, "a scheduler worker ended abnormally");
            }
        }
    }
}

struct Worker {
    name: String,
    org: Arc<Org>,
    schedule: OrgSchedule,
    run: RunFn,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
    cancel: CancelToken,
    now: fn() -> i64,
}

impl Worker {
    async fn run(mut self) {
        let start = Instant::now();
        let mut next_quick = self.schedule.quick_interval.map(|i| start + i);
        let mut next_full = self.next_full(start);
        loop {
            if *self.stopping.borrow() {
                break;
            }
            let next = [next_quick, next_full].into_iter().flatten().min();
            let timer = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.stopping.changed() => {
                    // An error: the scheduler handle is gone, so nothing can trigger any more.
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                () = self.org.wake.notified() => {}
                () = timer => {
                    let now = Instant::now();
                    // A due full sync covers a due quick one.
                    let kind = if next_full.is_some_and(|at| at <= now) {
                        SyncKind::Full
                    } else {
                        SyncKind::Quick
                    };
                    self.org.enqueue(kind);
                }
            }
            let Some(kind) = self.take_queued() else {
                continue;
            };
            self.run_one(kind).await;
            let now = Instant::now();
            if let Some(interval) = self.schedule.quick_interval {
                next_quick = Some(now + interval);
            }
            if kind == SyncKind::Full {
                next_full = self.next_full(now);
            }
            // Whatever was queued during the run gets its own wake-up.
            if self.org.lock().queued.is_some() {
                self.org.wake.notify_one();
            }
        }
        self.org.lock().queued = None;
    }

    /// When the next scheduled full sync is due, seen at `now`.
    fn next_full(&self, now: Instant) -> Option<Instant> {
        const DAY: i64 = 86_400;
        match self.schedule.full_at {
            Some(at) => {
                let wait = match (i64::from(at) - (self.now)().rem_euclid(DAY)).rem_euclid(DAY) {
                    0 => DAY,
                    wait => wait,
                };
                Some(now + Duration::from_secs(wait as u64))
            }
            None => self.schedule.full_interval.map(|i| now + i),
        }
    }

    /// Moves the queued run to running, unless shutdown started.
    fn take_queued(&self) -> Option<SyncKind> {
        if *self.stopping.borrow() {
            return None;
        }
        let mut state = self.org.lock();
        let kind = state.queued.take()?;
        state.running = Some((kind, (self.now)(), Progress::default()));
        Some(kind)
    }

    async fn run_one(&self, kind: SyncKind) {
        let (started_at, progress) = {
            let state = self.org.lock();
            let (_, started_at, progress) = state.running.as_ref().expect("set by take_queued");
            (*started_at, progress.clone())
        };
        let request = SyncRequest {
            org: self.name.clone(),
            kind,
            cancel: self.cancel.clone(),
            progress,
        };
        tracing::info!(org = %self.name, kind = kind.as_str(), "sync starts");
        self.metrics.sync_started(&self.name, started_at);
        let clock = Instant::now();
        // Its own task: a panicking run is a failed run, not a dead worker.
        let result = match tokio::spawn((self.run)(request)).await {
            Ok(result) => result.map_err(|err| format!("{err:#}")),
            Err(err) => Err(format!("the sync task ended abnormally: {err}")),
        };
        let elapsed = clock.elapsed();
        let outcome = match &result {
            Ok(()) => "succeeded",
            Err(_) if self.cancel.is_cancelled() => "cancelled",
            Err(_) => "failed",
        };
        match &result {
            Ok(()) => tracing::info!(org = %self.name, kind = kind.as_str(), ?elapsed, "sync done"),
            Err(err) => {
                tracing::warn!(org = %self.name, kind = kind.as_str(), error = %err, "sync failed")
            }
        }
        let ended_at = (self.now)();
        self.metrics
            .sync_finished(&self.name, kind, outcome, elapsed, ended_at);
        let mut state = self.org.lock();
        state.running = None;
        state.last = Some(LastRun {
            kind,
            started_at,
            ended_at,
            error: result.err(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    fn clock() -> i64 {
        1_700_000_000
    }

    /// A run callback that records each run and waits for a permit before finishing.
    struct Probe {
        runs: Mutex<Vec<(String, SyncKind)>>,
        gate: Semaphore,
        concurrent: AtomicUsize,
        max_concurrent: AtomicUsize,
    }

    impl Probe {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                runs: Mutex::new(Vec::new()),
                gate: Semaphore::new(0),
                concurrent: AtomicUsize::new(0),
                max_concurrent: AtomicUsize::new(0),
            })
        }

        fn run_fn(self: &Arc<Self>) -> RunFn {
            let probe = self.clone();
            Arc::new(move |req: SyncRequest| {
                let probe = probe.clone();
                Box::pin(async move {
                    probe.runs.lock().unwrap().push((req.org.clone(), req.kind));
                    let now = probe.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                    probe.max_concurrent.fetch_max(now, Ordering::SeqCst);
                    req.progress.set("decide", 1, Some(2));
                    let result = tokio::select! {
                        permit = probe.gate.acquire() => {
                            permit.unwrap().forget();
                            if req.org == "broken" { Err(anyhow::anyhow!("Exchange is down")) } else { Ok(()) }
                        }
                        () = req.cancel.cancelled() => Err(anyhow::anyhow!("cancelled")),
                    };
                    probe.concurrent.fetch_sub(1, Ordering::SeqCst);
                    result
                })
            })
        }

        fn runs(&self) -> Vec<(String, SyncKind)> {
            self.runs.lock().unwrap().clone()
        }
    }

    fn manual(names: &[&str]) -> Vec<(String, OrgSchedule)> {
        names
            .iter()
            .map(|n| (n.to_string(), OrgSchedule::default()))
            .collect()
    }

    /// Lets the spawned tasks make progress until `done` holds (bounded).
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition not reached");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_during_a_run_is_queued_once_and_runs_after() {
        let probe = Probe::new();
        let metrics = Arc::new(Metrics::default());
        let s = Scheduler::start(manual(&["contoso"]), probe.run_fn(), metrics, clock);
        assert_eq!(
            s.trigger("contoso", SyncKind::Quick),
            Ok(Triggered::Started)
        );
        until(|| probe.runs().len() == 1).await;
        let state = s.state("contoso").unwrap();
        assert_eq!(state.current.as_ref().unwrap().progress.stage, "decide");
        assert_eq!(s.trigger("contoso", SyncKind::Quick), Ok(Triggered::Queued));
        assert_eq!(s.trigger("contoso", SyncKind::Full), Ok(Triggered::Queued));
        assert_eq!(s.trigger("contoso", SyncKind::Quick), Ok(Triggered::Queued));
        assert_eq!(s.state("contoso").unwrap().queued, Some(SyncKind::Full));
        probe.gate.add_permits(1);
        until(|| probe.runs().len() == 2).await;
        probe.gate.add_permits(1);
        until(|| s.state("contoso").unwrap().current.is_none()).await;
        // Three triggers during the first run made one more run, the full one.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            probe.runs(),
            vec![
                ("contoso".into(), SyncKind::Quick),
                ("contoso".into(), SyncKind::Full)
            ]
        );
        assert_eq!(probe.max_concurrent.load(Ordering::SeqCst), 1);
        s.shutdown(Shutdown::Finish).await;
    }

    #[tokio::test(start_paused = true)]
    async fn timers_queue_quick_and_full_syncs() {
        let probe = Probe::new();
        probe.gate.add_permits(1000);
        let schedule = OrgSchedule {
            quick_interval: Some(Duration::from_secs(60)),
            full_interval: Some(Duration::from_secs(150)),
            full_at: None,
        };
        let s = Scheduler::start(
            [("contoso".to_string(), schedule)],
            probe.run_fn(),
            Arc::new(Metrics::default()),
            clock,
        );
        // Runs take no time: quick at 60, 120, full at 150 (restarting quick), quick at 210.
        tokio::time::sleep(Duration::from_secs(215)).await;
        let kinds: Vec<SyncKind> = probe.runs().into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            kinds,
            [
                SyncKind::Quick,
                SyncKind::Quick,
                SyncKind::Full,
                SyncKind::Quick
            ]
        );
        s.shutdown(Shutdown::Finish).await;
    }

    /// The paused tokio clock as wall time, starting at 2023-11-14T22:13:20Z.
    fn paused_clock() -> i64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        1_700_000_000 + start.elapsed().as_secs() as i64
    }

    #[tokio::test(start_paused = true)]
    async fn a_daily_full_sync_keeps_its_time_of_day() {
        paused_clock();
        let probe = Probe::new();
        probe.gate.add_permits(1000);
        let schedule = OrgSchedule {
            quick_interval: None,
            full_interval: Some(Duration::from_secs(60)),
            // 22:15 UTC, 100 s after the clock's start; it wins over the interval.
            full_at: Some(22 * 3600 + 15 * 60),
        };
        let s = Scheduler::start(
            [("contoso".to_string(), schedule)],
            probe.run_fn(),
            Arc::new(Metrics::default()),
            paused_clock,
        );
        tokio::time::sleep(Duration::from_secs(99)).await;
        assert!(probe.runs().is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(probe.runs(), [("contoso".into(), SyncKind::Full)]);
        // A manual full sync in between does not move the daily slot.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        s.trigger("contoso", SyncKind::Full).unwrap();
        tokio::time::sleep(Duration::from_secs(86_400 - 3600 - 3)).await;
        assert_eq!(probe.runs().len(), 2);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(probe.runs().len(), 3, "the next day's full sync at 22:15");
        s.shutdown(Shutdown::Finish).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_org_does_not_stall_another() {
        let probe = Probe::new();
        let metrics = Arc::new(Metrics::default());
        let s = Scheduler::start(
            manual(&["broken", "contoso"]),
            probe.run_fn(),
            metrics.clone(),
            clock,
        );
        s.trigger("broken", SyncKind::Full).unwrap();
        until(|| probe.runs().len() == 1).await;
        // "broken" hangs on its gate; "contoso" still runs.
        s.trigger("contoso", SyncKind::Quick).unwrap();
        until(|| probe.runs().len() == 2).await;
        probe.gate.add_permits(2);
        until(|| s.state("broken").unwrap().last.is_some()).await;
        until(|| s.state("contoso").unwrap().last.is_some()).await;
        let broken = s.state("broken").unwrap().last.unwrap();
        assert_eq!(broken.error.as_deref(), Some("Exchange is down"));
        assert_eq!(s.state("contoso").unwrap().last.unwrap().error, None);
        // The failed org takes the next trigger as usual.
        assert_eq!(s.trigger("broken", SyncKind::Quick), Ok(Triggered::Started));
        until(|| probe.runs().len() == 3).await;
        probe.gate.add_permits(1);
        s.shutdown(Shutdown::Finish).await;
        let text =
            crate::metrics::encode(crate::metrics::Format::Prometheus, &[metrics.registry()]);
        assert!(
            text.contains(r#"easgate_syncs_total{org="broken",kind="full",outcome="failed"} 1"#),
            "{text}"
        );
        // Both syncs were attempted at the test clock's time; only the broken one failed.
        for line in [
            r#"easgate_last_sync_attempt_timestamp_seconds{org="broken"} 1700000000"#,
            r#"easgate_last_sync_attempt_timestamp_seconds{org="contoso"} 1700000000"#,
            r#"easgate_last_failed_sync_timestamp_seconds{org="broken"} 1700000000"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !text.contains(r#"failed_sync_timestamp_seconds{org="contoso"}"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_run_is_a_failed_run() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let run: RunFn = Arc::new(move |_req| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                assert!(n > 0, "the first run panics");
                Ok(())
            })
        });
        let s = Scheduler::start(
            manual(&["contoso"]),
            run,
            Arc::new(Metrics::default()),
            clock,
        );
        s.trigger("contoso", SyncKind::Quick).unwrap();
        until(|| s.state("contoso").unwrap().last.is_some()).await;
        let last = s.state("contoso").unwrap().last.unwrap();
        assert!(last.error.unwrap().contains("abnormally"));
        s.trigger("contoso", SyncKind::Quick).unwrap();
        until(|| runs.load(Ordering::SeqCst) == 2).await;
        s.shutdown(Shutdown::Finish).await;
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_orgs_and_triggers_after_shutdown_are_refused() {
        let probe = Probe::new();
        let s = Scheduler::start(
            manual(&["contoso"]),
            probe.run_fn(),
            Arc::new(Metrics::default()),
            clock,
        );
        assert_eq!(
            s.trigger("fabrikam", SyncKind::Quick),
            Err(ScheduleError::UnknownOrg("fabrikam".into()))
        );
        s.shutdown(Shutdown::Finish).await;
        assert_eq!(
            s.trigger("contoso", SyncKind::Quick),
            Err(ScheduleError::ShuttingDown)
        );
        assert!(probe.runs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_the_running_sync_and_drops_the_queued_one() {
        let probe = Probe::new();
        let metrics = Arc::new(Metrics::default());
        let s = Scheduler::start(manual(&["contoso"]), probe.run_fn(), metrics.clone(), clock);
        s.trigger("contoso", SyncKind::Full).unwrap();
        until(|| probe.runs().len() == 1).await;
        assert_eq!(s.trigger("contoso", SyncKind::Quick), Ok(Triggered::Queued));
        // The probe never gets a permit: only cancellation ends it.
        tokio::time::timeout(Duration::from_secs(5), s.shutdown(Shutdown::Cancel))
            .await
            .expect("shutdown waits only for the cancelled run");
        assert_eq!(probe.runs().len(), 1, "the queued quick sync never started");
        let state = s.state("contoso").unwrap();
        assert!(state.current.is_none() && state.queued.is_none());
        assert!(
            crate::metrics::encode(crate::metrics::Format::Prometheus, &[metrics.registry()])
                .contains(r#"outcome="cancelled"} 1"#)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_the_running_sync_finish() {
        let probe = Probe::new();
        let s = Scheduler::start(
            manual(&["contoso"]),
            probe.run_fn(),
            Arc::new(Metrics::default()),
            clock,
        );
        s.trigger("contoso", SyncKind::Full).unwrap();
        until(|| probe.runs().len() == 1).await;
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.shutdown(Shutdown::Finish).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "shutdown waits for the run");
        probe.gate.add_permits(1);
        waiting.await.unwrap();
        assert_eq!(s.state("contoso").unwrap().last.unwrap().error, None);
    }
}
