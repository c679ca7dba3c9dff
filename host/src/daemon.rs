//! The long-running connector behind `easgate run` and `easgate lab`: the store, the plugin
//! registry with its watched directory, one sync runner per organization driven by the
//! scheduler, and the admin API.
//!
//! Start-up is all or nothing: a configuration, store, plugin or listener problem stops it
//! before any sync. Shutdown stops taking syncs and cancels the running ones: a run is dropped
//! at its next await point, which the runner's write order makes safe (whatever it recorded is
//! journaled; the next start's [`Store::recover`] marks the run interrupted and its unfinished
//! commands abandoned, and the next sync is a full one that plans afresh).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::{Config, Secret};
use crate::metrics::{CommandResult, Metrics, NoticeResult};
use crate::model::SyncKind;
use crate::net::HttpSettings;
use crate::plugin::registry::{PluginWatcher, RegistryOptions};
use crate::plugin::{PluginEngine, PluginRegistry};
use crate::schedule::{self, OrgSchedule, RunFn, Scheduler, Shutdown, SyncRequest};
use crate::store::{OrgId, RunId, RunOutcome, Store};
use crate::sync::{self, OrgSync, Summary};

/// The file in the data directory that holds the admin API's bound address while the daemon
/// runs.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// A running connector. [`Daemon::shutdown`] stops it.
pub struct Daemon {
    scheduler: Scheduler,
    store: Arc<Store>,
    /// Interrupted at shutdown, so that no plugin call holds the process up.
    plugins: PluginEngine,
    admin: Option<AdminServer>,
    /// Reloads changed plugin files while it lives.
    _watcher: Option<PluginWatcher>,
    /// Each organization's Exchange client, closed on shutdown (remote PowerShell's shells
    /// count against the service account's quota until closed).
    exchanges: Vec<(String, crate::exchange::ExchangeClient)>,
}

struct AdminServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("scheduler", &self.scheduler)
            .field("store", &self.store)
            .field("admin", &self.admin_addr())
            .finish()
    }
}

/// Feeds the counters the runner's summary already has (throttling, retries and CAS failovers
/// are counted inside the clients, see [`crate::exchange::ExchangeClient::observe`] and
/// [`crate::graph::GraphClient::observe`]).
fn account(metrics: &Metrics, summary: &Summary) {
    let org = &summary.organization;
    if summary.commands_issued > 0 {
        metrics.command(org, CommandResult::Sent, summary.commands_issued);
    }
    if summary.commands_failed > 0 {
        metrics.command(org, CommandResult::Failed, summary.commands_failed);
    }
    let v = &summary.verdicts;
    let evaluated = v.allow + v.block + v.quarantine + v.exempt + v.undecided;
    if evaluated > 0 {
        metrics.plugin_evaluations(org, evaluated);
    }
    for kind in &summary.plugin_errors {
        metrics.plugin_error(org, *kind);
    }
    if let Some(statistics) = &summary.statistics
        && statistics.failed > 0
    {
        metrics.statistics_failures(org, statistics.failed);
    }
    let n = &summary.notices;
    for (result, count) in [
        (NoticeResult::Sent, n.sent),
        (NoticeResult::Retrying, n.retrying),
        (NoticeResult::GivenUp, n.given_up),
        (NoticeResult::Failed, n.failed),
    ] {
        if count > 0 {
            metrics.notices(org, result, count);
        }
    }
}

/// Applies the plans of `runner`'s organization an operator approved (through the admin API,
/// which only records the approval), oldest first, before its next sync plans anything new:
/// otherwise that sync would find their commands unfinished and plan, and hold, them again.
async fn apply_approved(
    runner: &OrgSync,
    metrics: &Metrics,
    report: sync::progress::Report<'_>,
) -> anyhow::Result<()> {
    let (store, name) = (runner.store.clone(), runner.name.clone());
    let approved = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<RunId>> {
        let org = store.organization(&name, schedule::unix_now())?;
        let mut runs: Vec<RunId> = store
            .recent_runs(org, 50)?
            .into_iter()
            .filter(|r| {
                r.outcome == RunOutcome::Running && r.approval.as_deref() == Some("approved")
            })
            .map(|r| r.id)
            .collect();
        runs.reverse();
        Ok(runs)
    })
    .await??;
    for run in approved {
        let summary = runner.apply_approved(run, report).await?;
        account(metrics, &summary);
        tracing::info!(
            org = %summary.organization,
            run = %run,
            outcome = summary.outcome.as_str(),
            commands_issued = summary.commands_issued,
            commands_failed = summary.commands_failed,
            "approved plan applied"
        );
    }
    Ok(())
}

/// What the admin API needs to have an approval applied at once.
#[derive(Clone)]
struct ApprovalHook {
    store: Arc<Store>,
    scheduler: Scheduler,
    orgs: Arc<HashMap<OrgId, String>>,
}

/// After a successful `POST /api/v1/plans/{id}/approve`, queues a quick sync of the plan's
/// organization: the run applies the approved plan first (see [`apply_approved`]).
async fn after_approval(
    State(hook): State<ApprovalHook>,
    request: Request,
    next: Next,
) -> Response {
    let run = (request.method() == Method::POST)
        .then(|| request.uri().path().strip_prefix("/api/v1/plans/"))
        .flatten()
        .and_then(|rest| rest.strip_suffix("/approve"))
        .and_then(|id| id.parse().ok())
        .map(RunId);
    let response = next.run(request).await;
    if let Some(run) = run
        && response.status().is_success()
    {
        let store = hook.store.clone();
        let org = tokio::task::spawn_blocking(move || store.run(run)).await;
        match org {
            Ok(Ok(Some(record))) => {
                if let Some(name) = hook.orgs.get(&record.org)
                    && let Err(err) = hook.scheduler.trigger(name, SyncKind::Quick)
                {
                    tracing::warn!(%run, "the approved plan waits for the next sync: {err}");
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(err)) => tracing::error!(%run, "reading the approved run: {err}"),
            Err(err) => tracing::error!(%run, "reading the approved run: {err}"),
        }
    }
    response
}

/// Opens the store as its only writer and recovers what a process before this one left cut
/// short.
fn open_and_recover(data_dir: &std::path::Path) -> anyhow::Result<Store> {
    let store = Store::open_writer(data_dir)?;
    // This process is the store's only writer from now on: whatever a process before
    // it left running was cut short.
    let recovery = store.recover(schedule::unix_now())?;
    if !recovery.interrupted_runs.is_empty() || !recovery.unfinished.is_empty() {
        tracing::warn!(
            runs = ?recovery.interrupted_runs,
            commands = recovery.unfinished.len(),
            "an earlier sync was interrupted; the next sync is a full one and plans afresh"
        );
    }
    crate::admin::actions::report_interrupted(&store)?;
    Ok(store)
}

/// The runners by organization name
/// with each organization's Exchange client, kept to close its sessions at stop.
type OrgRunners = (
    HashMap<String, Arc<OrgSync>>,
    Vec<(String, crate::exchange::ExchangeClient)>,
);

/// One sync runner per organization, its clients reporting to `metrics`.
fn org_runners(
    config: &Config,
    http: &HttpSettings,
    store: &Arc<Store>,
    registry: &Arc<PluginRegistry>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<OrgRunners> {
    let template: sync::TemplateSource = {
        let registry = registry.clone();
        Arc::new(move || registry.notice_template())
    };
    let mut runners = HashMap::new();
    let mut exchanges = Vec::new();
    for org in &config.organizations {
        let notices = config.notify.as_ref().map(|n| (n, template.clone()));
        let runner = OrgSync::from_config(org, http, store.clone(), notices)?;
        runner.exchange.observe(metrics.clone(), &org.name);
        runner.graph.observe(metrics.clone(), &org.name);
        exchanges.push((org.name.clone(), runner.exchange.clone()));
        runners.insert(org.name.clone(), Arc::new(runner));
    }
    Ok((runners, exchanges))
}

/// Each organization's device actions, with its runner's Exchange client and notice stage.
fn device_actions(
    runners: &HashMap<String, Arc<OrgSync>>,
    registry: &Arc<PluginRegistry>,
    metrics: &Arc<Metrics>,
) -> HashMap<String, crate::admin::actions::OrgActions> {
    let template: sync::TemplateSource = {
        let registry = registry.clone();
        Arc::new(move || registry.notice_template())
    };
    runners
        .iter()
        .map(|(name, runner)| {
            let actions = crate::admin::actions::OrgActions {
                exchange: runner.exchange.clone(),
                notices: runner.notices.clone().map(|n| (n, template.clone())),
                metrics: Some(metrics.clone()),
            };
            (name.clone(), actions)
        })
        .collect()
}

/// With `[admin]`, its token and its bound listener.
async fn bind_admin(config: &Config) -> anyhow::Result<Option<(TcpListener, Secret)>> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let (listen, token) = (admin.listen, admin.token.resolve()?);
    // Bound before the scheduler starts: a taken port stops the start-up cleanly.
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("[admin] listen: cannot listen on {listen}"))?;
    Ok(Some((listener, token)))
}

/// Serves the admin API on `listener`, running [`after_approval`] after each call, and writes
/// where it listens.
fn serve_admin(
    config: &Config,
    listener: TcpListener,
    state: AdminState,
) -> anyhow::Result<AdminServer> {
    let addr = listener.local_addr()?;
    // Where `easgate status --config` finds a daemon whose port was chosen at
    // start (`listen = "…:0"`, as the lab's configuration has it).
    let addr_file = config.sync.data_dir.join(ADMIN_ADDR_FILE);
    std::fs::write(&addr_file, format!("{addr}\n"))
        .with_context(|| format!("writing {}", addr_file.display()))?;
    let mut orgs = HashMap::new();
    for org in &config.organizations {
        orgs.insert(
            state.store.organization(&org.name, schedule::unix_now())?,
            org.name.clone(),
        );
    }
    let hook = ApprovalHook {
        store: state.store.clone(),
        scheduler: state.scheduler.clone(),
        orgs: Arc::new(orgs),
    };
    let router = admin::router(state).layer(middleware::from_fn_with_state(hook, after_approval));
    let (stop, stopped) = oneshot::channel::<()>();
    tracing::info!(%addr, "admin API listening");
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(AdminServer { addr, stop, task })
}

/// The scheduler's run function: the organization's runner with the active policy, pinned
/// for the run, stopped when the scheduler cancels.
fn run_fn(
    runners: HashMap<String, Arc<OrgSync>>,
    registry: Arc<PluginRegistry>,
    metrics: Arc<Metrics>,
) -> RunFn {
    let runners = Arc::new(runners);
    Arc::new(move |req: SyncRequest| {
        let runner = runners.get(&req.org).cloned();
        // Pinned now, for the whole run; one organization's broken policy fails its own
        // syncs only.
        let policy = registry.policy_for(&req.org);
        let registry = registry.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            let runner =
                runner.with_context(|| format!("no sync runner for organization {}", req.org))?;
            let kind = req.kind;
            let work = async {
                let progress = req.progress.clone();
                let report = move |stage: &str, done: u64, total: Option<u64>| {
                    progress.set(stage, done, total);
                };
                req.progress.set("approved plans", 0, None);
                apply_approved(&runner, &metrics, &report).await?;
                anyhow::Ok(match policy {
                    Ok(policy) => runner.run_reporting(kind, false, policy, &report).await?,
                    Err(err) => {
                        // The run never reaches Exchange: one cheap read keeps the status's
                        // `connection` about Exchange, not about the policy.
                        probe_exchange(&runner).await;
                        let mut summary = runner.fail_without_policy(kind, false, &err).await?;
                        // Counted once per failure the registry recorded, not per retry.
                        summary.plugin_errors.clear();
                        metrics.org_policy_failure(&req.org, err.failure.kind, err.failure.at);
                        summary
                    }
                })
            };
            let summary = tokio::select! {
                biased;
                () = req.cancel.cancelled() => anyhow::bail!(
                    "cancelled by shutdown; what it recorded is journaled and the next start \
                     runs a full sync"
                ),
                summary = work => summary?,
            };
            account(&metrics, &summary);
            metrics.run_recorded(&summary.organization, summary.kind, summary.outcome);
            let v = &summary.verdicts;
            let decided = v.allow + v.block + v.quarantine + v.exempt;
            if decided == 0 && v.undecided > 0 {
                roll_back(&registry, &summary);
            }
            req.progress
                .set("done", decided, Some(decided + v.undecided));
            tracing::info!(
                org = %summary.organization,
                run = %summary.run,
                kind = summary.kind.as_str(),
                outcome = summary.outcome.as_str(),
                devices_changed = summary.devices_changed,
                commands_issued = summary.commands_issued,
                commands_failed = summary.commands_failed,
                "sync finished"
            );
            match summary.outcome {
                // Only a run that could not reach the services shows as disconnected.
                RunOutcome::Failed => anyhow::bail!("{}", summary.errors.join("; ")),
                _ => Ok(()),
            }
        })
    })
}

/// One `Get-CASMailbox -ResultSize 1` to `runner`'s Exchange, for what the client reports to
/// the metrics (answered or not); its answer is not needed.
async fn probe_exchange(runner: &OrgSync) {
    use crate::exchange::cmdlets::{GetCasMailbox, ResultSize};
    let probe = GetCasMailbox {
        result_size: ResultSize::Limit(1),
        ..GetCasMailbox::default()
    };
    if let Err(e) = runner.exchange.run(&probe).await {
        tracing::debug!(org = %runner.name, "Exchange probe: {e}");
    }
}

/// After a run in which the access policy decided nothing (every batch failed): the version
/// is rolled back to the last good one, so that the next run decides again.
fn roll_back(registry: &PluginRegistry, summary: &sync::Summary) {
    let Some(&kind) = summary.plugin_errors.first() else {
        return;
    };
    let first = summary
        .errors
        .iter()
        .find(|e| e.starts_with("policy batch"))
        .map_or("", String::as_str);
    let reason = format!(
        "rolled back after run {} of organization {}: every policy batch failed ({} devices undecided); first failure: {first}",
        summary.run, summary.organization, summary.verdicts.undecided
    );
    if !registry.roll_back_policy_of(&summary.organization, &summary.plugin_digest, kind, reason) {
        tracing::warn!(
            org = %summary.organization,
            digest = %summary.plugin_digest,
            "the access policy decided nothing in a whole run, and there is no other version to fall back to"
        );
    }
}

impl Daemon {
    /// Opens the store (recovering from an unclean stop), loads the plugins and watches their
    /// directory, starts the scheduler and, with `[admin]`, the admin API. No sync starts
    /// before a timer or a trigger ([`Daemon::sync_all`]).
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        let http = HttpSettings::from_config(&config.network)?;
        let data_dir = config.sync.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || open_and_recover(&data_dir)).await??;
        let store = Arc::new(store);

        let options = RegistryOptions::from_config(config);
        let registry =
            tokio::task::spawn_blocking(move || PluginRegistry::new(PluginEngine::new()?, options))
                .await??;
        // The plugin directory and the organizations' settings files.
        let watcher = match registry.watches_files() {
            true => Some(registry.watch()?),
            false => None,
        };

        let metrics = Arc::new(Metrics::default());
        for org in &config.organizations {
            metrics.register_organization(&org.name);
        }
        let (runners, exchanges) = org_runners(config, &http, &store, &registry, &metrics)?;
        let actions = device_actions(&runners, &registry, &metrics);
        let admin_listener = bind_admin(config).await?;

        let scheduler = Scheduler::start(
            config
                .organizations
                .iter()
                .map(|o| (o.name.clone(), OrgSchedule::from(o))),
            run_fn(runners, registry.clone(), metrics.clone()),
            metrics.clone(),
            schedule::unix_now,
        );
        let admin = match admin_listener {
            Some((listener, token)) => {
                let state = AdminState {
                    store: store.clone(),
                    registry: registry.clone(),
                    scheduler: scheduler.clone(),
                    metrics,
                    token,
                    now: schedule::unix_now,
                    actions: Arc::new(actions),
                    confirmations: Arc::default(),
                };
                Some(serve_admin(config, listener, state)?)
            }
            None => None,
        };
        Ok(Daemon {
            scheduler,
            store,
            plugins: registry.engine().clone(),
            admin,
            _watcher: watcher,
            exchanges,
        })
    }

    /// Asks for a sync of every organization.
    pub fn sync_all(&self, kind: SyncKind) -> anyhow::Result<()> {
        for org in self.scheduler.organizations() {
            self.scheduler.trigger(org, kind)?;
        }
        Ok(())
    }

    /// Where the admin API listens (with `[admin]`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The sync queues, to trigger syncs from the embedding program.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Stops the syncs (cancelling the running ones), then the admin API, and closes the store.
    pub async fn shutdown(self) {
        tracing::info!("stopping: no new syncs; running ones are cancelled");
        // A plugin call runs on a blocking thread the runtime would wait for: end them all
        // before cancelling, so that the process stops within a second whatever they do.
        self.plugins.interrupt_all();
        self.scheduler.shutdown(Shutdown::Cancel).await;
        if let Some(admin) = self.admin {
            let _ = admin.stop.send(());
            match admin.task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "the admin API failed"),
                Err(err) => tracing::error!(error = %err, "the admin API task ended abnormally"),
            }
        }
        drop(self._watcher);
        for (org, exchange) in &self.exchanges {
            let closed = exchange.close().await;
            if closed > 0 {
                tracing::info!(org, closed, "closed the remote PowerShell sessions");
            }
        }
        // The last handle: closing the connection checkpoints SQLite's write-ahead log. A
        // cancelled run's store task may still hold one until it commits; the runtime waits
        // for it before the process exits.
        match Arc::try_unwrap(self.store) {
            Ok(store) => drop(store),
            Err(_) => tracing::debug!("a store task is finishing; the store closes after it"),
        }
        tracing::info!("stopped");
    }
}

/// Runs the connector until `shutdown` resolves. `ready` is called once it has started.
pub async fn run(
    config: &Config,
    ready: impl FnOnce(&Daemon),
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let daemon = Daemon::start(config).await?;
    // A quick sync at start: the runner makes it a full one when there is no cursor yet or an
    // earlier run was interrupted, so a restart resumes where the last process stopped.
    daemon.sync_all(SyncKind::Quick)?;
    ready(&daemon);
    shutdown.await;
    daemon.shutdown().await;
    Ok(())
}
