//! `easgate lab`: the simulated organization and Intune tenant, and the connector against
//! them, in one process with the status page. Only in builds with the `lab` feature (on by
//! default): a production build (`--no-default-features`) carries no simulator.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::daemon::{block_on, say};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::model::SyncKind;

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Exchange ActiveSync devices in the simulated organization.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Seed of the dataset: the same seed gives the same organization.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the lab's configuration, secrets and store go (created if missing).
    #[arg(long, default_value = "easgate-lab")]
    dir: PathBuf,
    /// The watched plugin directory (created if missing).
    #[arg(long, default_value = "plugins.d")]
    plugins: PathBuf,
    /// Where the status page and admin API listen (port 0: any free port). An address other
    /// than loopback is taken as the explicit choice that `[admin] allow_remote` asks for.
    #[arg(long, default_value = "127.0.0.1:8470")]
    listen: SocketAddr,
    /// Time between quick syncs.
    #[arg(long, default_value = "1m")]
    quick_interval: String,
    /// New phones connecting to the simulated Exchange per minute (0: none), for the quick
    /// syncs to find: each shows up quarantined unless Intune knows it.
    #[arg(long, default_value_t = 4.0)]
    arrivals_per_minute: f64,
    /// How the connector reaches the simulated Exchange: its admin API (`rest`, as Exchange
    /// Online) or remote PowerShell at `/PowerShell/` (`powershell`, as on-premises).
    #[arg(long, value_enum, default_value = "rest")]
    exchange_api: easgate_lab::ExchangeApi,
}

/// A fresh admin token: 32 random bytes, hex. The lab's token guards a loopback page, but it is
/// still the page's only guard, so it comes from the OS's generator, not a PRNG.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    let mut random = std::fs::File::open("/dev/urandom").context("reading /dev/urandom")?;
    std::io::Read::read_exact(&mut random, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Turns the lab's configuration at `config` (its Graph secret already beside it) into one for
/// the lab's remote PowerShell face, with the service account's password in a 0600 file.
fn write_powershell_config(lab: &easgate_lab::Lab, config: &Path) -> anyhow::Result<()> {
    let info = lab.control().info();
    let name = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
    let password = config.with_extension("exchange-password");
    write_private(&password, &info.powershell_password)?;
    let secret = config.with_extension("secret");
    let text = easgate_lab::powershell_connector_config(
        &info,
        "contoso",
        &easgate_lab::SecretSource::File(name(&secret).context("the secret's file name")?),
        &name(&password).context("the password's file name")?,
    );
    std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))?;
    Ok(())
}

/// Writes the lab's connector configuration into `args.dir`; returns its path and the token.
fn write_lab_config(lab: &easgate_lab::Lab, args: &LabArgs) -> anyhow::Result<(PathBuf, String)> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    std::fs::create_dir_all(&args.plugins)
        .with_context(|| format!("creating {}", args.plugins.display()))?;
    let plugins = std::fs::canonicalize(&args.plugins)?;
    let config = args.dir.join("lab.toml");
    lab.write_connector_config(&config)?;
    if args.exchange_api == easgate_lab::ExchangeApi::Powershell {
        write_powershell_config(lab, &config)?;
    }
    // One token per working directory: a page left open keeps working across restarts.
    let token_file = args.dir.join("admin.token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
        _ => {
            let token = new_token()?;
            write_private(&token_file, &token)?;
            token
        }
    };
    let info = lab.control().info();
    let smtp: std::net::SocketAddr = info
        .smtp
        .parse()
        .with_context(|| format!("the lab's SMTP address `{}`", info.smtp))?;
    // Quick syncs often enough to watch a policy change take effect.
    let lab_part = std::fs::read_to_string(&config)?.replacen(
        "[organization.exchange]",
        &format!(
            "quick_interval = {}\n\n[organization.exchange]",
            toml::Value::String(args.quick_interval.clone())
        ),
        1,
    );
    let text = format!(
        "{lab_part}\n\
         # The lab's first full sync moves every device allowed only by the org default: a\n\
         # first roll-out an operator approves once. The lab lifts the blast-radius guard.\n\
         [organization.sync]\n\
         max_new_restrictions = {{ percent = 100.0, floor = 1000000 }}\n\n\
         # Notices go to the lab's SMTP sink (what it received: GET /_lab/mail).\n\
         [notify]\n\
         smtp = {{ host = \"{smtp_host}\", port = {smtp_port}, security = \"none\" }}\n\
         from = \"IT Helpdesk <it@{domain}>\"\n\
         remediation_url = \"https://portal.manage.microsoft.com/\"\n\n\
         [sync]\n\
         data_dir = \"data\"\n\
         plugin_dir = {plugins}\n\n\
         [admin]\n\
         listen = \"{listen}\"\n\
         {allow_remote}\
         token = {{ file = \"admin.token\" }}\n",
        // `--listen` on another address than loopback is the operator's explicit choice.
        allow_remote = if args.listen.ip().is_loopback() {
            ""
        } else {
            "allow_remote = true  # easgate lab --listen asked for an address other than loopback\n"
        },
        plugins = toml::Value::String(plugins.display().to_string()),
        listen = args.listen,
        smtp_host = smtp.ip(),
        smtp_port = smtp.port(),
        domain = info.tenant_domain,
    );
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    Ok((config, token))
}

pub fn lab(args: LabArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let shutdown = super::caught_signals()?;
        let lab = easgate_lab::Lab::start(easgate_lab::LabOptions {
            devices: args.devices,
            seed: args.seed,
            ..Default::default()
        })
        .await?;
        let info = lab.control().info();
        lab.control().set_arrivals(args.arrivals_per_minute);
        let (config_path, token) = write_lab_config(&lab, &args)?;
        let config = Config::load(&config_path)?;
        let daemon = Daemon::start(&config).await?;
        daemon.sync_all(SyncKind::Full)?;
        let url = daemon
            .admin_addr()
            .map(|a| format!("http://{a}/"))
            .unwrap_or_default();
        say(&format!(
            "easgate lab: {} with {} devices over {} mailboxes, {} Intune records (seed {})",
            info.organization, info.devices, info.mailboxes, info.managed_devices, args.seed
        ));
        say(&format!("  status page   {url}"));
        say(&format!("  admin token   {token}"));
        say(&format!("  config        {}", config_path.display()));
        if args.exchange_api == easgate_lab::ExchangeApi::Powershell {
            say(&format!(
                "  exchange      remote PowerShell at {} (Basic, user {})",
                info.powershell_urls.join(", "),
                info.powershell_user
            ));
        }
        say(&format!(
            "  plugins       {} (watched)",
            args.plugins.display()
        ));
        say("");
        let plugins = args.plugins.display();
        // The example policies this binary was built with (`host/build.rs`).
        let examples = Path::new(env!("EASGATE_PLUGIN_WASM_DIR"));
        say(&format!(
            "A full sync runs now, then a quick sync every {} (new phones keep connecting: \
             --arrivals-per-minute). Try next:\n\
             \x20 * open the status page, paste the token, press \"Full sync\" and watch it run;\n\
             \x20 * swap the access policy while it runs: the page's plugin list shows the new\n\
             \x20   version, and the next sync decides with it (a quick sync within {}):\n\
             \x20     cp {} {plugins}/access-policy.wasm\n\
             \x20 * break it on purpose: the last good version keeps serving, the page shows why:\n\
             \x20     echo 'not wasm' > {plugins}/access-policy.wasm\n\
             \x20   (delete the file to go back to the built-in policy);\n\
             \x20 * `easgate status --url {url} --token $(cat {})` in another terminal;\n\
             \x20 * Ctrl-C stops the lab and the connector.",
            args.quick_interval,
            args.quick_interval,
            examples.join("byod_strict.wasm").display(),
            args.dir.join("admin.token").display()
        ));
        shutdown.await;
        daemon.shutdown().await;
        lab.shutdown().await;
        say("easgate lab: stopped");
        anyhow::Ok(())
    })??;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration `easgate lab` writes loads, and `--listen` on every address carries
    /// the explicit `allow_remote` a non-loopback admin address needs.
    #[tokio::test]
    async fn the_lab_config_loads_and_a_remote_listen_allows_itself() {
        let lab = easgate_lab::Lab::start(easgate_lab::LabOptions {
            devices: 10,
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (listen, remote, api) in [
            ("127.0.0.1:0", false, easgate_lab::ExchangeApi::Rest),
            ("0.0.0.0:0", true, easgate_lab::ExchangeApi::Rest),
            ("127.0.0.1:0", false, easgate_lab::ExchangeApi::Powershell),
        ] {
            let args = LabArgs {
                devices: 10,
                seed: 1,
                dir: dir.path().join("lab"),
                plugins: dir.path().join("plugins.d"),
                listen: listen.parse().unwrap(),
                quick_interval: "1m".into(),
                arrivals_per_minute: 0.0,
                exchange_api: api,
            };
            let (path, _token) = write_lab_config(&lab, &args).unwrap();
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{listen}: {e}"));
            config.check_secrets().unwrap();
            assert_eq!(config.admin.unwrap().allow_remote, remote, "{listen}");
            let x = &config.organizations[0].exchange;
            match api {
                easgate_lab::ExchangeApi::Rest => {
                    assert_eq!(x.transport, crate::config::ExchangeTransport::Rest);
                }
                easgate_lab::ExchangeApi::Powershell => {
                    assert_eq!(x.transport, crate::config::ExchangeTransport::PowerShell);
                    assert_eq!(x.cas_urls, lab.powershell_urls());
                    let password = path.with_extension("exchange-password");
                    assert_eq!(
                        std::fs::read_to_string(&password).unwrap(),
                        lab.powershell_account().1
                    );
                    #[cfg(unix)]
                    assert_eq!(
                        std::os::unix::fs::PermissionsExt::mode(
                            &std::fs::metadata(&password).unwrap().permissions()
                        ) & 0o777,
                        0o600
                    );
                }
            }
        }
    }
}
