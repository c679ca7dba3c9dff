//! An administrator's remote wipe and partnership removal against the lab, over both
//! transports: from the real CLI (`easgate device wipe|remove`) and the daemon's two-step admin
//! API; the audit record, the user's notice at the lab's SMTP server, the crash rule (an
//! action journaled but never answered is reported, not re-sent), and that no sync — whatever
//! its policy decides — ever sends `Clear-MobileDevice`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mail_parser::MessageParser;

use easgate::admin::actions::OrgActions;
use easgate::exchange::cmdlets::RemoveMobileDevice;
use easgate::store::{
    ActionEnd, ActionIntent, ActionNotice, ActionResult, DeviceAction, NoticeStatus, Store,
};
use easgate::sync::notices::deliver;
use easgate::sync::{NoticeReport, TemplateSource};
use easgate::timestamp::unix_now;
use easgate_lab::{DeviceTruth, Lab, SmtpRules};
use serde_json::{Value, json};

use crate::support::daemon::{Easgate, add_admin};
use crate::support::lab::{add_notify, sync_lab, write_config_over};
use crate::support::{Transport, easgate_within, lab_organization, stderr, stdout, succeeded};

const LIMIT: Duration = Duration::from_secs(120);
const TOKEN: &str = "device-actions-token";

/// A device with a mailbox (so a notice has somewhere to go).
fn owned_device(lab: &Lab, skip: usize) -> DeviceTruth {
    lab.control()
        .truth()
        .into_iter()
        .filter(|t| t.mailbox.is_some())
        .nth(skip)
        .expect("the lab has devices with mailboxes")
}

fn truth_of(lab: &Lab, device_id: &str) -> Option<DeviceTruth> {
    lab.control()
        .truth()
        .into_iter()
        .find(|t| t.device_id == device_id)
}

/// `easgate ARGS` with `answer` typed on its standard input.
async fn easgate_answering(args: &[&str], answer: &str) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let answer = answer.to_owned();
    crate::support::within(
        LIMIT,
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_easgate"))
                .args(&args)
                .env("EASGATE_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("easgate starts");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(answer.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }),
    )
    .await
    .unwrap()
}

/// The mails of device actions the lab's SMTP server received (their Message-ID is the notice
/// id `admin-action-<audit id>`, in `notice.<id>@domain`), to whom.
fn action_mails(lab: &Lab) -> Vec<Vec<String>> {
    lab.control()
        .mails()
        .into_iter()
        .filter(|m| {
            MessageParser::default()
                .parse(m.raw.as_bytes())
                .and_then(|p| {
                    p.message_id()
                        .map(|id| id.starts_with("notice.admin-action-"))
                })
                .unwrap_or(false)
        })
        .map(|m| m.to)
        .collect()
}

fn config_for(lab: &Lab, dir: &Path, transport: Transport) -> String {
    let config = write_config_over(lab, dir, 2, transport);
    add_notify(&config, lab.smtp_addr().port(), "5s");
    config.to_str().unwrap().to_owned()
}

over_transports!(the_cli_wipes_after_confirmation_with_a_reason_audits_and_notifies);
async fn the_cli_wipes_after_confirmation_with_a_reason_audits_and_notifies(transport: Transport) {
    let lab = sync_lab(60).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path(), transport);
    let dev = owned_device(&lab, 0);
    let id = dev.device_id.as_str();
    let base = [
        "device", "wipe", "--config", &config, "--org", "contoso", "--device",
    ];
    let args = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .copied()
            .chain([id])
            .chain(extra.iter().copied())
            .map(str::to_owned)
            .collect()
    };
    let run = |a: Vec<String>| async move {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        easgate_within(LIMIT, &a).await
    };

    // No reason: refused before anything is looked up.
    let out = run(args(&["--yes"])).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a reason is required"),
        "{}",
        stderr(&out)
    );
    assert!(truth_of(&lab, id).unwrap().wipe.is_none());

    // Not confirmed: the device is shown, nothing happens.
    let a = args(&["--reason", "reported stolen"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = easgate_answering(&a, "no\n").await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let shown = stdout(&out);
    assert!(shown.contains(&dev.identity), "{shown}");
    assert!(shown.contains(&dev.device_model), "{shown}");
    assert!(shown.contains("last sync:"), "{shown}");
    assert!(shown.contains("factory settings"), "{shown}");
    assert!(shown.contains("nothing done"), "{shown}");
    assert!(truth_of(&lab, id).unwrap().wipe.is_none());
    assert!(action_mails(&lab).is_empty());

    // Confirmed on the terminal: an account-only wipe.
    let a = args(&["--reason", "reported stolen", "--account-only"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = easgate_answering(&a, "yes\n").await;
    let text = succeeded(&out);
    assert!(text.contains("account-wipe: done"), "{text}");
    assert!(text.contains("notice: sent"), "{text}");
    let wipe = truth_of(&lab, id).unwrap().wipe.expect("a wipe pending");
    assert!(wipe.account_only);

    // The user's notice, at the real SMTP server.
    let mails = action_mails(&lab);
    assert_eq!(mails.len(), 1, "{:?}", lab.control().mails());
    let mailbox = dev.mailbox.clone().unwrap();
    assert!(
        mails[0].iter().any(|to| to.eq_ignore_ascii_case(&mailbox)),
        "{:?} not to {mailbox}",
        mails[0]
    );

    // An unknown device is named, and nothing is journaled for it.
    let out = run(vec![
        "device".into(),
        "remove".into(),
        "--config".into(),
        config.clone(),
        "--org".into(),
        "contoso".into(),
        "--device".into(),
        "NOSUCHDEVICE42".into(),
        "--reason".into(),
        "x".into(),
        "--yes".into(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no device `NOSUCHDEVICE42`"),
        "{}",
        stderr(&out)
    );

    // A removal with --yes.
    let other = owned_device(&lab, 1);
    let out = run(vec![
        "device".into(),
        "remove".into(),
        "--config".into(),
        config.clone(),
        "--org".into(),
        "contoso".into(),
        "--device".into(),
        other.identity.clone(),
        "--reason".into(),
        "left the company".into(),
        "--yes".into(),
    ])
    .await;
    succeeded(&out);
    assert!(truth_of(&lab, &other.device_id).is_none());

    // The audit: who, what, why, result.
    let store = Store::open_read_only(&dir.path().join("data")).unwrap();
    let audit = store.device_actions(None, 10).unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0].action, DeviceAction::Remove);
    assert_eq!(audit[0].identity, other.identity);
    assert_eq!(audit[0].reason, "left the company");
    assert_eq!(audit[1].action, DeviceAction::AccountWipe);
    assert_eq!(audit[1].device_id, dev.device_id);
    assert_eq!(audit[1].reason, "reported stolen");
    for r in &audit {
        assert_eq!(r.result, ActionResult::Done);
        assert!(
            r.actor.starts_with("cli:") && r.actor.contains("uid "),
            "{}",
            r.actor
        );
        assert!(r.finished_at.is_some());
    }
}

over_transports!(the_api_asks_for_a_token_and_a_reason_then_wipes);
async fn the_api_asks_for_a_token_and_a_reason_then_wipes(transport: Transport) {
    let lab = sync_lab(60).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path(), transport);
    add_admin(Path::new(&config), TOKEN);
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;
    crate::support::daemon::wait_for_first_full_sync(&url, TOKEN).await;
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        http.post(format!("{url}/api/v1/organizations/contoso/{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let dev = owned_device(&lab, 2);

    // Without the admin token: refused.
    let r = http
        .post(format!("{url}/api/v1/organizations/contoso/device-actions"))
        .json(&json!({"device": dev.device_id, "action": "wipe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Unknown device: named.
    let r = call(
        "device-actions",
        json!({"device": "NOSUCHDEVICE42", "action": "wipe"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("NOSUCHDEVICE42"),
        "{body}"
    );

    // Step one: the device, what will happen, a token; nothing changes.
    let r = call(
        "device-actions",
        json!({"device": dev.device_id, "action": "wipe"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let asked: Value = r.json().await.unwrap();
    assert_eq!(
        asked["device"]["identity"],
        dev.identity.as_str(),
        "{asked}"
    );
    assert_eq!(
        asked["device"]["model"],
        dev.device_model.as_str(),
        "{asked}"
    );
    assert!(asked["effect"].as_str().unwrap().contains("factory"));
    let token = asked["token"].as_str().unwrap().to_owned();
    assert!(truth_of(&lab, &dev.device_id).unwrap().wipe.is_none());

    // Step two without a reason: refused, and the token still good.
    let r = call(
        "device-actions/confirm",
        json!({"token": token, "reason": " "}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(truth_of(&lab, &dev.device_id).unwrap().wipe.is_none());

    let r = call(
        "device-actions/confirm",
        json!({"token": token, "reason": "lost at the airport"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["record"]["result"], "done", "{done}");
    assert_eq!(done["record"]["actor"], "api");
    assert_eq!(done["notice"], "sent", "{done}");
    let wipe = truth_of(&lab, &dev.device_id)
        .unwrap()
        .wipe
        .expect("pending");
    assert!(!wipe.account_only);
    assert_eq!(action_mails(&lab).len(), 1);

    // A token is good once.
    let r = call(
        "device-actions/confirm",
        json!({"token": token, "reason": "again"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    // The audit, on the API.
    let audit: Value = http
        .get(format!("{url}/api/v1/device-actions?org=contoso"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions = audit["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{audit}");
    assert_eq!(actions[0]["action"], "wipe");
    assert_eq!(actions[0]["reason"], "lost at the airport");
    assert_eq!(actions[0]["device_id"], dev.device_id.as_str());
    daemon.stop_cleanly().await;
}

// Regression for the crash rule: an action journaled but never answered (the process died
// with the cmdlet in flight) is reported by the next process that opens the store, marked
// interrupted, and never sent again; the lab shows no wipe for it.
over_transports!(an_interrupted_wipe_is_reported_and_not_reissued);
async fn an_interrupted_wipe_is_reported_and_not_reissued(transport: Transport) {
    let lab = sync_lab(40).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path(), transport);
    let cut_short = owned_device(&lab, 0);
    {
        // What a process that died right after journaling leaves.
        let store = Store::open(&dir.path().join("data")).unwrap();
        let org = store.organization("contoso", 1).unwrap();
        store
            .begin_device_action(&ActionIntent {
                org,
                action: DeviceAction::Wipe,
                identity: &cut_short.identity,
                device_id: &cut_short.device_id,
                user: "someone",
                actor: "cli:someone",
                reason: "stolen",
                at: 1,
            })
            .unwrap();
    }
    let other = owned_device(&lab, 1);
    let out = easgate_within(
        LIMIT,
        &[
            "device",
            "remove",
            "--config",
            &config,
            "--org",
            "contoso",
            "--device",
            &other.device_id,
            "--reason",
            "replaced",
            "--yes",
        ],
    )
    .await;
    succeeded(&out);
    assert!(
        stderr(&out).contains("NOT sent again"),
        "the interrupted wipe is reported: {}",
        stderr(&out)
    );
    assert!(truth_of(&lab, &cut_short.device_id).unwrap().wipe.is_none());
    let store = Store::open_read_only(&dir.path().join("data")).unwrap();
    let audit = store.device_actions(None, 10).unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].result, ActionResult::Interrupted);
    assert_eq!(audit[0].result, ActionResult::Done);
}

// No policy can cause a wipe: its answer is a verdict (allow, block, quarantine, exempt) and
// a sync's commands are list edits, retired partnerships' removals and the org default. A
// full sync that blocks or quarantines devices sends no `Clear-MobileDevice`.
over_transports!(a_sync_never_wipes);
async fn a_sync_never_wipes(transport: Transport) {
    let lab = sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path(), transport);
    let out = easgate_within(LIMIT, &["sync", "--config", &config, "--full"]).await;
    let text = succeeded(&out);
    let counters = lab.control().counters().exchange.by_cmdlet;
    assert!(
        counters.get("Set-CASMailbox").is_some_and(|c| c.calls > 0),
        "the sync changed access: {text} {counters:?}"
    );
    assert!(!counters.contains_key("Clear-MobileDevice"), "{counters:?}");
    assert!(lab.control().truth().iter().all(|t| t.wipe.is_none()));
}

/// The status page's device action in headless Chromium: the dialog, the refusal without a
/// reason, the confirmation and the audit row (tests/browser/device_action.mjs); then the lab
/// has the wipe pending and the user's notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_wipes_a_device_after_its_dialog() {
    if let Some(why) = crate::support::browser_missing() {
        assert!(
            std::env::var(crate::support::REQUIRE_BROWSER).as_deref() != Ok("1"),
            "{why}, and {}=1: run .ci/install-browser",
            crate::support::REQUIRE_BROWSER
        );
        eprintln!("SKIPPED the device action browser test: {why} (run .ci/install-browser)");
        return;
    }
    let lab = sync_lab(60).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&lab, dir.path(), Transport::Rest);
    add_admin(Path::new(&config), TOKEN);
    let (daemon, url) = Easgate::run_with_admin(&config, dir.path()).await;
    crate::support::daemon::wait_for_first_full_sync(&url, TOKEN).await;
    let dev = owned_device(&lab, 3);

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("device-action.png");
    let _ = std::fs::remove_file(&screenshot);
    let browser = crate::support::repo().join("tests/browser");
    let script = tokio::process::Command::new("node")
        .arg(browser.join("device_action.mjs"))
        .current_dir(&browser)
        .env("EASGATE_URL", format!("{url}/"))
        .env("EASGATE_TOKEN", TOKEN)
        .env("EASGATE_DEVICE", &dev.device_id)
        .env("EASGATE_IDENTITY", &dev.identity)
        .env("EASGATE_MODEL", &dev.device_model)
        .env("EASGATE_SCREENSHOT", &screenshot)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = crate::support::within(Duration::from_secs(300), script)
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "the browser script failed (screenshot: {}):\n{}{}",
        screenshot.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
    let wipe = truth_of(&lab, &dev.device_id)
        .unwrap()
        .wipe
        .expect("pending");
    assert!(wipe.account_only);
    assert_eq!(action_mails(&lab).len(), 1);
    daemon.stop_cleanly().await;
}

/// The lab's organization's device actions on `n`'s store, Exchange client and notice stage
/// (whose retries are due at once), rendering with the registry's template.
fn org_actions(n: &crate::notices::Notifying) -> (OrgActions, TemplateSource) {
    let template: TemplateSource = {
        let registry = n.registry.clone();
        Arc::new(move || registry.notice_template())
    };
    let stage = n.sync.notices.clone().expect("a notice stage");
    let actions = OrgActions {
        exchange: n.sync.exchange.clone(),
        notices: Some((stage, template.clone())),
        metrics: None,
    };
    (actions, template)
}

/// The raw mails of device actions the lab's SMTP server received.
fn action_mail_texts(lab: &Lab) -> Vec<String> {
    lab.control()
        .mails()
        .into_iter()
        .filter(|m| m.raw.contains("notice.admin-action-"))
        .map(|m| {
            let parsed = MessageParser::default().parse(m.raw.as_bytes()).unwrap();
            parsed.body_text(0).unwrap().into_owned()
        })
        .collect()
}

// Regression: the notice after an action was sent once, beside the outbox, so a mail server
// that failed lost it. Now it is in the outbox: a deferral leaves it pending (counted there),
// the sync's notify stage sends it when the server takes mail again, and neither a second
// delivery nor recording the action's end again mails twice.
over_transports!(a_deferred_action_notice_stays_in_the_outbox_and_is_sent_once);
async fn a_deferred_action_notice_stays_in_the_outbox_and_is_sent_once(transport: Transport) {
    let lab = sync_lab(30).await;
    let dir = tempfile::tempdir().unwrap();
    let n = crate::notices::notifying_over(&lab, dir.path(), transport);
    let (actions, template) = org_actions(&n);
    let stage = n.sync.notices.clone().unwrap();
    let name = lab_organization(&lab).name;
    let org = n.store.organization(&name, unix_now()).unwrap();
    let dev = owned_device(&lab, 1);
    let target = actions.lookup(&name, &dev.device_id).await.unwrap();
    let recipient = target.recipient.clone().expect("the user's address");

    lab.control().set_smtp_rules(SmtpRules {
        defer: vec![recipient.clone()],
        ..SmtpRules::default()
    });
    let outcome = actions
        .perform(
            &n.store,
            org,
            &target,
            DeviceAction::Remove,
            "cli:test",
            "left the company",
            unix_now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.record.result, ActionResult::Done, "{outcome:?}");
    assert!(
        outcome.notice.starts_with("pending: ") && outcome.notice.contains("450"),
        "{}",
        outcome.notice
    );
    assert!(action_mail_texts(&lab).is_empty());
    let counts = n.store.notice_counts(org).unwrap();
    assert_eq!((counts.pending, counts.sent), (1, 0), "{counts:?}");
    let id = ActionNotice::id(outcome.record.id);
    let pending = n.store.notice(&id).unwrap().unwrap();
    assert_eq!(
        (pending.status, pending.attempts),
        (NoticeStatus::Pending, 1)
    );

    // Still deferred: the notify stage leaves it pending.
    let mut report = NoticeReport::default();
    deliver(&stage, template(), &n.store, org, &mut report)
        .await
        .unwrap();
    assert_eq!((report.sent, report.retrying), (0, 1), "{report:?}");

    lab.control().set_smtp_rules(SmtpRules::default());
    let mut report = NoticeReport::default();
    deliver(&stage, template(), &n.store, org, &mut report)
        .await
        .unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let texts = action_mail_texts(&lab);
    assert_eq!(texts.len(), 1);
    assert!(
        texts[0].contains("removed its mail partnership"),
        "{}",
        texts[0]
    );
    assert!(!texts[0].contains("Company Portal"), "{}", texts[0]);
    assert!(texts[0].contains("admin-remove"), "{}", texts[0]);
    assert_eq!(action_mails(&lab), vec![vec![recipient]]);
    let sent = n.store.notice(&id).unwrap().unwrap();
    assert_eq!((sent.status, sent.attempts), (NoticeStatus::Sent, 3));

    // Nothing is sent twice: not by the next delivery, not when the end is recorded again.
    let mut report = NoticeReport::default();
    deliver(&stage, template(), &n.store, org, &mut report)
        .await
        .unwrap();
    assert_eq!(report.sent, 0, "{report:?}");
    let exchange = easgate::model::ExchangeDevice {
        device_id: dev.device_id.clone(),
        ..Default::default()
    };
    let again = ActionNotice {
        reason: "admin-remove",
        recipient: "x@example.com",
        exchange: &exchange,
        locale: "",
        due_at: 0,
    };
    let queued = n
        .store
        .finish_device_action(
            outcome.record.id,
            ActionEnd::Done { note: None },
            Some(&again),
            unix_now(),
        )
        .unwrap();
    assert!(!queued);
    assert_eq!(n.store.notice_counts(org).unwrap().sent, 1);
    assert_eq!(action_mails(&lab).len(), 1);
}

// Regression: a removal whose first attempt Exchange applied without an answer was resent,
// found no partnership, and was audited `failed`. A removal that finds the partnership gone
// is done, with a note saying why; a wipe that finds no device is still a failure.
over_transports!(a_removal_that_finds_the_partnership_gone_is_done_and_says_so);
async fn a_removal_that_finds_the_partnership_gone_is_done_and_says_so(transport: Transport) {
    let lab = sync_lab(30).await;
    let dir = tempfile::tempdir().unwrap();
    let n = crate::notices::notifying_over(&lab, dir.path(), transport);
    let (actions, _) = org_actions(&n);
    let name = lab_organization(&lab).name;
    let org = n.store.organization(&name, unix_now()).unwrap();
    let dev = owned_device(&lab, 2);
    let target = actions.lookup(&name, &dev.device_id).await.unwrap();

    // What the unanswered first attempt did: the partnership is gone before ours arrives.
    n.sync
        .exchange
        .run(&RemoveMobileDevice {
            identity: target.identity.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(
        actions.lookup(&name, &dev.device_id).await,
        Err(easgate::admin::actions::ActionError::UnknownDevice { .. })
    ));

    let wipe = actions
        .perform(
            &n.store,
            org,
            &target,
            DeviceAction::Wipe,
            "cli:test",
            "stolen",
            unix_now(),
        )
        .await
        .unwrap();
    assert_eq!(wipe.record.result, ActionResult::Failed, "{wipe:?}");
    assert_eq!(wipe.record.note, None);
    assert_eq!(wipe.notice, "skipped");

    let removal = actions
        .perform(
            &n.store,
            org,
            &target,
            DeviceAction::Remove,
            "cli:test",
            "stolen",
            unix_now(),
        )
        .await
        .unwrap();
    assert_eq!(removal.record.result, ActionResult::Done, "{removal:?}");
    assert_eq!(removal.record.error, None);
    let note = removal.record.note.as_deref().expect("a note");
    assert!(
        note.contains("not found") && note.contains("gone"),
        "{note}"
    );
    assert_eq!(removal.notice, "sent", "{removal:?}");
    assert_eq!(action_mails(&lab).len(), 1);
}
