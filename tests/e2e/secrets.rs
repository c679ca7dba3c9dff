//! Secrets never leave the process: a full `easgate run` against the lab, with a known Graph
//! client secret, SMTP password, admin token and remote PowerShell password (a second,
//! on-premises organization signs in to the lab's `/PowerShell/` face with Basic), logging at
//! debug level, syncing with notices
//! sent through SMTP AUTH, then failing in the ways an operator sees (a CAS answering 500s, a
//! rejected client secret, a mail server refusing the password, wrong admin tokens, bad API
//! calls). Then every output is searched for every secret, raw and in each encoding it crosses
//! the wire in: the daemon's stdout and stderr, every admin API answer (headers too), the status
//! page, `/metrics`, `easgate status`, and every byte of every file the connector wrote (the
//! SQLite store with its WAL, the plugin directory and compile cache) while it runs and after
//! it stopped. (`client_secrets.rs` covers the clients alone.)

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use easgate_lab::{ComplianceState, SmtpAuth, SmtpRules};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::daemon::{line_in_file, signal_process, url_in};
use crate::support::lab::sync_lab;
use crate::support::within;

/// Chosen with `/`, `+`, `=`, `&`, `%` and a space, so that URL, form and Base64 encodings of
/// them differ from the raw text and each one is searched for.
const ADMIN_TOKEN: &str = "adm1n-T0k/en+canary=&%x y";
const SMTP_PASSWORD: &str = "smtp-Pa55/word+canary=&%x y";
/// The client secret of a second organization, which the lab's token endpoint refuses.
const WRONG_CLIENT_SECRET: &str = "wrong-Cl1ent/secret+canary=&%x y";
const SMTP_USER: &str = "easgate-notices";
const LIMIT: Duration = Duration::from_secs(120);

/// Every form in which `secret` could end up somewhere: raw, URL- and form-encoded (the token
/// request body), JSON- and Debug-escaped, Base64 (and, for the SMTP password, the Base64 of
/// `AUTH PLAIN`'s `\0user\0password`).
fn forms(name: &str, secret: &str) -> Vec<(String, Vec<u8>)> {
    let percent: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut forms = vec![
        ("raw", secret.as_bytes().to_vec()),
        ("URL-encoded", percent.clone().into_bytes()),
        ("form-encoded", percent.replace("%20", "+").into_bytes()),
        (
            "JSON-escaped",
            serde_json::to_string(secret)
                .unwrap()
                .trim_matches('"')
                .into(),
        ),
        (
            "Debug-escaped",
            format!("{secret:?}").trim_matches('"').into(),
        ),
        ("Base64", BASE64.encode(secret).into_bytes()),
    ];
    if name == "SMTP password" {
        let plain = format!("\0{SMTP_USER}\0{secret}");
        forms.push(("AUTH PLAIN", BASE64.encode(plain).into_bytes()));
    }
    if let Some(user) = name.strip_prefix("remote PowerShell password of ") {
        let basic = format!("{user}:{secret}");
        forms.push(("Basic credentials", BASE64.encode(basic).into_bytes()));
    }
    let mut seen = Vec::new();
    forms
        .into_iter()
        .filter(|(_, bytes)| {
            let new = !seen.contains(bytes);
            seen.push(bytes.clone());
            new
        })
        .map(|(form, bytes)| (format!("{name} ({form})"), bytes))
        .collect()
}

/// Which of `secrets` (by form) occur in which of `outputs`.
fn leaks(secrets: &[(String, Vec<u8>)], outputs: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    for (output, bytes) in outputs {
        for (secret, form) in secrets {
            if bytes.windows(form.len()).any(|window| window == form) {
                found.push(format!("{secret} in {output}"));
            }
        }
    }
    found
}

/// Every file under `dir` but `except`, with its bytes.
fn files_under(dir: &Path, except: &[PathBuf], label: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && !except.contains(&path) {
                // A file may go away between listing and reading (the WAL at a checkpoint).
                if let Ok(bytes) = std::fs::read(&path) {
                    out.push((format!("{label} {}", path.display()), bytes));
                }
            }
        }
    }
    out
}

/// One HTTP exchange as text: status, headers and body.
async fn exchange(request: reqwest::RequestBuilder, label: &str) -> (String, Vec<u8>, Value) {
    let response = request.send().await.expect("the admin API answers");
    let mut text = format!("{:?} {}\n", response.version(), response.status());
    for (name, value) in response.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let body = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(&body);
    (label.to_owned(), bytes, json)
}

struct Api {
    url: String,
    http: reqwest::Client,
    /// Every answer so far, to be searched.
    answers: Vec<(String, Vec<u8>)>,
}

impl Api {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (label, bytes, json) = exchange(request, &format!("{method} {path}")).await;
        self.answers.push((label, bytes));
        json
    }

    async fn get(&mut self, path: &str) -> Value {
        self.call(Method::GET, path, Some(ADMIN_TOKEN), None).await
    }

    /// Polls `/api/v1/status` until `done` holds for organization `org` (bounded).
    async fn until(&mut self, org: usize, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let status = self.get("/api/v1/status").await;
            let state = &status["organizations"][org];
            if done(state) {
                return state.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within {LIMIT:?}: {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks for a full sync of contoso, whose status is `contoso`, and waits until a newer run
    /// than its last has ended; returns the new status.
    async fn full_sync_after(&mut self, contoso: &Value, what: &str) -> Value {
        let before = contoso["recent_runs"][0]["id"].as_i64().unwrap();
        self.call(
            Method::POST,
            "/api/v1/organizations/contoso/sync",
            Some(ADMIN_TOKEN),
            Some(json!({"kind": "full"})),
        )
        .await;
        self.until(0, what, |o| {
            o["recent_runs"][0]["id"].as_i64() > Some(before) && o["current_run"].is_null()
        })
        .await
    }
}

/// The configuration: secrets from files and the environment, never inline; a short Exchange
/// timeout so the failing CAS ends the run quickly; a second organization whose client secret
/// the lab refuses; a third, on-premises, reaching the lab's Exchange over remote PowerShell.
fn write_config(lab: &easgate_lab::Lab, dir: &Path) -> PathBuf {
    std::fs::write(dir.join("graph.secret"), lab.client_secret()).unwrap();
    std::fs::write(dir.join("exchange.pw"), lab.powershell_account().1).unwrap();
    std::fs::write(dir.join("wrong.secret"), WRONG_CLIENT_SECRET).unwrap();
    std::fs::write(dir.join("admin.token"), ADMIN_TOKEN).unwrap();
    let contoso = lab
        .connector_config(&easgate_lab::SecretSource::File("graph.secret".into()))
        .replace(
            "[organization.graph]",
            "parallel_commands = 4\nunavailable_timeout = \"2s\"\n\n[organization.graph]",
        );
    let fabrikam = contoso
        .replace("name = \"contoso\"", "name = \"fabrikam\"")
        .replace("graph.secret", "wrong.secret");
    let northwind = easgate_lab::powershell_connector_config(
        &lab.control().info(),
        "northwind",
        &easgate_lab::SecretSource::File("graph.secret".into()),
        "exchange.pw",
    );
    let northwind = &northwind[northwind.find("[[organization]]").unwrap()..];
    let guard =
        "[organization.sync]\nmax_new_restrictions = { percent = 100.0, floor = 1000000 }\n";
    let smtp = lab.smtp_addr();
    let text = format!(
        "[sync]\ndata_dir = \"data\"\nplugin_dir = \"plugins.d\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = \"admin.token\" }}\n\n\
         [notify]\n\
         smtp = {{ host = \"{}\", port = {}, security = \"none\", timeout = \"5s\", \
         username = \"{SMTP_USER}\", password = {{ env = \"EASGATE_TEST_SMTP_PASSWORD\" }} }}\n\
         from = \"IT <it@contoso.com>\"\n\
         remediation_url = \"https://portal.manage.microsoft.com/\"\n\n\
         {contoso}\n{guard}\n{fabrikam}\n{guard}\n{northwind}\n{guard}",
        smtp.ip(),
        smtp.port(),
    );
    let path = dir.join("easgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads `file` until it holds a line with `marker` (bounded); returns that line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_shows_in_any_output_of_a_full_run() {
    let lab = sync_lab(300).await;
    lab.control().set_smtp_rules(SmtpRules {
        auth: Some(SmtpAuth {
            username: SMTP_USER.into(),
            password: SMTP_PASSWORD.into(),
        }),
        ..SmtpRules::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&lab, dir.path());
    let (stdout_path, stderr_path) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_easgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("EASGATE_LOG", "debug")
        .env("EASGATE_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .expect("easgate starts");
    let url = url_in(&line_in_file(&stdout_path, "admin API", LIMIT).await);
    let mut api = Api {
        url,
        http: reqwest::Client::builder().timeout(LIMIT).build().unwrap(),
        answers: Vec::new(),
    };

    // The start-up sync: a full one, with notices through SMTP AUTH.
    let contoso = api
        .until(0, "successful first sync", |o| {
            o["last_successful_sync"].is_i64() && o["current_run"].is_null()
        })
        .await;
    assert_eq!(contoso["recent_runs"][0]["kind"], "full", "{contoso}");
    let sent = lab.control().mails().len();
    assert!(
        sent > 0,
        "no notice went out: the SMTP password was not used"
    );
    // The organization with the refused client secret fails at the token endpoint.
    let fabrikam = api
        .until(1, "a failed attempt of fabrikam", |o| {
            o["last_attempt"]["error"].is_string()
        })
        .await;
    assert_eq!(fabrikam["connection"], "disconnected", "{fabrikam}");
    // The on-premises organization signed in over remote PowerShell and synced.
    let northwind = api
        .until(2, "successful first sync of northwind", |o| {
            o["last_successful_sync"].is_i64() && o["current_run"].is_null()
        })
        .await;
    assert_eq!(northwind["connection"], "connected", "{northwind}");

    // The mail server now refuses the password: the notices of new devices fail and say why.
    lab.control().set_smtp_rules(SmtpRules {
        auth: Some(SmtpAuth {
            username: SMTP_USER.into(),
            password: "another-password".into(),
        }),
        ..SmtpRules::default()
    });
    // A restart of the mail server drops the connection the connector keeps open, so the
    // next notices sign in again.
    lab.control().stop_smtp().await;
    lab.control().start_smtp().await.unwrap();
    // Allowed devices fall out of compliance: blocked, and their users are told.
    let allowed: Vec<String> = lab
        .control()
        .truth()
        .into_iter()
        .filter(|d| d.mailbox.is_some() && d.in_allow_list)
        .map(|d| d.device_id)
        .take(5)
        .collect();
    assert_eq!(allowed.len(), 5);
    for device in &allowed {
        lab.control()
            .set_compliance(device, ComplianceState::Noncompliant)
            .unwrap();
    }
    let contoso = api
        .full_sync_after(&contoso, "the full sync with refused mail")
        .await;
    // Refused sign-ins are retried later: the notices wait, their error in the store.
    let counts = &contoso["notices"]["counts"];
    let waiting = counts["pending"].as_u64().unwrap() + counts["failed"].as_u64().unwrap();
    assert!(
        waiting >= 5,
        "no notice failed on the refused password: {contoso}"
    );

    // A CAS answering 500 to everything: the run fails with an error of its own.
    lab.control().fail_cas(0, 500).unwrap();
    let contoso = api.full_sync_after(&contoso, "the failed full sync").await;
    assert!(contoso["last_attempt"]["error"].is_string(), "{contoso}");
    lab.control().heal_cas(0).unwrap();

    // Every route, right and wrong.
    for path in [
        "/",
        "/healthz",
        "/metrics",
        "/api/v1/status",
        "/api/v1/plugins",
    ] {
        api.get(path).await;
    }
    let mut offset = 0;
    let mut ids = Vec::new();
    loop {
        let page = api
            .get(&format!("/api/v1/devices?limit=500&offset={offset}"))
            .await;
        let devices = page["devices"].as_array().unwrap().clone();
        ids.extend(devices.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        offset += devices.len();
        if devices.is_empty() || offset >= page["total"].as_u64().unwrap() as usize {
            break;
        }
    }
    assert!(ids.len() >= 300, "{} devices listed", ids.len());
    for id in ids.iter().take(20) {
        let encoded: String = id
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        api.get(&format!("/api/v1/devices/{encoded}")).await;
    }
    let wrong_tokens = [
        None,
        Some("wrong"),
        Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
    ];
    for token in wrong_tokens {
        for path in ["/api/v1/status", "/metrics", "/api/v1/devices"] {
            let answer = api.call(Method::GET, path, token, None).await;
            assert!(answer["error"].is_string(), "{path}: {answer}");
        }
    }
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/organizations/contoso/sync",
            json!({"kind": "weekly"}),
        ),
        (
            Method::POST,
            "/api/v1/organizations/nowhere/sync",
            json!({"kind": "full"}),
        ),
        (Method::POST, "/api/v1/plans/99999/approve", json!(null)),
        (Method::POST, "/api/v1/plans/x/reject", json!(null)),
        (Method::GET, "/api/v1/devices?verdict=maybe", json!(null)),
        (Method::GET, "/api/v1/nothing", json!(null)),
    ] {
        let body = (!body.is_null()).then_some(body);
        api.call(method, path, Some(ADMIN_TOKEN), body).await;
    }

    // The CLI, with the token from the environment, then a wrong one.
    let mut outputs = std::mem::take(&mut api.answers);
    for (args, token, succeeds) in [
        (vec!["status"], ADMIN_TOKEN, true),
        (vec!["status", "--json"], ADMIN_TOKEN, true),
        (vec!["status"], "wrong", false),
    ] {
        let cli = std::process::Command::new(env!("CARGO_BIN_EXE_easgate"))
            .args(&args)
            .args(["--url", &api.url])
            .env("EASGATE_ADMIN_TOKEN", token)
            .env("EASGATE_LOG", "debug")
            .output()
            .unwrap();
        assert_eq!(cli.status.success(), succeeds, "{args:?}: {cli:?}");
        outputs.push((format!("easgate {args:?} stdout"), cli.stdout));
        outputs.push((format!("easgate {args:?} stderr"), cli.stderr));
    }

    // The store and every other file, while the daemon runs (the WAL holds recent writes)...
    let secret_files =
        ["graph.secret", "wrong.secret", "admin.token", "exchange.pw"].map(|f| dir.path().join(f));
    let mut except = secret_files.to_vec();
    except.extend([stdout_path.clone(), stderr_path.clone()]);
    outputs.extend(files_under(dir.path(), &except, "while running:"));
    assert!(
        outputs.iter().any(|(name, _)| name.ends_with("-wal")),
        "no WAL file was read: {:?}",
        outputs.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );

    // ...and after a clean stop.
    signal_process(daemon.id().unwrap(), "TERM");
    let exit = within(LIMIT, daemon.wait()).await.unwrap();
    assert!(exit.success(), "{exit}");
    outputs.extend(files_under(dir.path(), &except, "after stop:"));
    let stderr = std::fs::read(&stderr_path).unwrap();
    let log = String::from_utf8_lossy(&stderr);
    assert!(
        log.contains("DEBUG") && log.contains("WARN"),
        "the log is not at debug level or saw no failure"
    );
    outputs.push(("daemon stdout".into(), std::fs::read(&stdout_path).unwrap()));
    outputs.push(("daemon stderr (debug)".into(), stderr));

    let (powershell_user, powershell_password) = lab.powershell_account();
    let powershell_secret = format!("remote PowerShell password of {powershell_user}");
    let secrets: Vec<(String, Vec<u8>)> = [
        ("Graph client secret", lab.client_secret()),
        ("refused client secret", WRONG_CLIENT_SECRET),
        ("SMTP password", SMTP_PASSWORD),
        ("admin token", ADMIN_TOKEN),
        (powershell_secret.as_str(), powershell_password.as_str()),
    ]
    .iter()
    .flat_map(|(name, secret)| forms(name, secret))
    .collect();
    // The search finds what it looks for: each secret file holds its secret.
    let controls = files_under(dir.path(), &[], "control:")
        .into_iter()
        .filter(|(name, _)| {
            secret_files
                .iter()
                .any(|f| name.ends_with(&*f.to_string_lossy()))
        })
        .collect::<Vec<_>>();
    assert_eq!(controls.len(), 4);
    for control in &controls {
        let found = leaks(&secrets, std::slice::from_ref(control));
        assert!(!found.is_empty(), "the search misses {}", control.0);
    }

    let found = leaks(&secrets, &outputs);
    let searched: usize = outputs.iter().map(|(_, b)| b.len()).sum();
    assert!(
        found.is_empty(),
        "secrets leaked ({} outputs, {searched} bytes searched):\n{}",
        outputs.len(),
        found.join("\n")
    );
    eprintln!(
        "secrets: {} forms of 5 secrets searched in {} outputs ({searched} bytes): none found",
        secrets.len(),
        outputs.len()
    );
}
