//! The real `easgate run` (or `easgate lab`) as a child process, and its admin API over HTTP:
//! starting it, reading what it prints, polling its status, scraping `/metrics`, stopping it.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::within;

/// A running `easgate` process, its stdout read line by line.
pub struct Easgate {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Everything read from stdout so far, for failure messages.
    seen: String,
}

impl Easgate {
    /// Starts `easgate ARGS` in `dir`: stdout read here, stderr the test's, killed if dropped.
    pub fn spawn(args: &[&str], dir: &Path) -> Easgate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_easgate"))
            .args(args)
            .current_dir(dir)
            .env("EASGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("easgate starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        Easgate {
            child,
            stdout,
            seen: String::new(),
        }
    }

    /// Reads stdout until a line containing `marker`; returns that line.
    pub async fn line_with(&mut self, marker: &str) -> String {
        let limit = Duration::from_secs(60);
        let found = tokio::time::timeout(limit, async {
            while let Some(line) = self.stdout.next_line().await.expect("stdout") {
                self.seen.push_str(&line);
                self.seen.push('\n');
                if line.contains(marker) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no line with {marker:?} in:\n{}", self.seen),
        }
    }

    /// `easgate run --config CONFIG` in `dir`, once its admin API listens; returns the API's
    /// URL too (the configuration must have an `[admin]` section: see [`add_admin`]).
    pub async fn run_with_admin(config: impl AsRef<Path>, dir: &Path) -> (Easgate, String) {
        let config = config.as_ref().to_str().expect("a UTF-8 path");
        let mut daemon = Easgate::spawn(&["run", "--config", config], dir);
        let url = url_in(&daemon.line_with("admin API").await);
        (daemon, url)
    }

    /// Sends the signal and waits for the exit (bounded).
    pub async fn stop(mut self, signal: &str) -> (ExitStatus, String) {
        signal_process(self.child.id().expect("still running"), signal);
        let status = within(Duration::from_secs(60), self.child.wait())
            .await
            .expect("wait");
        while let Ok(Some(line)) = self.stdout.next_line().await {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        (status, self.seen)
    }

    /// Stops the daemon with SIGTERM and fails the test unless it exits 0.
    pub async fn stop_cleanly(self) {
        let (exit, out) = self.stop("TERM").await;
        assert!(exit.success(), "SIGTERM: {exit}\n{out}");
    }
}

/// Sends the signal `name` (`TERM`, `INT`, ...) to the process `pid`, as an operator's `kill`.
pub fn signal_process(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits (at most `limit`) until the file `file`, which a child process writes, has a line
/// containing `marker`; returns that line.
pub async fn line_in_file(file: &Path, marker: &str, limit: Duration) -> String {
    within(limit, async {
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(marker)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The URL in a line like `... on http://127.0.0.1:1234/`, without the trailing slash.
pub fn url_in(line: &str) -> String {
    let start = line.find("http://").expect("a URL");
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

/// `GET /api/v1/status`, which must answer 200.
pub async fn status(url: &str, token: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{url}/api/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("status answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// `POST` to the admin API path `path` (from `/api/v1`), with `body` as JSON if any; returns
/// the answer's status.
pub async fn post(url: &str, token: &str, path: &str, body: Option<Value>) -> reqwest::StatusCode {
    let mut request = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("the admin API answers")
        .status()
}

/// Polls the status until `done` holds for the first organization (bounded); returns it.
pub async fn wait_for(url: &str, token: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let limit = Duration::from_secs(180);
    let mut last = Value::Null;
    let waited = tokio::time::timeout(limit, async {
        loop {
            last = status(url, token).await["organizations"][0].clone();
            if done(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "no {what} within {limit:?}; last status {last}"
    );
    last
}

/// Waits until the daemon's first full sync has ended well and no run is in progress; returns
/// the first organization's status.
pub async fn wait_for_first_full_sync(url: &str, token: &str) -> Value {
    wait_for(url, token, "the first full sync", |o| {
        o["last_successful_sync"].is_i64() && o["current_run"].is_null()
    })
    .await
}

/// Adds an `[admin]` section to the configuration: loopback, any port, `token` from a file.
pub fn add_admin(config: &Path, token: &str) {
    std::fs::write(config.with_file_name("admin.token"), token).unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        format!(
            "{text}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = \"admin.token\" }}\n"
        ),
    )
    .unwrap();
}

/// Scrapes the daemon's `/metrics` and parses it as Prometheus does; returns the scrape and
/// its text (for failure messages).
pub async fn scrape(url: &str, token: &str) -> (prometheus_parse::Scrape, String) {
    let text = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|err| panic!("{err}:\n{text}"));
    (scrape, text)
}

/// The first sample of `name` whose labels include `labels` (`None`: no such sample).
pub fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples(scrape, name, labels).next()
}

/// The sum of every sample of `name` whose labels include `labels` (`None`: no such sample).
pub fn total(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let values: Vec<f64> = samples(scrape, name, labels).collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The values of the counter, gauge or untyped samples of `name` whose labels include `labels`.
fn samples<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = f64> + 'a {
    scrape
        .samples
        .iter()
        .filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(move |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected {other:?}"),
        })
}
