//! The `easgate` command line: parsing and dispatch only; the work lives in the library.

pub mod daemon;
pub mod device;
#[cfg(feature = "lab")]
pub mod lab;
pub mod notice;
pub mod policy;
pub mod sync;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "easgate",
    version,
    about = "Exchange ActiveSync connector with WebAssembly access policies"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The simulated organization and the connector against it in one process, with the
    /// status page: the quickest way to see easgate work.
    #[cfg(feature = "lab")]
    Lab(lab::LabArgs),
    /// The connector as a service: every organization's schedule, the plugin watcher and the
    /// admin API, until SIGTERM or Ctrl-C.
    Run(daemon::RunArgs),
    /// The running connector's status per organization, from its admin API.
    Status(daemon::StatusArgs),
    /// Check, evaluate and test policy plugins.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the lab's simulated Exchange organization and Intune tenant alone.
    #[cfg(feature = "lab")]
    Sim(easgate_lab::SimArgs),
    /// Sync the configured organizations once: discover, decide, plan, apply.
    Sync(sync::SyncArgs),
    /// Approve or reject a plan the blast-radius guard held.
    #[command(subcommand)]
    Plan(sync::PlanCommand),
    /// An administrator's device action: remote wipe or partnership removal.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Preview the notice a device's user would get.
    #[command(subcommand)]
    Notice(notice::NoticeCommand),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            #[cfg(feature = "lab")]
            Command::Lab(args) => lab::lab(args),
            Command::Run(args) => daemon::run(args),
            Command::Status(args) => daemon::status(args),
            Command::Policy(command) => policy::run(command),
            Command::Sync(args) => sync::run_sync(args),
            Command::Plan(command) => sync::run_plan(command),
            Command::Notice(command) => notice::run(command),
            Command::Device(command) => device::run(command),
            #[cfg(feature = "lab")]
            Command::Sim(args) => {
                let runtime = tokio::runtime::Runtime::new()?;
                runtime.block_on(easgate_lab::run_sim(args, shutdown_signal()))?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// `--init`: the operator's word that an empty store file (one that lost its contents) may be
/// replaced by a new store.
fn init_store(config: &crate::config::Config) -> anyhow::Result<()> {
    if crate::store::Store::forget_empty(&config.sync.data_dir)? {
        tracing::warn!(
            data_dir = %config.sync.data_dir.display(),
            "--init: the empty store file was removed; starting with a new store"
        );
    }
    Ok(())
}

/// Catches Ctrl-C and SIGTERM from now on (call it inside the runtime) and resolves on the
/// first one. Unlike [`shutdown_signal`], which installs its handlers when first polled, a
/// signal that arrives while the daemon is still starting is not lost to the default action
/// (killing the process): the daemon stops cleanly as soon as it has started.
pub fn caught_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    Ok(shutdown_signal())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
