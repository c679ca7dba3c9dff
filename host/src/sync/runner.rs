//! One sync of one organization, end to end: discover → match → decide → record → plan →
//! guard → apply → notify → finish, with the store as its memory. Discover, match, decide and
//! the inventory's save overlap: a full sync works on each page of the device listing while
//! the next one is on its way.
//!
//! The order of the writes is what makes a crash at any point converge:
//!
//! 1. the inventory is saved (what Exchange and Intune said): each page of the device listing
//!    as it is taken in ([`super::save`]), the directory and the forgetting of devices gone
//!    while the plan is made;
//! 2. verdicts, audit rows and the plan are recorded, the whole plan guarded first: a held plan
//!    in one transaction, any other in chunks of commands, each transaction holding its
//!    commands and the verdicts of every device they change (the other verdicts ride along
//!    with the chunks after the first). The notices of devices whose verdict changes are
//!    enqueued with their verdicts;
//! 3. commands are sent (journal `sent`) and confirmed (`done`/`failed`) chunk by chunk, a
//!    chunk as soon as the transaction that recorded it commits, the recording staying two
//!    chunks ahead ([`super::apply`]);
//! 4. the due notices (this run's and earlier retries) are rendered and sent, each marked after
//!    the server's answer ([`super::notices`]);
//! 5. the run is finished, which moves the quick-sync cursor only when it succeeded.
//!
//! A process killed between 2 and 4 leaves `planned`/`sent` commands and a `running` run;
//! [`Store::recover`] at the next start abandons both, and [`OrgSync::run`] then runs a full
//! sync, which re-reads every mailbox and plans afresh instead of replaying the old plan.

use super::statistics::{self, StatisticsReport};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::apply::{Applied, ToRecord, apply, apply_received, record_in_chunks, recorded_chunks};
use super::blocking;
use super::decide::{DEFAULT_BATCH_SIZE, Decider};
use super::discover::{self, Discovered, Started};
use super::dry_run::DryRun;
use super::matching::{Matched, MatchedDevice, Matcher};
use super::notices::{
    Locale, Locales, NoticeReport, NoticeStage, TemplateSource, Unresolved, deliver,
    resolve_locales,
};
use super::plan::{Decided, Plan, PlanStep, PlannedCommand, Platform, plan_steps};
use super::progress;
use super::save::InventorySaver;
use crate::model::SyncKind;
use crate::model::inventory::{DeviceKey, KeyDigests, ShownState, Verdict};
use crate::model::settings::SyncSettings;
use anyhow::Context;

use crate::config::{Notify, Organization};
use crate::exchange::ExchangeClient;
use crate::graph::GraphClient;
use crate::model::Inventory;
use crate::model::RunKind;
use crate::net::HttpSettings;
use crate::notify::NoticeId;
use crate::plugin::org_policy::OrgPolicyError;
use crate::plugin::{AccessPolicyPlugin, NoticeTemplatePlugin, types};
use crate::store::{
    DecisionBatch, DecisionRecord, NoticeBatch, NoticeRequest, OrgId, RunEnd, RunId, RunOutcome,
    Store, StoreError, VerdictCounts,
};
use crate::timestamp::unix_now;

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
    /// What a real run would change (dry run only).
    pub dry_run: Option<super::dry_run::DryRun>,
    /// What the notify stage did (all zero when notices are off).
    pub notices: NoticeReport,
    /// What reading device statistics did (`None`: the run did not read them). Devices left
    /// without them by an error also make one line of `errors`.
    pub statistics: Option<StatisticsReport>,
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
            dry_run: None,
            notices: NoticeReport::default(),
            statistics: None,
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

    /// Records the sync an organization without a usable policy could not run (its own
    /// plugin or settings are broken, see [`crate::plugin::org_policy`]): a failed run whose
    /// error is `error`, so that the history, the status page and `/metrics` show why.
    pub async fn fail_without_policy(
        &self,
        kind: SyncKind,
        dry_run: bool,
        error: &OrgPolicyError,
    ) -> Result<Summary, SyncError> {
        let started = Instant::now();
        let org = self.org()?;
        let kind = if dry_run {
            RunKind::WhatIf
        } else {
            RunKind::from(kind)
        };
        let id = self.store.start_run(org, kind, None, unix_now())?;
        let mut summary = Summary::started(&self.name, id, kind, String::new());
        summary.errors.push(error.to_string());
        summary.plugin_errors.push(error.failure.kind);
        self.finish(summary, RunOutcome::Failed, started).await
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
        // The stages' futures are on the heap: their states are large in a debug build, and a
        // caller's stack (a test's, awaiting the run inline) is not.
        let mut run = self.begin(kind, dry_run, &policy)?;
        let Some(intake) = Box::pin(self.take_in_stage(&mut run, policy, report)).await? else {
            return self
                .finish(run.summary, RunOutcome::Failed, run.started)
                .await;
        };
        let decided = Box::pin(self.decide(&mut run, intake, report)).await;
        let planned = self.plan(&mut run, decided)?;
        if let Some(report) = planned.dry_run {
            return Box::pin(self.rehearse(run, report)).await;
        }
        let ready = Box::pin(self.settle(&mut run, planned)).await?;
        if ready.held {
            return Box::pin(self.hold(run, ready)).await;
        }
        let mut ready = ready;
        let shown = std::mem::take(&mut ready.shown);
        let applied = Box::pin(self.record_and_apply(&mut run, ready, report)).await?;
        self.record_shown((run.id, run.org), shown).await?;
        self.account(&mut run.summary, &applied);
        if let (Some(notices), Some(template)) = (&self.notices, run.template.take()) {
            Box::pin(self.notify(notices, template, run.org, &mut run.summary)).await?;
            run.stage.done("notify");
        }
        self.conclude(run.summary, run.started).await
    }

    /// Starts the run's record: which sync it is (a quick sync needs a cursor, and unfinished
    /// commands of an earlier run mean some mailboxes' lists may be anything: both call for
    /// reading everything), with the policy and the notice template pinned for the whole run.
    fn begin(
        &self,
        kind: SyncKind,
        dry_run: bool,
        policy: &AccessPolicyPlugin,
    ) -> Result<Run<'_>, SyncError> {
        let started = Instant::now();
        let stage = Stage::new(&self.name);
        let now = unix_now();
        let org = self.org()?;
        let cursor = self.store.sync_cursor(org)?;
        let unfinished = !self.store.unfinished(org)?.is_empty() || self.interrupted(org)?;
        let full = kind == SyncKind::Full || cursor.is_none() || unfinished;
        let kind = match (dry_run, full) {
            (true, _) => RunKind::WhatIf,
            (false, true) => RunKind::Full,
            (false, false) => RunKind::Quick,
        };
        let digest = policy.meta.digest.hex();
        let template = self.notices.as_ref().map(|n| (n.template)());
        let id = self.store.start_run(org, kind, Some(&digest), now)?;
        let summary = Summary::started(&self.name, id, kind, digest.clone());
        Ok(Run {
            org,
            id,
            kind,
            now,
            full,
            dry_run,
            cursor,
            digest,
            template,
            summary,
            started,
            stage,
        })
    }

    /// Discovery, matching, the policy's first batches and saving the inventory, which
    /// overlap: each page of the device listing is matched, queued for the policy and for the
    /// store while the next page is on its way. `None`: discovery failed (said in the summary).
    async fn take_in_stage(
        &self,
        run: &mut Run<'_>,
        policy: Arc<AccessPolicyPlugin>,
        report: progress::Report<'_>,
    ) -> Result<Option<Intake>, SyncError> {
        let (org, now, dry_run) = (run.org, run.now, run.dry_run);
        let requests_before = (self.exchange.requests_sent(), self.graph.requests_sent());
        let pages = progress::Counter::default();
        let decided = progress::Counter::default();
        let info = types::SyncInfo {
            kind: run.kind.into(),
            now,
            organization: self.name.clone(),
        };
        // Only the built-in policy's settings are read here (see
        // `SyncSettings::reads_statistics`): a plugin file's are its own business.
        let builtin = (policy.meta.source == crate::plugin::Source::Builtin)
            .then_some(policy.meta.settings.as_str());
        let reads_statistics = self.settings.reads_statistics(builtin);
        // The configuration refuses this where it can see the settings; a settings file is
        // read only by the plugin registry, so it can only be said here.
        if self.settings.starves_stale_limit(builtin) {
            run.summary.errors.push(format!(
                "the built-in policy's {} never fires: `read_device_statistics = false` in \
                 [organization.sync] withholds the last sync it needs; remove that line",
                crate::model::settings::STALE_LIMIT_KEY
            ));
        }
        let listing = self.list(run, &pages);
        let taken_in = progress::stage(report, progress::DISCOVER, None, &pages, async {
            let started = listing.await?;
            let saver = (!dry_run).then(|| InventorySaver::start(self.store.clone(), org, now));
            let decider = Decider::start(policy, info, decided.clone());
            let taken_in = self
                .take_in(org, started, saver, &decider, reads_statistics)
                .await?;
            Ok::<_, TakeInError>((taken_in, decider))
        })
        .await;
        run.summary.exchange_reads = self.exchange.requests_sent() - requests_before.0;
        run.summary.graph_calls = self.graph.requests_sent() - requests_before.1;
        match taken_in {
            Ok((taken_in, decider)) => {
                run.stage.done("discover, match and save");
                if let Some(report) = &taken_in.statistics {
                    run.summary.errors.extend(report.error_line());
                }
                run.summary.statistics = taken_in.statistics.clone();
                Ok(Some(Intake {
                    taken_in,
                    decider,
                    decided,
                }))
            }
            Err(TakeInError::Discover(e)) => {
                run.summary.errors.push(format!("discovery failed: {e}"));
                Ok(None)
            }
            Err(TakeInError::Store(e)) => Err(e.into()),
        }
    }

    /// Starts the listing a run reads: everything, or the changes since the cursor.
    fn list<'s>(
        &'s self,
        run: &Run<'_>,
        pages: &'s progress::Counter,
    ) -> impl Future<Output = Result<Started, discover::DiscoverError>> + 's {
        let (full, cursor, now, org) = (run.full, run.cursor, run.now, run.org);
        let groups = &self.settings.scope_groups;
        async move {
            if full {
                let rules = self.settings.device_access_rules.is_some();
                // A quarter of the commands in flight for the device listing's slices, the
                // rest for the other listings running beside them.
                let slices = discover::listing_slices(self.exchange.parallel_commands() / 4, now);
                // On the heap: the discovery's state is large in a debug build, and a caller's
                // stack (a test's) is not.
                let listing = Box::pin(discover::full(
                    &self.exchange,
                    &self.graph,
                    groups,
                    rules,
                    slices,
                ));
                progress::count_pages(pages, listing).await
            } else {
                let since = cursor.expect("a quick sync has a cursor");
                let known = blocking(&self.store, move |s| s.known(org));
                // On the heap, as the full one: its state is as large in a debug build.
                let listing = Box::pin(discover::quick(
                    &self.exchange,
                    &self.graph,
                    groups,
                    since,
                    known,
                ));
                progress::count_pages(pages, listing).await
            }
        }
    }

    /// Waits for the policy's last batches, and lets go of what plan does not need: it needs
    /// only the devices and mailboxes; the Intune records (half the inventory at 100 000
    /// devices) are matched and saved by now, the users go to the store, whose writes of the
    /// directory and of absent devices go on while the plan is made.
    async fn decide(
        &self,
        run: &mut Run<'_>,
        intake: Intake,
        report: progress::Report<'_>,
    ) -> DecidedInventory {
        let Intake {
            taken_in,
            decider,
            decided,
        } = intake;
        let TakenIn {
            mut inventory,
            matched,
            saver,
            org_default,
            org_settings,
            access_rules,
            unreadable,
            ..
        } = taken_in;
        // Devices whose records could not be read are not in the inventory: they must not
        // count as gone, nor be moved by a new org default that nobody decided for them.
        let complete = unreadable.is_empty();
        run.summary.errors.extend(unreadable);
        let count = Some(inventory.devices.len() as u64);
        let finishing = decider.finish();
        let decisions = progress::stage(report, progress::DECIDE, count, &decided, finishing).await;
        run.stage.done("decide the last pages");
        report(progress::PLAN, 0, None);
        inventory.managed = Vec::new();
        let users = std::mem::take(&mut inventory.users);
        // The users go to the store; the notices keep only their languages, and only when the
        // run sends notices.
        let mailbox_languages = std::mem::take(&mut inventory.mailbox_languages);
        let locales = if self.notices.is_some() && !run.dry_run {
            Locales::new(&users, mailbox_languages)
        } else {
            Locales::default()
        };
        let inventory = Arc::new(inventory);
        let forget_absent = run.full && complete;
        let saved = saver.map(|saver| {
            tokio::spawn(saver.finish(inventory.clone(), users, forget_absent, run.now))
        });
        crate::memory::release_free();
        for failure in &decisions.failures {
            run.summary.errors.push(format!(
                "policy batch of {} devices (from device {}) decided nothing: {}",
                failure.len, failure.first, failure.error
            ));
            run.summary.plugin_errors.push(failure.kind);
        }
        DecidedInventory {
            inventory,
            matched,
            decisions: decisions.decisions,
            org_default,
            org_settings,
            access_rules,
            complete,
            saved,
            locales,
        }
    }

    /// The verdicts, what to record of them and the plan that enforces them. The inventory and
    /// the matched devices are let go on return: only the plan's commands and the records are
    /// left to write.
    fn plan(&self, run: &mut Run<'_>, decided: DecidedInventory) -> Result<Planned, SyncError> {
        let DecidedInventory {
            inventory,
            mut matched,
            decisions,
            org_default,
            org_settings,
            access_rules,
            complete,
            saved,
            locales,
        } = decided;
        let verdicts = self.verdicts(run, &inventory, decisions, &mut matched, &locales);
        let removals = matched.removal_candidates(&inventory, &self.settings);
        let org_devices = if run.full {
            inventory.devices.len()
        } else {
            self.store.device_count(run.org)?
        };
        // The default after this run: the configured one when a full sync sets it (below);
        // else what Exchange has now, which a quick sync reads and never sets (an admin may
        // have changed it by hand), the configured one only if Exchange's is unknown.
        let target = self.settings.org_default();
        let switch = run.full && complete;
        let platform = Platform {
            default: if switch {
                target.or(org_default)
            } else if run.full {
                org_default
            } else {
                org_default.or(target)
            },
            rules: self.settings.device_access_rules.as_deref(),
            override_default_rule: self.settings.override_default_rule,
        };
        let mut plan = plan_steps(
            &inventory.mailboxes,
            &verdicts.decided,
            &removals,
            &self.settings.max_new_restrictions,
            org_devices,
            &platform,
        );
        if run.full {
            if let (Some(target), Some(current)) = (target, org_default) {
                if switch {
                    plan.set_org_default(
                        target,
                        current,
                        &inventory.devices,
                        &verdicts.decided,
                        &platform,
                    );
                } else if current != target {
                    run.summary.errors.push(format!(
                        "the organization default stays {} this run: the devices whose records could not be read would move with it",
                        current.as_str()
                    ));
                }
            }
            // After the lists and the default: rules decide only devices on no list.
            let settings = super::plan::exchange_settings(
                &self.settings,
                org_settings.as_ref(),
                access_rules.as_deref(),
            );
            // A rule change moves the devices on no list it matches: the guard counts those
            // it restricts, and the dry run lists them.
            let rules_change = settings.iter().any(|c| {
                [
                    super::plan::NEW_ACCESS_RULE,
                    super::plan::REMOVE_ACCESS_RULE,
                ]
                .contains(&c.command.cmdlet.as_str())
            });
            if rules_change {
                plan.count_rule_changes(&inventory.devices, &verdicts.decided, &platform);
            }
            plan.commands
                .extend(settings.into_iter().map(PlanStep::from));
        }
        run.stage.done("plan");
        let summary = &mut run.summary;
        summary.devices_changed = (plan.changes.len() + removals.len()) as u64;
        summary.commands_planned = plan.commands.len() as u64;
        summary.restrictions = plan.restrictions as u64;
        summary.restriction_limit = plan.limit as u64;
        // A dry run's report needs the devices and the verdicts, which go when this returns.
        let dry_run = run.dry_run.then(|| {
            super::dry_run::report(
                &plan,
                &inventory.devices,
                &verdicts.decided,
                org_default,
                &platform,
            )
        });
        Ok(Planned {
            plan,
            records: verdicts.records,
            notices: verdicts.notices,
            unresolved: verdicts.unresolved,
            saved,
            dry_run,
        })
    }

    /// The policy's decisions as verdicts: counted in the summary, the decided devices for the
    /// plan, the records to store and the notices to enqueue (only if the verdict changes; a
    /// device without a mailbox has nobody to tell). The decisions and the matched devices'
    /// keys move into the records instead of being copied: 100 000 of each at full scale.
    fn verdicts<'i>(
        &self,
        run: &mut Run<'_>,
        inventory: &'i Inventory,
        decisions: Vec<Option<types::Decision>>,
        matched: &mut Matched,
        locales: &Locales,
    ) -> Verdicts<'i> {
        let mut verdicts = Verdicts::default();
        // Each with its position, by which the mailboxes' languages are kept.
        let mailboxes: HashMap<String, (usize, &crate::model::Mailbox)> =
            if self.notices.is_some() && !run.dry_run {
                inventory
                    .mailboxes
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.identity.to_lowercase(), (i, m)))
                    .collect()
            } else {
                HashMap::new()
            };
        for (i, decision) in decisions.into_iter().enumerate() {
            let verdict = decision.as_ref().map(|d| Verdict::from(d.verdict));
            run.summary.verdicts.add(verdict);
            let (Some(d), Some(verdict)) = (decision, verdict) else {
                continue;
            };
            let device = &inventory.devices[i];
            verdicts.decided.push(Decided { device, verdict });
            let key = std::mem::replace(&mut matched.devices[i].key, DeviceKey::new(""));
            if d.notify
                && let Some(&(position, mailbox)) = device
                    .mailbox
                    .as_ref()
                    .and_then(|m| mailboxes.get(&m.to_lowercase()))
                && !mailbox.primary_smtp.trim().is_empty()
            {
                let locale = match locales.of(mailbox, position) {
                    Locale::Known(locale) => locale,
                    Locale::Ask { user, fallback } => {
                        verdicts.unresolved.push(Unresolved {
                            notice: verdicts.notices.len(),
                            user,
                            fallback,
                        });
                        String::new()
                    }
                };
                verdicts.notices.push(NoticeRequest {
                    id: NoticeId::derive(
                        &self.name,
                        key.as_str(),
                        verdict.as_str(),
                        &run.id.to_string(),
                    ),
                    key: key.clone(),
                    state: verdict,
                    reason: d.reason.clone(),
                    recipient: mailbox.primary_smtp.trim().to_owned(),
                    user_principal_name: mailbox.user_principal_name.clone(),
                    locale,
                });
            }
            verdicts.records.push(DecisionRecord {
                key,
                verdict,
                reason: d.reason,
                notify: d.notify,
            });
        }
        verdicts
    }

    /// A dry run ends on its plan: it records its counts only, and its report says what a real
    /// run would do.
    async fn rehearse(&self, run: Run<'_>, mut report: DryRun) -> Result<Summary, SyncError> {
        let Run {
            mut summary,
            started,
            ..
        } = run;
        report.roles = self.check_roles().await;
        (summary.devices_changed, summary.dry_run) = (report.devices(), Some(report));
        self.finish(summary, RunOutcome::Succeeded, started).await
    }

    /// Whether the account's session has every cmdlet a real run may send (remote PowerShell
    /// only); asked by a dry run, before an operator relies on it.
    async fn check_roles(&self) -> super::dry_run::RoleCheck {
        use super::dry_run::RoleCheck;
        let cmdlets = super::plan::write_cmdlets(&self.settings);
        match self.exchange.cmdlets_lacking(&cmdlets).await {
            None => RoleCheck::NotChecked,
            Some(Ok(missing)) if missing.is_empty() => RoleCheck::Complete {
                checked: cmdlets.iter().map(|c| (*c).to_owned()).collect(),
            },
            Some(Ok(missing)) => RoleCheck::Lacking { missing },
            Some(Err(e)) => RoleCheck::Failed {
                error: e.to_string(),
            },
        }
    }

    /// Waits for the inventory's save, which recording waits for, and keeps of the plan only
    /// its commands and its guard.
    async fn settle(&self, run: &mut Run<'_>, planned: Planned) -> Result<Ready, SyncError> {
        let Planned {
            mut plan,
            records,
            mut notices,
            unresolved,
            saved,
            ..
        } = planned;
        // The languages Graph is asked for while the store saves the inventory.
        let saving = async {
            match saved {
                Some(saved) => saved.await.expect("the save task does not panic").map(Some),
                None => Ok(None),
            }
        };
        let asking = async {
            if unresolved.is_empty() {
                return None;
            }
            Some(resolve_locales(&self.graph, &mut notices, unresolved).await)
        };
        let graph_before = self.graph.requests_sent();
        let (saved, asked) = tokio::join!(saving, asking);
        // The lookups are Graph requests of this run too.
        run.summary.graph_calls += self.graph.requests_sent() - graph_before;
        if let Some(asked) = asked {
            tracing::debug!(
                users = asked.users,
                failed = asked.failed,
                late = asked.late,
                "users' languages looked up"
            );
            run.stage.done("look up the notified users' languages");
        }
        if saved?.is_some() {
            run.stage.done("finish saving the inventory");
        }
        crate::memory::release_free();
        Ok(Ready {
            shown: std::mem::take(&mut plan.shown),
            commands: std::mem::take(&mut plan.commands),
            records,
            notices,
            held: plan.held,
            restrictions: plan.restrictions,
            limit: plan.limit,
        })
    }

    /// Records a held plan whole, in one transaction, with its notices (enqueued when it is
    /// applied), and ends the run waiting for an operator.
    async fn hold(&self, mut run: Run<'_>, ready: Ready) -> Result<Summary, SyncError> {
        let Ready {
            shown,
            commands,
            records,
            notices,
            held,
            restrictions,
            limit,
        } = ready;
        let commands: Vec<PlannedCommand> =
            commands.into_iter().map(PlanStep::into_planned).collect();
        let (id, digest, now) = (run.id, run.digest.clone(), run.now);
        let resend_interval_secs = self.resend_interval_secs();
        let recorded = blocking(&self.store, move |s| {
            s.record_decisions_and_notices(
                &DecisionBatch {
                    run: id,
                    plugin_digest: &digest,
                    decided_at: now,
                    decisions: &records,
                    commands: &commands,
                    held,
                    // Kept with the plan: its approval records them once the commands are
                    // confirmed.
                    shown: &shown,
                },
                &NoticeBatch {
                    requests: &notices,
                    resend_interval_secs,
                },
            )
        })
        .await?;
        run.summary.notices.deduplicated = recorded.notices_deduplicated;
        run.stage.done("record");
        run.summary.errors.push(format!(
            "held: the plan restricts {} devices, more than the limit of {}; approve with `easgate plan approve {id}` before the next sync plans (the plan expires then)",
            restrictions, limit
        ));
        self.finish(run.summary, RunOutcome::Held, run.started)
            .await
    }

    /// Records the plan with its verdicts and notices and applies it: apply starts on each
    /// chunk of the plan as soon as the transaction recording it (with its devices' verdicts)
    /// commits, so the SQLite writes overlap the commands.
    async fn record_and_apply(
        &self,
        run: &mut Run<'_>,
        ready: Ready,
        report: progress::Report<'_>,
    ) -> Result<Applied, SyncError> {
        let total = Some(ready.commands.len() as u64);
        let (send, received) = recorded_chunks();
        let record = ToRecord {
            run: run.id,
            plugin_digest: run.digest.clone(),
            decided_at: run.now,
            decisions: ready.records,
            commands: ready.commands,
            notices: ready.notices,
            resend_interval_secs: self.resend_interval_secs(),
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
        run.summary.notices.queued = recorded.queued;
        run.summary.notices.deduplicated = recorded.deduplicated;
        run.stage.done("record and apply");
        Ok(applied)
    }

    /// Records, for the devices whose confirmed list edit cannot give them their verdict's
    /// state, the state Exchange shows instead (a quarantine under an allow rule or default
    /// stays allowed), so that the status page does not show them quarantined until the next
    /// full sync reads them. Only commands Exchange confirmed count.
    async fn record_shown(
        &self,
        (id, org): (RunId, OrgId),
        shown: Vec<ShownState>,
    ) -> Result<(), SyncError> {
        if shown.is_empty() {
            return Ok(());
        }
        blocking(&self.store, move |s| {
            let done: std::collections::HashSet<DeviceKey> = s
                .journal(id)?
                .into_iter()
                .filter(|e| e.state == crate::store::JournalState::Done)
                .flat_map(|e| e.command.devices)
                .collect();
            let states: Vec<_> = shown
                .into_iter()
                .filter(|s| done.contains(&s.key))
                .collect();
            s.record_shown_states(org, &states)
        })
        .await?;
        Ok(())
    }

    /// No second notice about the same device and state within this many seconds.
    fn resend_interval_secs(&self) -> i64 {
        self.notices
            .as_ref()
            .map_or(0, |n| n.resend_interval.as_secs() as i64)
    }

    /// Renders and sends the organization's due notices (this run's and earlier retries).
    async fn notify(
        &self,
        notices: &NoticeStage,
        template: Arc<NoticeTemplatePlugin>,
        org: OrgId,
        summary: &mut Summary,
    ) -> Result<(), SyncError> {
        deliver(notices, template, &self.store, org, &mut summary.notices).await?;
        let template_errors = std::mem::take(&mut summary.notices.template_errors);
        summary.plugin_errors.extend(template_errors);
        Ok(())
    }

    /// Finishes a run that went to the end: succeeded, or partial if anything failed.
    async fn conclude(&self, summary: Summary, started: Instant) -> Result<Summary, SyncError> {
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
        // The store refuses a plan that is not held, or expired, saying which.
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
        let org = record.org;
        let commands: Vec<_> = self
            .store
            .journal(run)?
            .into_iter()
            .filter(|e| e.state == crate::store::JournalState::Planned)
            .map(|e| {
                let (command, enforces) = crate::store::Enforces::split(org, e.command);
                (e.id, command, enforces)
            })
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
        // The plan's verdicts become the devices' and its notices are queued before its first
        // command goes out, as in a run that was not held.
        let enforced = blocking(&self.store, move |s| s.enforce_approved(run)).await?;
        summary.notices.queued = enforced.notices_queued;
        summary.notices.deduplicated = enforced.notices_deduplicated;
        let sent = progress::Counter::default();
        let total = Some(commands.len() as u64);
        let applying =
            progress::count_commands(&sent, apply(&self.exchange, &self.store, commands));
        let applied = progress::stage(report, progress::APPLY, total, &sent, applying).await?;
        self.account(&mut summary, &applied);
        // As after a run that was not held: what Exchange shows where the confirmed list edits
        // cannot give the verdict (a quarantine under an allow default stays allowed).
        self.record_shown((run, org), enforced.shown).await?;
        if let Some(notices) = &self.notices {
            let template = (notices.template)();
            self.notify(notices, template, org, &mut summary).await?;
        }
        self.conclude(summary, started).await
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

    /// Takes in a discovery's partnerships page by page: each is matched against the Intune
    /// records and mailboxes read first, its devices' contexts are queued for `decider` a batch
    /// at a time, and the page is queued for `saver`.
    async fn take_in(
        &self,
        org: OrgId,
        started: Started,
        saver: Option<InventorySaver>,
        decider: &Decider,
        reads_statistics: bool,
    ) -> Result<TakenIn, TakeInError> {
        let Started {
            discovered,
            devices: mut pages,
        } = started;
        let Discovered {
            mut inventory,
            org_default,
            org_settings,
            access_rules,
            mut unreadable,
        } = discovered;
        // Only a complete Intune listing (see `Inventory::managed_complete`) can show a
        // record gone.
        // Held as digests: at 100 000 devices the keys themselves are 10 MB more at the peak.
        let previously_managed = if inventory.managed_complete {
            blocking(&self.store, move |s| {
                Ok(s.managed_keys(org)?.iter().collect::<KeyDigests>())
            })
            .await?
        } else {
            KeyDigests::default()
        };
        let mut matcher = Matcher::new(
            &inventory.managed,
            &inventory.mailboxes,
            &inventory.users,
            inventory.managed_complete,
            &self.settings,
            &previously_managed,
        );
        let mut matched = Vec::new();
        // The first device not yet queued for the policy.
        let mut queued = 0;
        let batch_size = self.batch_size.max(1);
        let mut statistics = reads_statistics.then(StatisticsReport::default);
        while let Some(page) = pages.next().await? {
            let first = inventory.devices.len();
            for device in page {
                matched.push(matcher.match_device(inventory.devices.len(), &device));
                inventory.devices.push(device);
            }
            if let Some(saver) = &saver {
                let page = (first..inventory.devices.len())
                    .map(|i| {
                        let record = matched[i].managed.map(|r| inventory.managed[r].clone());
                        (inventory.devices[i].clone(), record)
                    })
                    .collect();
                saver.save(page).await;
            }
            while matched.len() - queued >= batch_size {
                let batch = queued..queued + batch_size;
                statistics::fill_in(
                    &self.exchange,
                    &mut inventory.devices[batch.clone()],
                    &mut statistics,
                )
                .await;
                decider.decide(contexts(&matched[batch], &inventory)).await;
                queued += batch_size;
            }
        }
        statistics::fill_in(
            &self.exchange,
            &mut inventory.devices[queued..],
            &mut statistics,
        )
        .await;
        decider
            .decide(contexts(&matched[queued..], &inventory))
            .await;
        if let Some(report) = &statistics {
            report.log(&self.name);
        }
        unreadable.extend(pages.unreadable());
        let report = matcher.finish();
        tracing::debug!(org = %self.name, ?report, "matched");
        Ok(TakenIn {
            inventory,
            matched: Matched {
                devices: matched,
                report,
            },
            saver,
            org_default,
            org_settings,
            access_rules,
            unreadable,
            statistics,
        })
    }
}

/// The policy's contexts of `devices`, matched in `inventory`.
fn contexts(
    devices: &[MatchedDevice],
    inventory: &crate::model::Inventory,
) -> Vec<types::DeviceContext> {
    devices.iter().map(|d| d.context(inventory)).collect()
}

/// What a sync took in: the inventory, matched, with the rest of what discovery read. Its
/// decisions are with the decider, its pages with the saver.
struct TakenIn {
    inventory: crate::model::Inventory,
    matched: Matched,
    saver: Option<InventorySaver>,
    org_default: Option<crate::model::AccessLevel>,
    org_settings: Option<crate::exchange::models::OrganizationSettings>,
    access_rules: Option<Vec<crate::exchange::models::DeviceAccessRule>>,
    /// As [`Discovered::unreadable`], for the whole discovery.
    unreadable: Vec<String>,
    /// What reading device statistics did, if the run read them.
    statistics: Option<StatisticsReport>,
}

/// Why taking in a discovery failed.
#[derive(Debug, thiserror::Error)]
enum TakeInError {
    #[error(transparent)]
    Discover(#[from] discover::DiscoverError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One run as it goes through the stages: what they all read and the summary they add to.
struct Run<'a> {
    org: OrgId,
    id: RunId,
    kind: RunKind,
    now: i64,
    /// Reads everything: a full sync, or a quick one that cannot trust its cursor.
    full: bool,
    dry_run: bool,
    /// Where a quick sync starts reading.
    cursor: Option<i64>,
    /// The pinned policy's digest.
    digest: String,
    /// The pinned notice template, when notices are on.
    template: Option<Arc<NoticeTemplatePlugin>>,
    summary: Summary,
    started: Instant,
    stage: Stage<'a>,
}

/// What take-in hands on: the inventory, matched, with the policy's last batches still being
/// decided (`decided` counts the devices decided so far).
struct Intake {
    taken_in: TakenIn,
    decider: Decider,
    decided: progress::Counter,
}

/// The inventory with every device's decision (`None`: its batch failed).
struct DecidedInventory {
    inventory: Arc<Inventory>,
    matched: Matched,
    decisions: Vec<Option<types::Decision>>,
    org_default: Option<crate::model::AccessLevel>,
    org_settings: Option<crate::exchange::models::OrganizationSettings>,
    access_rules: Option<Vec<crate::exchange::models::DeviceAccessRule>>,
    /// Every device's record could be read.
    complete: bool,
    /// The store's writes of the directory and of the devices gone, which recording waits for.
    saved: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    /// Where the notices' languages come from.
    locales: Locales,
}

/// The decisions as the plan and the store take them.
#[derive(Default)]
struct Verdicts<'i> {
    decided: Vec<Decided<'i>>,
    records: Vec<DecisionRecord>,
    notices: Vec<NoticeRequest>,
    /// The notices whose user's language Graph is still to be asked for.
    unresolved: Vec<Unresolved>,
}

/// The plan, with what to record beside it.
struct Planned {
    plan: Plan<PlanStep>,
    records: Vec<DecisionRecord>,
    notices: Vec<NoticeRequest>,
    unresolved: Vec<Unresolved>,
    saved: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    /// A dry run's report of what a real run would do; `None` in a real run.
    dry_run: Option<DryRun>,
}

/// What is left to write once the inventory is saved and let go: the plan's commands and its
/// guard, the verdicts and the notices.
struct Ready {
    /// See [`Plan::shown`]; recorded once the commands are confirmed.
    shown: Vec<ShownState>,
    commands: Vec<PlanStep>,
    records: Vec<DecisionRecord>,
    notices: Vec<NoticeRequest>,
    held: bool,
    restrictions: usize,
    limit: usize,
}
