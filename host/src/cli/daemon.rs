//! `easgate run` (the daemon) and `easgate status` (the admin API's status for the terminal).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::config::Config;
use crate::daemon;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Start with a new store if the store file is empty (it lost its contents); without it,
    /// an empty store file is refused.
    #[arg(long)]
    init: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The admin API's base URL (default: from `--config`'s `[admin]`).
    #[arg(long, requires = "token", conflicts_with = "config")]
    url: Option<String>,
    /// The admin token.
    #[arg(long, env = "EASGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Take the URL and the token from this configuration's `[admin]`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the API's JSON answer as it is.
    #[arg(long)]
    json: bool,
}

pub(super) fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Runtime::new()?.block_on(future))
}

/// Prints a line and flushes: the parent process (a test, a supervisor) may read it at once.
pub(super) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    if args.init {
        super::init_store(&config)?;
    }
    block_on(async {
        let shutdown = super::caught_signals()?;
        daemon::run(
            &config,
            |daemon| {
                if let Some(addr) = daemon.admin_addr() {
                    say(&format!(
                        "easgate: admin API and status page on http://{addr}/"
                    ));
                }
                say("easgate: running");
            },
            shutdown,
        )
        .await
    })??;
    Ok(ExitCode::SUCCESS)
}

/// The admin API's base URL and token, from the flags or the configuration.
fn status_target(args: &StatusArgs) -> anyhow::Result<(String, String)> {
    if let Some(url) = &args.url {
        let token = args.token.clone().context("--url needs --token")?;
        return Ok((url.trim_end_matches('/').to_owned(), token));
    }
    let path = args
        .config
        .as_ref()
        .context("say where the daemon is: --url U --token T, or --config F")?;
    let config = Config::load(path)?;
    let admin = config.admin.as_ref().with_context(|| {
        format!(
            "{} has no [admin] section: the daemon serves no status",
            path.display()
        )
    })?;
    let mut addr = admin.listen;
    if addr.port() == 0 {
        // The port was chosen at start; the running daemon wrote it down.
        let file = config.sync.data_dir.join(crate::daemon::ADMIN_ADDR_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "[admin] listen = \"{}\" takes any free port, and {} (where the daemon writes \
                 the one it took) cannot be read: is the daemon running?",
                admin.listen,
                file.display()
            )
        })?;
        addr = text
            .trim()
            .parse()
            .with_context(|| format!("{} holds no address", file.display()))?;
    }
    // A daemon listening on every address is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let token = match &args.token {
        Some(t) => t.clone(),
        None => admin.token.resolve()?.expose().to_owned(),
    };
    Ok((format!("http://{addr}"), token))
}

fn when(unix: Option<i64>, now: i64) -> String {
    match unix {
        None => "never".to_owned(),
        Some(t) => {
            let ago = (now - t).max(0);
            let (n, unit) = match ago {
                0..60 => (ago, "s"),
                60..3600 => (ago / 60, "min"),
                3600..86400 => (ago / 3600, "h"),
                _ => (ago / 86400, "d"),
            };
            format!("{n} {unit} ago ({})", crate::timestamp::Timestamp(t))
        }
    }
}

fn print_status(status: &Value) {
    let now = crate::schedule::unix_now();
    for org in status["organizations"].as_array().into_iter().flatten() {
        println!(
            "{}: {}, last successful sync {}",
            org["name"].as_str().unwrap_or("?"),
            org["connection"].as_str().unwrap_or("?"),
            when(org["last_successful_sync"].as_i64(), now)
        );
        if let Some(run) = org["current_run"].as_object() {
            let progress = &run["progress"];
            println!(
                "  running: {} sync since {} ({} {}{})",
                run["kind"].as_str().unwrap_or("?"),
                when(run["started_at"].as_i64(), now),
                progress["stage"].as_str().unwrap_or(""),
                progress["done"],
                progress["total"]
                    .as_u64()
                    .map(|t| format!(" of {t}"))
                    .unwrap_or_default()
            );
        }
        if let Some(kind) = org["queued"].as_str() {
            println!("  queued: {kind} sync");
        }
        if let Some(error) = org["last_attempt"]["error"].as_str() {
            println!("  last attempt failed: {error}");
        }
        let policy = &org["policy"];
        if let Some(name) = policy["name"].as_str() {
            let digest = policy["digest"].as_str().unwrap_or("");
            println!(
                "  policy: {name} {} ({}), settings {}",
                if digest.is_empty() {
                    "(none in place)"
                } else {
                    &digest[..digest.len().min(12)]
                },
                policy["source"].as_str().unwrap_or("no good version"),
                policy["settings"].as_str().unwrap_or("?")
            );
        }
        if let Some(error) = policy["error"].as_str() {
            println!("  policy error: {error}");
        }
        let v = &org["verdicts"];
        println!(
            "  devices {}: allow {}, block {}, quarantine {}, exempt {}, undecided {}",
            org["devices"], v["allow"], v["block"], v["quarantine"], v["exempt"], v["undecided"]
        );
        for plan in org["held_plans"].as_array().into_iter().flatten() {
            println!(
                "  held plan: run {} ({} devices changed); approve or reject it on the page",
                plan["id"], plan["devices_changed"]
            );
        }
    }
    for (role, plugin) in status["plugins"].as_object().into_iter().flatten() {
        let digest = plugin["digest"].as_str().unwrap_or("");
        println!(
            "{role}: {} {} ({})",
            plugin["name"].as_str().unwrap_or("?"),
            &digest[..digest.len().min(12)],
            plugin["source"].as_str().unwrap_or("?")
        );
    }
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (url, token) = status_target(&args)?;
    let answer: Value = block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{url}/api/v1/status"))
            .bearer_auth(&token)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("asking {url} for the status"))?;
        let code = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("{url}: the answer is not JSON"))?;
        if !code.is_success() {
            anyhow::bail!(
                "{url}: {code}: {}",
                body["error"].as_str().unwrap_or("no message")
            );
        }
        Ok(body)
    })??;
    if args.json {
        println!("{answer}");
    } else {
        print_status(&answer);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `easgate status --config F` reaches a daemon listening on every address over loopback,
    /// with the token from the configuration's secret file.
    #[test]
    fn status_takes_the_url_and_token_from_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "s3cret\n").unwrap();
        let config = dir.path().join("easgate.toml");
        std::fs::write(
            &config,
            "[admin]\nlisten = \"0.0.0.0:9470\"\nallow_remote = true\n\
             token = { file = \"admin.token\" }\n\n\
             [[organization]]\nname = \"contoso\"\n\
             [organization.exchange]\ncas_urls = [\"https://cas.contoso.com\"]\n\
             tenant_id = \"contoso.onmicrosoft.com\"\n\
             [organization.graph]\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
        )
        .unwrap();
        let args = StatusArgs {
            url: None,
            token: None,
            config: Some(config),
            json: false,
        };
        let (url, token) = status_target(&args).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(url, "http://127.0.0.1:9470");
        assert_eq!(token, "s3cret");
    }

    #[test]
    fn times_read_as_how_long_ago() {
        assert_eq!(when(None, 100), "never");
        assert_eq!(when(Some(100), 130), "30 s ago (1970-01-01T00:01:40Z)");
        assert_eq!(when(Some(0), 7_200), "2 h ago (1970-01-01T00:00:00Z)");
        assert_eq!(when(Some(0), 3 * 86_400), "3 d ago (1970-01-01T00:00:00Z)");
    }
}
