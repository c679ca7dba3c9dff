//! `easgate sync` and `easgate plan approve|reject`: one sync of the configured organizations
//! from the command line, and the operator's answer to a held plan.
//!
//! While a sync runs, its progress goes to stderr: a bar (stage, items done of the stage's
//! total, time since the start) when stderr is a terminal, otherwise one line per finished
//! stage, so a log or a CI job gets a handful of lines and no escape codes. The summary goes
//! to stdout when the run ends.
//!
//! Exit codes: 0 every run succeeded (a dry run included, even one whose plan a real run would
//! hold); 2 some run was partial (plugin batches or commands failed) or failed; 3 some plan
//! was held for approval (and nothing worse happened).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::config::{Config, Organization};
use crate::model::SyncKind;
use crate::net::HttpSettings;
use crate::plugin::registry::RegistryOptions;
use crate::plugin::{PluginEngine, PluginRegistry};
use crate::store::{RunId, RunOutcome, Store, StoreError};
use crate::sync::progress;
use crate::sync::{OrgSync, Summary, TemplateSource};
use crate::timestamp::unix_now;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Sync only this organization (default: every one, one after another).
    #[arg(long)]
    org: Option<String>,
    /// The changes since the last successful sync (the default).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Every device, plus the organization default.
    #[arg(long)]
    full: bool,
    /// Plan and print what would change; record nothing but the run, apply nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print each organization's summary as one JSON object on one line.
    #[arg(long)]
    json: bool,
    /// Start with a new store if the store file is empty (it lost its contents); without it,
    /// an empty store file is refused.
    #[arg(long)]
    init: bool,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Apply a plan the blast-radius guard held.
    Approve(PlanArgs),
    /// Reject a held plan: nothing of it is ever applied.
    Reject(PlanArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The held run's id (`easgate sync` prints it).
    run: i64,
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// The store, recovered from an unclean stop of an earlier process.
fn open_store(config: &Config) -> anyhow::Result<Arc<Store>> {
    // The writer lock refuses to run beside a daemon on the same store; holding it, the CLI is
    // the only process writing the store: whatever an earlier process left running was cut
    // short.
    let store = Store::open_writer(&config.sync.data_dir)?;
    let recovery = store.recover(unix_now())?;
    if !recovery.interrupted_runs.is_empty() || !recovery.unfinished.is_empty() {
        tracing::warn!(
            runs = ?recovery.interrupted_runs,
            commands = recovery.unfinished.len(),
            "an earlier sync was interrupted; its unfinished commands will be re-planned by a full sync"
        );
    }
    Ok(Arc::new(store))
}

fn print(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    let v = &summary.verdicts;
    println!(
        "{}: run {} ({}) {} in {:.1} s",
        summary.organization,
        summary.run,
        summary.kind.as_str(),
        summary.outcome.as_str(),
        summary.duration_ms as f64 / 1000.0
    );
    println!(
        "  verdicts: allow {}, block {}, quarantine {}, exempt {}, undecided {}",
        v.allow, v.block, v.quarantine, v.exempt, v.undecided
    );
    println!(
        "  devices changed {}, Exchange commands issued {} of {} planned ({} failed)",
        summary.devices_changed,
        summary.commands_issued,
        summary.commands_planned,
        summary.commands_failed
    );
    println!(
        "  discovery: {} Exchange requests, {} Graph requests; restrictions {} (limit {})",
        summary.exchange_reads,
        summary.graph_calls,
        summary.restrictions,
        summary.restriction_limit
    );
    println!("  policy digest {}", summary.plugin_digest);
    if let Some(dry_run) = &summary.dry_run {
        print_dry_run(dry_run, summary);
    }
    let n = &summary.notices;
    if n.queued + n.deduplicated + n.sent + n.retrying + n.given_up + n.failed + n.pending > 0 {
        println!(
            "  notices: queued {}, sent {}, retrying {}, given up {}, failed {}, pending {} (deduplicated {})",
            n.queued, n.sent, n.retrying, n.given_up, n.failed, n.pending, n.deduplicated
        );
        for error in &n.errors {
            println!("  ! {error}");
        }
    }
    for error in &summary.errors {
        println!("  ! {error}");
    }
    Ok(())
}

/// What a real run would change, in Exchange's words: its states before → after, and the
/// partnerships as its `Identity` spells them.
fn print_dry_run(dry_run: &crate::sync::dry_run::DryRun, summary: &Summary) {
    use crate::sync::dry_run::RoleCheck;
    println!(
        "  would change the access of {} devices ({} more would only get a list entry that keeps their state)",
        dry_run.changes.len(),
        dry_run.entries_only
    );
    if let Some(switch) = dry_run.org_default {
        println!(
            "  would change the organization default: {} -> {}",
            switch.from.as_str(),
            switch.to.as_str()
        );
    }
    if dry_run.would_hold {
        println!(
            "  a real run would be held for approval: it restricts {} devices, more than the limit of {}",
            summary.restrictions, summary.restriction_limit
        );
    }
    match &dry_run.roles {
        RoleCheck::NotChecked => {}
        RoleCheck::Complete { checked } => println!(
            "  the account's management roles hold every cmdlet a real run may send ({})",
            checked.join(", ")
        ),
        RoleCheck::Lacking { missing } => println!(
            "  ! the account's management roles lack {}: a real run's commands through them would \
             fail; add each to the role assigned to the account (New-ManagementRoleEntry \
             \"<role>\\{}\"), then run again",
            missing.join(", "),
            missing[0]
        ),
        RoleCheck::Failed { error } => {
            println!("  ! could not ask which cmdlets the account's roles hold: {error}")
        }
    }
    for change in &dry_run.changes {
        println!(
            "  would change {} ({}): {} -> {}, by the {}{}",
            change.identity,
            change.mailbox.as_deref().unwrap_or("no mailbox"),
            change.from.as_str(),
            change.to.as_str(),
            change.by.as_str(),
            change
                .verdict
                .map_or(String::new(), |v| format!(" (verdict {})", v.as_str())),
        );
    }
}

/// A stage's last report, and when it started.
struct StageSoFar {
    stage: String,
    done: u64,
    total: Option<u64>,
    since: Instant,
}

/// How a running sync's progress is shown on stderr.
enum Watch {
    /// A terminal: a bar redrawn in place, a new one per stage (so that no frame shows one
    /// stage's name with another's counts), cleared at the end.
    Bar {
        org: String,
        started: Instant,
        bar: Mutex<Option<indicatif::ProgressBar>>,
    },
    /// Anything else: a line as each stage ends, with what it counted and how long it took.
    Lines {
        org: String,
        /// The stage going on.
        current: Mutex<Option<StageSoFar>>,
    },
    /// `--json`: scripts read stdout and get no progress on stderr.
    Quiet,
}

impl Watch {
    fn new(org: &str, json: bool) -> Self {
        if std::io::stderr().is_terminal() {
            Watch::Bar {
                org: org.to_owned(),
                started: Instant::now(),
                bar: Mutex::new(None),
            }
        } else if json {
            Watch::Quiet
        } else {
            Watch::Lines {
                org: org.to_owned(),
                current: Mutex::new(None),
            }
        }
    }

    fn report(&self, stage: &str, done: u64, total: Option<u64>) {
        match self {
            Watch::Bar { org, started, bar } => {
                let mut bar = bar.lock().unwrap_or_else(|e| e.into_inner());
                match bar.as_ref() {
                    Some(b) if b.message() == stage => {
                        if let Some(total) = total {
                            b.set_length(total);
                        }
                        b.set_position(done);
                    }
                    _ => {
                        if let Some(ended) = bar.take() {
                            ended.finish_and_clear();
                        }
                        *bar = Some(stage_bar(org, *started, stage, done, total));
                    }
                }
            }
            Watch::Lines { org, current } => {
                let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
                match current.as_mut() {
                    Some(so_far) if so_far.stage == stage => {
                        (so_far.done, so_far.total) = (done, total);
                    }
                    _ => {
                        if let Some(ended) = current.take() {
                            print_stage(org, ended);
                        }
                        *current = Some(StageSoFar {
                            stage: stage.to_owned(),
                            done,
                            total,
                            since: Instant::now(),
                        });
                    }
                }
            }
            Watch::Quiet => {}
        }
    }

    /// The run ended: the last stage's line, or the bar cleared before the summary.
    fn finish(self) {
        match self {
            Watch::Bar { bar, .. } => {
                if let Some(bar) = bar.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    bar.finish_and_clear();
                }
            }
            Watch::Lines { org, current } => {
                if let Some(ended) = current.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    print_stage(&org, ended);
                }
            }
            Watch::Quiet => {}
        }
    }
}

/// The line of a stage that ended: what it counted and how long it took.
fn print_stage(org: &str, ended: StageSoFar) {
    let StageSoFar {
        stage,
        done,
        total,
        since,
    } = ended;
    let count = match (progress::unit(&stage), total) {
        ("", _) => String::new(),
        (unit, Some(total)) => format!(" {done}/{total} {unit},"),
        (unit, None) => format!(" {done} {unit},"),
    };
    eprintln!(
        "{org}: {stage}:{count} {:.1} s",
        since.elapsed().as_secs_f64()
    );
}

/// A terminal bar for `stage`: the organization, the stage, a bar and `done/total` when the
/// total is known (a spinner and the count otherwise), what it counts and the time since the
/// run started; fully set up before its first frame.
fn stage_bar(
    org: &str,
    started: Instant,
    stage: &str,
    done: u64,
    total: Option<u64>,
) -> indicatif::ProgressBar {
    let unit = progress::unit(stage);
    let template = match (total, unit) {
        (Some(_), _) => format!(
            "{{prefix}}: {{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} [{{elapsed}}]"
        ),
        (None, "") => "{prefix}: {msg} {spinner} [{elapsed}]".to_owned(),
        (None, _) => format!("{{prefix}}: {{msg}} {{spinner}} {{human_pos}} {unit} [{{elapsed}}]"),
    };
    let style = indicatif::ProgressStyle::with_template(&template)
        .expect("the templates are valid")
        .progress_chars("=> ");
    let bar =
        indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(org.to_owned())
            .with_message(stage.to_owned())
            .with_position(done)
            .with_elapsed(started.elapsed());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn exit_code(outcomes: &[RunOutcome]) -> ExitCode {
    if outcomes
        .iter()
        .any(|o| matches!(o, RunOutcome::Partial | RunOutcome::Failed))
    {
        ExitCode::from(2)
    } else if outcomes.contains(&RunOutcome::Held) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// What became of a run a signal stopped, for its error message.
const AFTER_A_STOP: &str = "what the run recorded is journaled, and the next sync re-plans the \
                            rest from Exchange's state (as a full sync)";

/// Runs `work` (a sync of `sync`'s organization, or the approval of its plan) until it ends or
/// `stop` resolves first (`None`: the work is dropped, as the daemon cancels a run), then
/// closes its remote PowerShell sessions, which count against the account's quota until
/// closed.
async fn until_stopped<T>(
    sync: &OrgSync,
    work: impl std::future::Future<Output = T>,
    stop: impl std::future::Future<Output = ()>,
) -> Option<T> {
    let done = tokio::select! {
        done = work => Some(done),
        () = stop => None,
    };
    sync.exchange.close().await;
    done
}

pub fn run_sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let orgs: Vec<&Organization> = match &args.org {
        Some(name) => {
            let org = config
                .organizations
                .iter()
                .find(|o| o.name.eq_ignore_ascii_case(name));
            match org {
                Some(o) => vec![o],
                None => bail!("no organization `{name}` in {}", args.config.display()),
            }
        }
        None => config.organizations.iter().collect(),
    };
    let http = HttpSettings::from_config(&config.network)?;
    if args.init {
        super::init_store(&config)?;
    }
    let store = open_store(&config)?;
    let registry =
        PluginRegistry::new(PluginEngine::new()?, RegistryOptions::from_config(&config))?;
    let kind = if args.full {
        SyncKind::Full
    } else {
        SyncKind::Quick
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let template: TemplateSource = {
        let registry = registry.clone();
        Arc::new(move || registry.notice_template())
    };
    // Ctrl-C or SIGTERM stops the running organization's sync as the daemon stops one: what
    // it recorded is journaled (the next run re-plans the rest from Exchange's state), and its
    // remote PowerShell sessions are closed instead of left to Exchange's idle timeout.
    let mut stop = {
        let _runtime = runtime.enter();
        Box::pin(super::caught_signals()?)
    };
    let mut outcomes = Vec::new();
    for org in orgs {
        // The SMTP channel's connection pool is created and dropped inside the runtime.
        let _runtime = runtime.enter();
        let mut interrupted = false;
        // One organization failing to even start never stops the others.
        let result = OrgSync::from_config(
            org,
            &http,
            store.clone(),
            config.notify.as_ref().map(|n| (n, template.clone())),
        )
        .and_then(|sync| {
            let watch = Watch::new(&org.name, args.json);
            let report = |stage: &str, done: u64, total: Option<u64>| {
                watch.report(stage, done, total);
            };
            let policy = registry.policy_for(&org.name);
            let running = async {
                match policy {
                    Ok(policy) => {
                        sync.run_reporting(kind, args.dry_run, policy, &report)
                            .await
                    }
                    Err(err) => sync.fail_without_policy(kind, args.dry_run, &err).await,
                }
            };
            let run = runtime.block_on(until_stopped(&sync, running, &mut stop));
            watch.finish();
            match run {
                Some(run) => run.map_err(anyhow::Error::from),
                None => {
                    interrupted = true;
                    Err(anyhow::anyhow!("stopped by a signal: {AFTER_A_STOP}"))
                }
            }
        });
        match result {
            Ok(summary) => {
                print(&summary, args.json)?;
                outcomes.push(summary.outcome);
            }
            Err(e) => {
                eprintln!("error: organization `{}`: {e:#}", org.name);
                outcomes.push(RunOutcome::Failed);
            }
        }
        if interrupted {
            // The other organizations are not started.
            break;
        }
    }
    Ok(exit_code(&outcomes))
}

pub fn run_plan(command: PlanCommand) -> anyhow::Result<ExitCode> {
    let (args, approve) = match command {
        PlanCommand::Approve(a) => (a, true),
        PlanCommand::Reject(a) => (a, false),
    };
    let config = Config::load(&args.config)?;
    let store = open_store(&config)?;
    let run = RunId(args.run);
    // The organization whose held runs include this one.
    let mut owner = None;
    for org in &config.organizations {
        let id = store.organization(&org.name, unix_now())?;
        if store.held_runs(id)?.iter().any(|r| r.id == run) {
            owner = Some(org);
        }
    }
    let Some(org) = owner else {
        if let Some(by) = store.run(run)?.and_then(|r| r.superseded_by) {
            return Err(StoreError::Superseded { run, by }.into());
        }
        bail!("run {run} is not a held plan of any organization in this configuration");
    };
    if !approve {
        let rejected = store.reject(run, unix_now())?;
        println!(
            "{}: run {run} rejected; {rejected} commands will not be applied",
            org.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let http = HttpSettings::from_config(&config.network)?;
    let sync = OrgSync::from_config(org, &http, store.clone(), None)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let stop = {
        let _runtime = runtime.enter();
        super::caught_signals()?
    };
    // Stopped by Ctrl-C or SIGTERM as a sync is (see `run_sync`).
    let summary = runtime.block_on(until_stopped(&sync, sync.approve(run), stop));
    let Some(summary) = summary else {
        eprintln!(
            "error: organization `{}`: applying run {run} stopped by a signal: {AFTER_A_STOP}",
            org.name
        );
        return Ok(ExitCode::from(2));
    };
    let summary = summary?;
    print(&summary, args.json)?;
    Ok(exit_code(&[summary.outcome]))
}
