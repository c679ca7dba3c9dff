//! One sync of one organization, end to end: discover → match → decide → record → plan →
//! guard → apply → notify → finish, with the store as its memory.
//!
//! The order of the writes is what makes a crash at any point converge:
//!
//! 1. the inventory is saved (what Exchange and Intune said);
//! 2. verdicts, audit rows and the plan are recorded, the whole plan guarded first: a held plan
//!    in one transaction, any other in chunks of commands, each transaction holding its
//!    commands and the verdicts of every device they change (the other verdicts come last).
//!    The notices of devices whose verdict changes are enqueued with their verdicts;
//! 3. commands are sent (journal `sent`) and confirmed (`done`/`failed`) chunk by chunk, a
//!    chunk as soon as the transaction that recorded it commits ([`super::apply`]);
//! 4. the due notices (this run's and earlier retries) are rendered and sent, each marked after
//!    the server's answer ([`super::notices`]);
//! 5. the run is finished, which moves the quick-sync cursor only when it succeeded.
//!
//! A process killed between 2 and 4 leaves `planned`/`sent` commands and a `running` run;
//! [`Store::recover`] at the next start abandons both, and [`OrgSync::run`] then runs a full
//! sync, which re-reads every mailbox and plans afresh instead of replaying the old plan.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use super::apply::{Applied, ToRecord, apply, apply_received, record_in_chunks};
use super::blocking;
use super::decide::{DEFAULT_BATCH_SIZE, decide_built};
use super::discover::{self, Discovered};
use super::inventory::{DeviceKey, ManagedDevice, Verdict};
use super::matching::match_inventory;
use super::notices::{NoticeReport, NoticeStage, TemplateSource, deliver};
use super::plan::{Decided, DeviceChange, PlanStep, PlannedCommand, plan_steps};
use super::progress;
use super::settings::SyncSettings;
use anyhow::Context;

use crate::config::{Notify, Organization};
use crate::exchange::ExchangeClient;
use crate::graph::GraphClient;
use crate::net::HttpSettings;
use crate::notify::NoticeId;
use crate::plugin::{AccessPolicyPlugin, types};
use crate::store::{
    DecisionBatch, DecisionRecord, DeviceView, NoticeBatch, NoticeRequest, OrgId, RunEnd, RunId,
    RunKind, RunOutcome, Store, StoreError, VerdictCounts,
};
use crate::timestamp::unix_now;

/// Which sync to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncKind {
    /// The changes since the last successful sync; a full sync when there is none.
    Quick,
    /// Everything, plus the organization default.
    Full,
}

/// What one sync did: what `easgate sync` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub organization: String,
    /// The run's id in the store.
    pub run: RunId,
    /// `quick`, `full` or `what-if`.
    pub kind: RunKind,
    pub outcome: RunOutcome,
    /// The access-policy version that decided.
    pub plugin_digest: String,
    /// Devices per verdict (`undecided`: their plugin batch failed).
    pub verdicts: VerdictCounts,
    /// Devices whose lists the plan changes (or, dry run, would change).
    pub devices_changed: u64,
    /// Commands sent to Exchange to apply the plan.
    pub commands_issued: u64,
    /// Commands that failed.
    pub commands_failed: u64,
    /// Commands of the plan (held or not).
    pub commands_planned: u64,
    /// Devices the plan moves from allowed to blocked or quarantined, and the guard's limit.
    pub restrictions: u64,
    pub restriction_limit: u64,
    /// HTTP requests discovery sent to Exchange (every page and retry).
    pub exchange_reads: u64,
    /// HTTP requests discovery sent to Graph (every page and retry; token requests not
    /// included).
    pub graph_calls: u64,
    pub duration_ms: u64,
    /// Plugin batch failures and failed commands, one line each.
    pub errors: Vec<String>,
    /// The kind of each failed policy batch, for `/metrics`.
    pub plugin_errors: Vec<crate::plugin::PluginErrorKind>,
    /// The devices that change (dry run only; empty otherwise).
    pub changes: Vec<DeviceChange>,
    /// What the notify stage did (all zero when notices are off).
    pub notices: NoticeReport,
}

impl Summary {
    /// The summary of run `run` as it starts: running, nothing counted yet.
    fn started(organization: &str, run: RunId, kind: RunKind, plugin_digest: String) -> Self {
        Summary {
            organization: organization.to_owned(),
            run,
            kind,
            outcome: RunOutcome::Running,
            plugin_digest,
            verdicts: VerdictCounts::default(),
            devices_changed: 0,
            commands_issued: 0,
            commands_failed: 0,
            commands_planned: 0,
            restrictions: 0,
            restriction_limit: 0,
            exchange_reads: 0,
            graph_calls: 0,
            duration_ms: 0,
            errors: Vec::new(),
            plugin_errors: Vec::new(),
            changes: Vec::new(),
            notices: NoticeReport::default(),
        }
    }
}

/// Logs how long each stage took (at debug level), for an operator chasing a slow sync.
struct Stage<'a> {
    org: &'a str,
    since: Instant,
}

impl<'a> Stage<'a> {
    fn new(org: &'a str) -> Self {
        Self {
            org,
            since: Instant::now(),
        }
    }

    fn done(&mut self, stage: &str) {
        let ms = self.since.elapsed().as_millis() as u64;
        tracing::debug!(
            org = self.org,
            stage,
            ms,
            rss_mb = resident_mb(),
            "sync stage done"
        );
        self.since = Instant::now();
    }
}

/// The process's resident memory in MB, where the OS tells it cheaply (Linux); 0 elsewhere.
fn resident_mb() -> u64 {
    #[cfg(target_os = "linux")]
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
        && let Some(pages) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u64>().ok())
    {
        return pages * 4096 / 1_000_000;
    }
    0
}

/// Hands the heap's free pages back to the OS. glibc keeps what a thread frees in that
/// thread's arena; after a stage frees tens of megabytes on the blocking pool, the next stage,
/// allocating on another thread, would otherwise grow the process instead of reusing them.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's `malloc_trim` only releases free pages of its arenas; it takes the
        // arenas' locks and may be called from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Everything one organization's sync needs.
pub struct OrgSync {
    pub name: String,
    pub exchange: ExchangeClient,
    pub graph: GraphClient,
    pub settings: SyncSettings,
    pub store: Arc<Store>,
    /// Devices per plugin call.
    pub batch_size: usize,
    /// How notices are sent; `None` (no `[notify]`): none is recorded or sent.
    pub notices: Option<NoticeStage>,
}

/// Why a sync did not run at all (a failed discovery is a finished run, not an error).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run {0} is not held for approval")]
    NotHeld(RunId),
}

impl OrgSync {
    /// An organization's sync with the default batch size.
    pub fn new(
        name: impl Into<String>,
        exchange: ExchangeClient,
        graph: GraphClient,
        settings: SyncSettings,
        store: Arc<Store>,
    ) -> Self {
        Self {
            name: name.into(),
            exchange,
            graph,
            settings,
            store,
            batch_size: DEFAULT_BATCH_SIZE,
            notices: None,
        }
    }

    /// An organization's sync as the configuration describes it: its clients, its sync
    /// settings and, given `[notify]` and where to find the active template, its notice stage.
    /// Call it inside a Tokio runtime: the SMTP channel's connection pool lives there.
    pub fn from_config(
        org: &Organization,
        http: &HttpSettings,
        store: Arc<Store>,
        notices: Option<(&Notify, TemplateSource)>,
    ) -> anyhow::Result<Self> {
        let context = |what: &str| format!("organization `{}`: {what}", org.name);
        let exchange = ExchangeClient::builder(org, http)
            .build()
            .with_context(|| context("Exchange client"))?;
        let graph = GraphClient::new(org, http).with_context(|| context("Graph client"))?;
        let mut sync = Self::new(org.name.clone(), exchange, graph, org.sync.clone(), store);
        if let Some((notify, template)) = notices {
            sync.notices = Some(
                NoticeStage::from_config(org, notify, template)
                    .with_context(|| context("notices"))?,
            );
        }
        Ok(sync)
    }

    fn org(&self) -> Result<OrgId, StoreError> {
        self.store.organization(&self.name, unix_now())
    }

    /// Runs one sync decided by `policy` (pinned for the whole run). `dry_run` plans and
    /// reports without recording verdicts or applying anything.
    pub async fn run(
        &self,
        kind: SyncKind,
        dry_run: bool,
        policy: Arc<AccessPolicyPlugin>,
    ) -> Result<Summary, SyncError> {
        self.run_reporting(kind, dry_run, policy, &|_, _, _| {})
            .await
    }

    /// [`run`](Self::run), telling `report` each stage as it starts and how far it got within
    /// it: its name, items done and items in it when known (pages listed, devices decided,
    /// commands sent; see [`progress`]). The daemon shows it as the running sync's progress.
    pub async fn run_reporting(
        &self,
        kind: SyncKind,
        dry_run: bool,
        policy: Arc<AccessPolicyPlugin>,
        report: progress::Report<'_>,
    ) -> Result<Summary, SyncError> {
        let started = Instant::now();
        let mut stage = Stage::new(&self.name);
        let now = unix_now();
        let org = self.org()?;
        // A quick sync needs a cursor, and unfinished commands of an earlier run mean some
        // mailboxes' lists may be anything: both call for reading everything.
        let cursor = self.store.sync_cursor(org)?;
        let unfinished = !self.store.unfinished(org)?.is_empty() || self.interrupted(org)?;
        let full = kind == SyncKind::Full || cursor.is_none() || unfinished;
        let run_kind = match (dry_run, full) {
            (true, _) => RunKind::WhatIf,
            (false, true) => RunKind::Full,
            (false, false) => RunKind::Quick,
        };
        let digest = policy.meta.digest.hex();
        // Like the policy, the notice template is pinned for the whole run.
        let template = self.notices.as_ref().map(|n| (n.template)());
        let run = self.store.start_run(org, run_kind, Some(&digest), now)?;
        let mut summary = Summary::started(&self.name, run, run_kind, digest.clone());
        let groups = &self.settings.scope_groups;
        let requests_before = (self.exchange.requests_sent(), self.graph.requests_sent());
        let pages = progress::Counter::default();
        let discovered = progress::stage(report, progress::DISCOVER, None, &pages, async {
            if full {
                let rules = self.settings.device_access_rules.is_some();
                let listing = discover::full(&self.exchange, &self.graph, groups, rules);
                progress::count_pages(&pages, listing).await
            } else {
                let since = cursor.expect("a quick sync has a cursor");
                let listing = discover::quick(&self.exchange, &self.graph, groups, since);
                progress::count_pages(&pages, listing).await
            }
        })
        .await;
        summary.exchange_reads = self.exchange.requests_sent() - requests_before.0;
        summary.graph_calls = self.graph.requests_sent() - requests_before.1;
        let discovered = match discovered {
            Ok(d) => d,
            Err(e) => {
                summary.errors.push(format!("discovery failed: {e}"));
                return self.finish(summary, RunOutcome::Failed, started).await;
            }
        };
        stage.done("discover");
        let Discovered {
            inventory,
            org_default,
            org_settings,
            access_rules,
            unreadable,
            ..
        } = discovered;
        // Devices whose records could not be read are not in the inventory: they must not
        // count as gone, nor be moved by a new org default that nobody decided for them.
        let complete = unreadable.is_empty();
        summary.errors.extend(unreadable);

        // Only a complete Intune listing can show a record gone; a quick sync skips the read.
        let previously_managed = if inventory.managed_complete {
            blocking(&self.store, move |s| s.managed_keys(org)).await?
        } else {
            HashSet::new()
        };
        let matched = Arc::new(match_inventory(
            &inventory,
            &self.settings,
            &previously_managed,
        ));
        // Decoding the listings freed their pages and intermediate records.
        release_free_memory();
        stage.done("match");
        let inventory = Arc::new(inventory);

        let info = types::SyncInfo {
            kind: match run_kind {
                RunKind::Quick => types::SyncKind::Quick,
                RunKind::Full => types::SyncKind::Full,
                RunKind::WhatIf => types::SyncKind::WhatIf,
            },
            now,
            organization: self.name.clone(),
        };
        // Each batch's contexts are built as it is decided, not all at once.
        let build = {
            let (matched, inventory) = (matched.clone(), inventory.clone());
            move |batch: std::ops::Range<usize>| {
                matched.devices[batch]
                    .iter()
                    .map(|d| d.context(&inventory))
                    .collect()
            }
        };
        let count = matched.devices.len();
        // Saving the inventory and deciding use a core each.
        let save = async {
            if dry_run {
                Ok(())
            } else {
                self.save_inventory(org, inventory.clone(), full && complete, now)
                    .await
            }
        };
        let decided = progress::Counter::default();
        let deciding = decide_built(policy, info, count, self.batch_size, decided.clone(), build);
        let (saved, decisions) = progress::stage(
            report,
            progress::DECIDE,
            Some(count as u64),
            &decided,
            async { tokio::join!(save, deciding) },
        )
        .await;
        saved?;
        stage.done("save inventory and decide");
        report(progress::PLAN, 0, None);
        // Plan needs only the devices and mailboxes; the Intune records and users (half the
        // inventory at 100 000 devices) are saved and matched by now.
        let mut inventory = inventory;
        if let Some(inventory) = Arc::get_mut(&mut inventory) {
            inventory.managed = Vec::new();
            inventory.users = Vec::new();
        }
        release_free_memory();
        for failure in &decisions.failures {
            summary.errors.push(format!(
                "policy batch of {} devices (from device {}) decided nothing: {}",
                failure.len, failure.first, failure.error
            ));
            summary.plugin_errors.push(failure.kind);
        }

        let mut decided = Vec::new();
        let mut records = Vec::new();
        let mut notice_requests = Vec::new();
        let mailboxes: HashMap<String, &super::Mailbox> = if self.notices.is_some() && !dry_run {
            inventory
                .mailboxes
                .iter()
                .map(|m| (m.identity.to_lowercase(), m))
                .collect()
        } else {
            HashMap::new()
        };
        // The decide task has let go of its copy. The decisions and the matched devices' keys
        // move into the records instead of being copied: 100 000 of each at full scale.
        let mut matched =
            Arc::into_inner(matched).expect("the decide task no longer holds the matched devices");
        for (i, decision) in decisions.decisions.into_iter().enumerate() {
            let verdict = decision.as_ref().map(|d| Verdict::from(d.verdict));
            summary.verdicts.add(verdict);
            if let (Some(d), Some(verdict)) = (decision, verdict) {
                let device = &inventory.devices[i];
                decided.push(Decided { device, verdict });
                let key = std::mem::replace(&mut matched.devices[i].key, DeviceKey::new(""));
                // The store enqueues it only if the verdict changes; a device without a
                // mailbox has nobody to tell.
                if d.notify
                    && let Some(mailbox) = device
                        .mailbox
                        .as_ref()
                        .and_then(|m| mailboxes.get(&m.to_lowercase()))
                    && !mailbox.primary_smtp.trim().is_empty()
                {
                    notice_requests.push(NoticeRequest {
                        id: NoticeId::derive(
                            &self.name,
                            key.as_str(),
                            verdict.as_str(),
                            &run.to_string(),
                        ),
                        key: key.clone(),
                        state: verdict,
                        reason: d.reason.clone(),
                        recipient: mailbox.primary_smtp.trim().to_owned(),
                        user_principal_name: mailbox.user_principal_name.clone(),
                    });
                }
                records.push(DecisionRecord {
                    key,
                    verdict,
                    reason: d.reason,
                    notify: d.notify,
                });
            }
        }
        drop(mailboxes);
        let removals = matched.removal_candidates(&inventory, &self.settings);
        let org_devices = if full {
            inventory.devices.len()
        } else {
            self.store.device_count(org)?
        };
        let mut plan = plan_steps(
            &inventory.mailboxes,
            &decided,
            &removals,
            &self.settings.max_new_restrictions,
            org_devices,
        );
        if full
            && self.settings.manage_org_default
            && let Some(current) = org_default
        {
            if complete {
                plan.manage_org_default(current, &inventory.devices, &decided);
            } else if current != super::AccessLevel::Quarantine {
                summary.errors.push(format!(
                    "the organization default stays {} this run: the devices whose records could not be read would move with it",
                    current.as_str()
                ));
            }
        }
        if full {
            // After the lists and the default: rules decide only devices on no list.
            plan.commands.extend(
                super::plan::exchange_settings(
                    &self.settings,
                    org_settings.as_ref(),
                    access_rules.as_deref(),
                )
                .into_iter()
                .map(PlanStep::from),
            );
        }
        stage.done("plan");
        summary.devices_changed = (plan.changes.len() + removals.len()) as u64;
        summary.commands_planned = plan.commands.len() as u64;
        summary.restrictions = plan.restrictions as u64;
        summary.restriction_limit = plan.limit as u64;

        if dry_run {
            summary.changes = plan.changes;
            if plan.held {
                summary.errors.push(format!(
                    "a real run would be held: the plan restricts {} devices, more than the limit of {}",
                    plan.restrictions, plan.limit
                ));
            }
            // A what-if run records its counts only, and is never a held plan an operator could
            // approve: the store says succeeded, the summary says what a real run would do.
            let mut summary = self.finish(summary, RunOutcome::Succeeded, started).await?;
            if plan.held {
                summary.outcome = RunOutcome::Held;
            }
            return Ok(summary);
        }

        // What is left to do needs only the plan's commands and the records: free the
        // inventory and the matched devices before the store's writes (at 100 000 devices
        // they are a third of the process).
        drop((decided, removals, matched));
        drop(inventory);
        release_free_memory();
        let commands = std::mem::take(&mut plan.commands);
        let (held, restrictions, limit) = (plan.held, plan.restrictions, plan.limit);
        drop(plan);
        let resend_interval_secs = self
            .notices
            .as_ref()
            .map_or(0, |n| n.resend_interval.as_secs() as i64);
        if held {
            // A held plan is recorded whole, in one transaction.
            let commands: Vec<PlannedCommand> =
                commands.into_iter().map(PlanStep::into_planned).collect();
            let recorded = {
                let digest = digest.clone();
                blocking(&self.store, move |s| {
                    s.record_decisions_and_notices(
                        &DecisionBatch {
                            run,
                            plugin_digest: &digest,
                            decided_at: now,
                            decisions: &records,
                            commands: &commands,
                            held,
                        },
                        // A held plan changes nothing on Exchange yet, so nobody is told.
                        &NoticeBatch {
                            requests: &[],
                            resend_interval_secs,
                        },
                    )
                })
                .await?
            };
            summary.notices.deduplicated = recorded.notices_deduplicated;
            stage.done("record");
            summary.errors.push(format!(
                "held: the plan restricts {} devices, more than the limit of {}; approve with `easgate plan approve {run}`",
                restrictions, limit
            ));
            return self.finish(summary, RunOutcome::Held, started).await;
        }
        // Apply starts on each chunk of the plan as soon as the transaction recording it (with
        // its devices' verdicts) commits, so the SQLite writes overlap the commands.
        let total = Some(commands.len() as u64);
        let (send, received) = mpsc::unbounded_channel();
        let record = ToRecord {
            run,
            plugin_digest: digest.clone(),
            decided_at: now,
            decisions: records,
            commands,
            notices: notice_requests,
            resend_interval_secs,
        };
        let recording = blocking(&self.store, move |s| record_in_chunks(s, record, &send));
        let sent = progress::Counter::default();
        let applying =
            progress::count_commands(&sent, apply_received(&self.exchange, &self.store, received));
        let (recorded, applied) = progress::stage(report, progress::APPLY, total, &sent, async {
            tokio::join!(recording, applying)
        })
        .await;
        let (recorded, applied) = (recorded?, applied?);
        summary.notices.queued = recorded.queued;
        summary.notices.deduplicated = recorded.deduplicated;
        stage.done("record and apply");
        self.account(&mut summary, &applied);
        if let (Some(notices), Some(template)) = (&self.notices, template) {
            deliver(notices, template, &self.store, org, &mut summary.notices).await?;
            let template_errors = std::mem::take(&mut summary.notices.template_errors);
            summary.plugin_errors.extend(template_errors);
            stage.done("notify");
        }
        let outcome = if summary.errors.is_empty() {
            RunOutcome::Succeeded
        } else {
            RunOutcome::Partial
        };
        self.finish(summary, outcome, started).await
    }

    /// Whether a run was interrupted (its commands abandoned by [`Store::recover`]) since the
    /// last full run that finished: the mailboxes it was editing must be read again.
    fn interrupted(&self, org: OrgId) -> Result<bool, StoreError> {
        for run in self.store.recent_runs(org, 100)? {
            match (run.kind, run.outcome) {
                (_, RunOutcome::Interrupted) => return Ok(true),
                (RunKind::Full, RunOutcome::Succeeded | RunOutcome::Partial) => return Ok(false),
                _ => {}
            }
        }
        Ok(false)
    }

    /// Applies a held plan an operator approved: its journaled commands as planned. Commands
    /// whose effect Exchange already has (an `Add` of a present entry) count as done.
    pub async fn approve(&self, run: RunId) -> Result<Summary, SyncError> {
        let record = self.store.run(run)?.ok_or(StoreError::UnknownRun(run))?;
        if record.outcome != RunOutcome::Held {
            return Err(SyncError::NotHeld(run));
        }
        self.store.approve(run, unix_now())?;
        self.apply_approved(run, &|_, _, _| {}).await
    }

    /// Applies a plan whose approval is recorded but not yet applied (the admin API records
    /// approvals; the daemon applies them before the organization's next sync), telling
    /// `report` how many of its commands are done.
    pub async fn apply_approved(
        &self,
        run: RunId,
        report: progress::Report<'_>,
    ) -> Result<Summary, SyncError> {
        let started = Instant::now();
        let record = self.store.run(run)?.ok_or(StoreError::UnknownRun(run))?;
        if record.outcome != RunOutcome::Running || record.approval.as_deref() != Some("approved") {
            return Err(SyncError::NotHeld(run));
        }
        let commands: Vec<_> = self
            .store
            .journal(run)?
            .into_iter()
            .filter(|e| e.state == crate::store::JournalState::Planned)
            .map(|e| (e.id, e.command.command))
            .collect();
        let mut summary = Summary {
            verdicts: record.counts,
            devices_changed: record.devices_changed,
            commands_planned: commands.len() as u64,
            ..Summary::started(
                &self.name,
                run,
                record.kind,
                record.plugin_digest.unwrap_or_default(),
            )
        };
        let sent = progress::Counter::default();
        let total = Some(commands.len() as u64);
        let applying =
            progress::count_commands(&sent, apply(&self.exchange, &self.store, commands));
        let applied = progress::stage(report, progress::APPLY, total, &sent, applying).await?;
        self.account(&mut summary, &applied);
        let outcome = if summary.errors.is_empty() {
            RunOutcome::Succeeded
        } else {
            RunOutcome::Partial
        };
        self.finish(summary, outcome, started).await
    }

    fn account(&self, summary: &mut Summary, applied: &Applied) {
        summary.commands_issued = applied.sent;
        summary.commands_failed = applied.failed.len() as u64;
        for (id, error) in &applied.failed {
            summary.errors.push(format!("command {id} failed: {error}"));
        }
    }

    async fn finish(
        &self,
        mut summary: Summary,
        outcome: RunOutcome,
        started: Instant,
    ) -> Result<Summary, SyncError> {
        summary.outcome = outcome;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let end = RunEnd {
            ended_at: unix_now(),
            outcome,
            counts: summary.verdicts,
            devices_changed: summary.devices_changed,
            commands_issued: summary.commands_issued,
            error: (!summary.errors.is_empty()).then(|| summary.errors.join("\n")),
        };
        let run = summary.run;
        blocking(&self.store, move |s| s.finish_run(run, &end)).await?;
        Ok(summary)
    }

    async fn save_inventory(
        &self,
        org: OrgId,
        inventory: Arc<super::Inventory>,
        forget_absent: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        blocking(&self.store, move |s| {
            let managed: HashMap<String, &ManagedDevice> = inventory
                .managed
                .iter()
                .filter(|m| !m.eas_device_id.is_empty())
                .map(|m| (m.eas_device_id.to_lowercase(), m))
                .collect();
            let views: Vec<DeviceView<'_>> = inventory
                .devices
                .iter()
                .map(|d| DeviceView {
                    exchange: d,
                    managed: managed.get(&d.device_id.to_lowercase()).copied(),
                })
                .collect();
            s.save_inventory(org, &views, now)?;
            drop((views, managed));
            // What `easgate policy diff` decides with; a quick sync, or a full one that could
            // not read every record, saves what it read and forgets nothing.
            s.save_directory(
                org,
                &inventory.mailboxes,
                &inventory.users,
                forget_absent,
                now,
            )?;
            if forget_absent {
                let gone = absent(s.device_keys(org)?, &inventory.devices);
                s.forget_devices(org, &gone)?;
            }
            Ok(())
        })
        .await
    }
}

/// The `stored` keys of no partnership in `devices`, in the stored order. The present keys are
/// looked up one at a time, not gathered into a second set as large as the organization.
fn absent(stored: Vec<DeviceKey>, devices: &[super::ExchangeDevice]) -> Vec<DeviceKey> {
    let mut absent: HashSet<&DeviceKey> = stored.iter().collect();
    for device in devices {
        absent.remove(&device.key());
    }
    stored
        .iter()
        .filter(|k| absent.contains(k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::ExchangeDevice;

    #[test]
    fn absent_keeps_the_stored_keys_no_partnership_has() {
        let device = |identity: &str| ExchangeDevice {
            identity: identity.into(),
            ..ExchangeDevice::default()
        };
        let stored = [
            "alice\\eas\\a1",
            "bob\\eas\\b1",
            "carol\\eas\\c1",
            "dave\\eas\\d1",
        ]
        .map(DeviceKey::new)
        .to_vec();
        // Keys ignore case and surrounding spaces, as Exchange's identities do.
        let present = [
            device(" Alice\\EAS\\A1"),
            device("carol\\eas\\c1"),
            device("erin\\eas\\e1"),
        ];
        assert_eq!(
            absent(stored, &present),
            ["bob\\eas\\b1", "dave\\eas\\d1"].map(DeviceKey::new)
        );
    }
}
