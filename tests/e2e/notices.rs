//! The sync's notify stage end to end: verdicts decided against the lab, notices recorded in
//! the store's outbox with them, rendered by a real template plugin and delivered over SMTP to
//! the lab's sink, read back with a real MIME parser.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use easgate::config::Config;
use easgate::graph::GraphClient;
use easgate::model::SyncKind;
use easgate::notify::{NoticeId, RetryPolicy};
use easgate::plugin::{AccessPolicyPlugin, PluginEngine, PluginRegistry, Source};
use easgate::store::{NoticeStatus, Store};
use easgate::sync::{NoticeStage, OrgSync, TemplateSource};
use easgate_lab::{Lab, NewDevices, ReceivedMail};
use mail_parser::MessageParser;

use crate::support::lab::{
    REMEDIATION_URL, add_notify, exempt_group, notify_section, org_sync_over, sync_lab, unguarded,
    write_config_over,
};
use crate::support::{
    Transport, builtin, easgate_within, lab_organization, plugin_registry, succeeded, test_http,
    wasm_bytes, within,
};

const LIMIT: Duration = Duration::from_secs(120);
/// The notice stage of the lab's organization as the connector builds it from its
/// configuration, rendering with `template`; retries are due at once, so that the next run
/// picks them up.
fn stage(lab: &Lab, template: TemplateSource) -> NoticeStage {
    let text = format!(
        "{}{}",
        lab.connector_config(&easgate_lab::SecretSource::Inline),
        notify_section(lab.smtp_addr().port(), "5s")
    );
    let config = Config::from_toml(&text, Path::new("lab.toml")).expect("the config loads");
    let mut stage = NoticeStage::from_config(
        &lab_organization(lab),
        config.notify.as_ref().expect("[notify]"),
        template,
    )
    .expect("the notice stage");
    stage.retry = RetryPolicy {
        base: Duration::ZERO,
        cap: Duration::ZERO,
        max_attempts: 10,
    };
    stage
}

/// A connector that sends notices: its store in `dir/data`, a plugin registry watching
/// `dir/plugins` for the notice template, the sync of the lab's organization rendering with the
/// registry's current template, and the built-in access policy.
pub(crate) struct Notifying {
    pub store: Arc<Store>,
    pub registry: Arc<PluginRegistry>,
    pub sync: OrgSync,
    pub policy: Arc<AccessPolicyPlugin>,
}

pub(crate) fn notifying_over(lab: &Lab, dir: &Path, transport: Transport) -> Notifying {
    let store = Arc::new(Store::open(&dir.join("data")).unwrap());
    let registry = plugin_registry(&dir.join("plugins"));
    let template: TemplateSource = {
        let registry = registry.clone();
        Arc::new(move || registry.notice_template())
    };
    let mut sync = org_sync_over(lab, store.clone(), unguarded(), transport);
    sync.notices = Some(stage(lab, template));
    Notifying {
        store,
        registry,
        sync,
        policy: builtin(&PluginEngine::new().unwrap(), "{}"),
    }
}

fn message_ids(mails: &[ReceivedMail]) -> Vec<String> {
    mails
        .iter()
        .map(|m| {
            let parsed = MessageParser::default().parse(m.raw.as_bytes()).unwrap();
            parsed.message_id().expect("a Message-ID").to_owned()
        })
        .collect()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

over_transports!(quarantining_50_devices_mails_each_user_exactly_once);
async fn quarantining_50_devices_mails_each_user_exactly_once(transport: Transport) {
    let lab = sync_lab(20).await;
    let dir = tempfile::tempdir().unwrap();
    let Notifying { sync, policy, .. } = notifying_over(&lab, dir.path(), transport);

    // The first verdicts are changes too: those notices go out first and are set aside.
    let first = within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    assert_eq!(
        first.notices.sent, first.notices.queued,
        "{:?}",
        first.notices
    );
    assert_eq!(lab.control().mails().len() as u64, first.notices.sent);
    lab.control().clear_mails();

    // 50 devices that are not enrolled connect: the policy quarantines them, asking to notify.
    let added = lab
        .control()
        .add_devices(&NewDevices {
            count: 50,
            mailbox: None,
            enroll: None,
        })
        .unwrap();
    let run = within(LIMIT, sync.run(SyncKind::Quick, false, policy.clone()))
        .await
        .unwrap();
    assert!(run.verdicts.quarantine >= 50, "{:?}", run.verdicts);
    assert_eq!(
        (run.notices.queued, run.notices.sent, run.notices.pending),
        (50, 50, 0),
        "{:?}",
        run.notices
    );
    let mails = lab.control().mails();
    assert_eq!(mails.len(), 50);

    // Each mail is the notice of one added device, by its Message-ID.
    let truth: HashMap<String, easgate_lab::DeviceTruth> = lab
        .control()
        .truth()
        .into_iter()
        .filter(|d| added.contains(&d.device_id))
        .map(|d| {
            let id = NoticeId::derive(
                &sync.name,
                &d.identity.to_lowercase(),
                "quarantine",
                &run.run.to_string(),
            );
            (id.message_id("contoso.com"), d)
        })
        .collect();
    assert_eq!(truth.len(), 50);
    let mut seen = HashSet::new();
    for mail in &mails {
        let parsed = MessageParser::default().parse(mail.raw.as_bytes()).unwrap();
        let message_id = format!("<{}>", parsed.message_id().unwrap());
        let device = truth
            .get(&message_id)
            .unwrap_or_else(|| panic!("{message_id} is no added device's notice"));
        assert!(seen.insert(message_id.clone()), "{message_id} twice");
        let mailbox = device.mailbox.as_deref().expect("a mailbox");
        assert_eq!(mail.to, [mailbox.to_owned()]);
        assert_eq!(
            parsed.to().unwrap().first().unwrap().address(),
            Some(mailbox)
        );
        assert_eq!(
            parsed.from().unwrap().first().unwrap().address(),
            Some("noreply@contoso.com")
        );
        // In the user's language (the lab's users speak English, German, French or Spanish).
        let subject = parsed.subject().unwrap();
        assert!(
            [
                "quarantined",
                "unter Quarantäne gestellt",
                "mis en quarantaine",
                "puesto en cuarentena"
            ]
            .iter()
            .any(|word| subject.ends_with(word)),
            "{subject}"
        );
        let (text, html) = (parsed.body_text(0).unwrap(), parsed.body_html(0).unwrap());
        assert!(text.contains(&device.device_model), "{text}");
        assert!(text.contains(REMEDIATION_URL), "{text}");
        assert!(html.contains(&html_escape(&device.device_model)), "{html}");
        assert!(html.contains(&html_escape(REMEDIATION_URL)), "{html}");
        assert!(!html.contains("src=mail&org"), "unescaped link: {html}");
    }

    // Nothing changed since: the next run sends nothing.
    let again = within(LIMIT, sync.run(SyncKind::Quick, false, policy))
        .await
        .unwrap();
    assert_eq!((again.notices.queued, again.notices.sent), (0, 0));
    assert_eq!(lab.control().mails().len(), 50);
}

over_transports!(with_the_mail_server_down_notices_wait_and_go_once_it_is_back);
async fn with_the_mail_server_down_notices_wait_and_go_once_it_is_back(transport: Transport) {
    let lab = sync_lab(30).await;
    let dir = tempfile::tempdir().unwrap();
    let Notifying {
        store,
        sync,
        policy,
        ..
    } = notifying_over(&lab, dir.path(), transport);

    lab.control().stop_smtp().await;
    let down = within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    // The sync itself is unaffected.
    assert_eq!(
        down.outcome,
        easgate::store::RunOutcome::Succeeded,
        "{:?}",
        down.errors
    );
    let queued = down.notices.queued;
    assert!(queued > 0, "{:?}", down.notices);
    // The first refused connection stops the run's sending: the others are not even tried.
    let n = &down.notices;
    assert_eq!((n.sent, n.retrying, n.pending), (0, 1, queued), "{n:?}");
    assert!(lab.control().mails().is_empty());
    let org = store.organization(&sync.name, 0).unwrap();
    let waiting = store.notices(org, 1000).unwrap();
    assert!(waiting.iter().all(|n| n.status == NoticeStatus::Pending));
    let tried: Vec<_> = waiting.iter().filter(|n| n.attempts == 1).collect();
    assert_eq!(tried.len(), 1);
    let error = tried[0].last_error.as_deref().unwrap();
    assert!(error.contains("cannot reach"), "{error}");

    lab.control().start_smtp().await.unwrap();
    let back = within(LIMIT, sync.run(SyncKind::Quick, false, policy.clone()))
        .await
        .unwrap();
    assert_eq!((back.notices.queued, back.notices.sent), (0, queued));
    let mails = lab.control().mails();
    assert_eq!(mails.len() as u64, queued);
    let ids: HashSet<String> = message_ids(&mails).into_iter().collect();
    assert_eq!(ids.len() as u64, queued, "every notice once");

    let after = within(LIMIT, sync.run(SyncKind::Quick, false, policy))
        .await
        .unwrap();
    assert_eq!(after.notices.sent, 0);
    assert_eq!(lab.control().mails().len() as u64, queued);
    assert_eq!(store.notice_counts(org).unwrap().sent, queued);
}

/// A mail server that accepts connections and never says a word: a send hangs until killed.
async fn silent_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted)
}

over_transports!(a_connector_killed_between_recording_and_sending_delivers_each_notice_once);
async fn a_connector_killed_between_recording_and_sending_delivers_each_notice_once(
    transport: Transport,
) {
    let lab = sync_lab(30).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 8, transport);
    let base = std::fs::read_to_string(&config).unwrap();
    let (silent, accepted) = silent_server().await;
    std::fs::write(&config, format!("{base}{}", notify_section(silent, "120s"))).unwrap();

    // The first sync records its verdicts and notices, then hangs on the silent server...
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_easgate"))
        .args(["sync", "--full", "--config", config.to_str().unwrap()])
        .env("EASGATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    within(LIMIT, async {
        while accepted.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // ...where it is killed.
    child.kill().unwrap();
    child.wait().unwrap();

    let store = Store::open(&dir.path().join("data")).unwrap();
    let org = store.organization(&lab_organization(&lab).name, 0).unwrap();
    let recorded = store.notices(org, 1000).unwrap();
    assert!(!recorded.is_empty());
    assert!(recorded.iter().all(|n| n.status == NoticeStatus::Pending));
    drop(store);
    assert!(lab.control().mails().is_empty());

    // Restarted with a working server: every recorded notice arrives, once.
    std::fs::write(
        &config,
        format!("{base}{}", notify_section(lab.smtp_addr().port(), "5s")),
    )
    .unwrap();
    let path = config.to_str().unwrap();
    succeeded(&easgate_within(LIMIT, &["sync", "--config", path, "--json"]).await);
    let mails = lab.control().mails();
    let expected: HashSet<String> = recorded
        .iter()
        .map(|n| format!("notice.{}@contoso.com", n.id))
        .collect();
    let got = message_ids(&mails);
    assert_eq!(got.len(), recorded.len(), "{got:?}");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), expected);

    let store = Store::open(&dir.path().join("data")).unwrap();
    let counts = store.notice_counts(org).unwrap();
    assert_eq!(
        (counts.sent, counts.pending),
        (recorded.len() as u64, 0),
        "{counts:?}"
    );
}

over_transports!(a_swapped_template_renders_the_next_notices);
async fn a_swapped_template_renders_the_next_notices(transport: Transport) {
    let lab = sync_lab(10).await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let Notifying {
        registry,
        sync,
        policy,
        ..
    } = notifying_over(&lab, dir.path(), transport);
    within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    let before = lab.control().mails();
    assert!(!before.is_empty());
    for mail in &before {
        let parsed = MessageParser::default().parse(mail.raw.as_bytes()).unwrap();
        assert!(!parsed.subject().unwrap().starts_with("Swapped"));
    }
    lab.control().clear_mails();

    // An operator drops a new template version into the plugin directory.
    std::fs::write(
        plugins.join("notice-template.wasm"),
        wasm_bytes("notice_template.wasm"),
    )
    .unwrap();
    std::fs::write(
        plugins.join("notice-template.toml"),
        "world = \"notice-template\"\n[settings]\nsubject = \"Swapped: {{device_model}} is {{verdict}}\"\n",
    )
    .unwrap();
    registry.rescan();
    assert!(
        !matches!(registry.notice_template().meta.source, Source::Builtin),
        "the directory's template is active"
    );

    lab.control()
        .add_devices(&NewDevices {
            count: 5,
            mailbox: None,
            enroll: None,
        })
        .unwrap();
    let run = within(LIMIT, sync.run(SyncKind::Quick, false, policy))
        .await
        .unwrap();
    assert_eq!(run.notices.sent, 5, "{:?}", run.notices);
    assert_eq!(
        run.notices.template_digest,
        registry.notice_template().meta.digest.hex()
    );
    let mails = lab.control().mails();
    assert_eq!(mails.len(), 5);
    for mail in &mails {
        let parsed = MessageParser::default().parse(mail.raw.as_bytes()).unwrap();
        let subject = parsed.subject().unwrap();
        assert!(subject.starts_with("Swapped: "), "{subject}");
        assert!(subject.ends_with(" is quarantined"), "{subject}");
    }
}

over_transports!(a_template_that_fails_marks_its_notices_failed_and_the_sync_goes_on);
async fn a_template_that_fails_marks_its_notices_failed_and_the_sync_goes_on(transport: Transport) {
    let lab = sync_lab(30).await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // Passes the load-time self-check (an en-US sample) but renders, in any language but
    // English, a subject longer than the host accepts.
    std::fs::write(
        plugins.join("notice-template.wasm"),
        wasm_bytes("notice_template.wasm"),
    )
    .unwrap();
    std::fs::write(
        plugins.join("notice-template.toml"),
        format!(
            "world = \"notice-template\"\n[settings]\nsubject = \"{}\"\n\
             [settings.locales.en]\nsubject = \"{{{{device_model}}}} is {{{{verdict}}}}\"\n",
            "Notice ".repeat(140)
        ),
    )
    .unwrap();
    let Notifying {
        store,
        registry,
        sync,
        policy,
    } = notifying_over(&lab, dir.path(), transport);
    assert!(!matches!(
        registry.notice_template().meta.source,
        Source::Builtin
    ));
    // Every user reads German, which the settings leave to the long subject.
    for upn in lab
        .control()
        .truth()
        .iter()
        .filter(|d| d.mailbox.is_some())
        .filter_map(|d| d.user_principal_name.as_deref())
    {
        lab.control()
            .set_preferred_language(upn, Some("de-DE"))
            .unwrap();
    }
    let run = within(LIMIT, sync.run(SyncKind::Full, false, policy))
        .await
        .unwrap();
    assert_eq!(
        run.outcome,
        easgate::store::RunOutcome::Succeeded,
        "{:?}",
        run.errors
    );
    let n = &run.notices;
    assert!(n.failed > 0, "{n:?}");
    assert_eq!((n.queued, n.sent), (n.failed, 0), "{n:?}");
    assert!(lab.control().mails().is_empty());
    // Each failed render counts as a plugin error of its kind (the metric's source).
    assert_eq!(
        run.plugin_errors,
        vec![easgate::plugin::PluginErrorKind::BadOutput; n.failed as usize]
    );

    let org = store.organization(&sync.name, 0).unwrap();
    let failed: Vec<_> = store
        .notices(org, 1000)
        .unwrap()
        .into_iter()
        .filter(|n| n.status == NoticeStatus::Failed)
        .collect();
    assert_eq!(failed.len() as u64, n.failed);
    for notice in &failed {
        let error = notice.last_error.as_deref().unwrap();
        assert!(error.contains("subject"), "{error}");
        assert_eq!(notice.attempts, 0);
    }
    // A failed notice is not retried by the next run.
    let again = within(
        LIMIT,
        sync.run(
            SyncKind::Quick,
            false,
            builtin(&PluginEngine::new().unwrap(), "{}"),
        ),
    )
    .await
    .unwrap();
    assert_eq!((again.notices.failed, again.notices.sent), (0, 0));
}

over_transports!(notice_preview_renders_a_stored_device_without_sending);
async fn notice_preview_renders_a_stored_device_without_sending(transport: Transport) {
    let lab = sync_lab(10).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 4, transport);
    add_notify(&config, lab.smtp_addr().port(), "5s");
    let path = config.to_str().unwrap();
    let out = easgate_within(LIMIT, &["sync", "--full", "--config", path]).await;
    assert!(succeeded(&out).contains("notices: queued"));
    let sent = lab.control().mails().len();

    let device = lab
        .control()
        .truth()
        .into_iter()
        .find(|d| d.managed_device_id.is_none() && d.mailbox.is_some())
        .expect("an unenrolled device with a mailbox");
    let out = easgate_within(
        LIMIT,
        &[
            "notice",
            "preview",
            "--device",
            &device.device_id,
            "--config",
            path,
        ],
    )
    .await;
    let text = succeeded(&out);
    assert!(
        text.contains(&format!("To: {}", device.mailbox.as_deref().unwrap())),
        "{text}"
    );
    assert!(text.contains("Subject: "), "{text}");
    assert!(text.contains("quarantined"), "{text}");
    assert!(text.contains(&device.device_model), "{text}");
    assert!(
        text.contains(REMEDIATION_URL) && text.contains(&html_escape(REMEDIATION_URL)),
        "{text}"
    );
    assert_eq!(lab.control().mails().len(), sent, "a preview sends nothing");

    let out = easgate_within(
        LIMIT,
        &[
            "notice",
            "preview",
            "--device",
            "NO-SUCH-DEVICE",
            "--config",
            path,
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(crate::support::stderr(&out).contains("no stored device"));
}

over_transports!(max_per_run_spreads_a_mass_change_over_syncs);
async fn max_per_run_spreads_a_mass_change_over_syncs(transport: Transport) {
    let lab = sync_lab(30).await;
    let dir = tempfile::tempdir().unwrap();
    let Notifying {
        mut sync, policy, ..
    } = notifying_over(&lab, dir.path(), transport);
    sync.notices.as_mut().unwrap().max_per_run = 5;
    let first = within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    let queued = first.notices.queued;
    assert!(queued > 10, "{:?}", first.notices);
    assert_eq!((first.notices.sent, first.notices.pending), (5, queued - 5));
    assert_eq!(lab.control().mails().len(), 5);
    let mut sent = 5;
    while sent < queued {
        let run = within(LIMIT, sync.run(SyncKind::Quick, false, policy.clone()))
            .await
            .unwrap();
        assert_eq!(run.notices.sent, 5.min(queued - sent), "{:?}", run.notices);
        sent += run.notices.sent;
        assert_eq!(lab.control().mails().len() as u64, sent);
    }
    let ids: HashSet<String> = message_ids(&lab.control().mails()).into_iter().collect();
    assert_eq!(ids.len() as u64, queued);
}

over_transports!(a_german_speaking_user_gets_the_german_notice);
/// The user's Graph `preferredLanguage`, read with the scope group's members, reaches the
/// template as `notice.locale`: `de-DE` gets the built-in German notice; `it-IT`, which the
/// built-in template does not speak, the English one, although that user's mailbox says French:
/// the directory's language comes first.
async fn a_german_speaking_user_gets_the_german_notice(transport: Transport) {
    let lab = sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let Notifying {
        mut sync, policy, ..
    } = notifying_over(&lab, dir.path(), transport);
    let graph = GraphClient::new(&lab_organization(&lab), &test_http()).unwrap();
    let truth = lab.control().truth();
    let users = truth
        .iter()
        .filter_map(|d| d.user_principal_name.as_deref());
    let (group, members) = exempt_group(&graph, users.take(400)).await;
    // Listed only, so that its members' languages are read; the built-in policy's empty
    // settings exclude nobody.
    sync.settings.scope_groups = vec![group];
    let mut members: Vec<String> = members.into_iter().collect();
    members.sort();
    assert!(members.len() >= 2, "{members:?}");
    let (german, italian) = (&members[0], &members[1]);
    lab.control()
        .set_preferred_language(german, Some("de-DE"))
        .unwrap();
    lab.control()
        .set_preferred_language(italian, Some("it-IT"))
        .unwrap();
    lab.control()
        .set_mailbox_languages(italian, &["fr-FR"])
        .unwrap();

    within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    lab.control().clear_mails();

    // A new, unenrolled device on each mailbox: quarantined, with a notice.
    let mut mailbox_of = HashMap::new();
    for upn in [german, italian] {
        let added = lab
            .control()
            .add_devices(&NewDevices {
                count: 1,
                mailbox: Some(upn.clone()),
                enroll: None,
            })
            .unwrap();
        let device = lab
            .control()
            .truth()
            .into_iter()
            .find(|d| d.device_id == added[0])
            .unwrap();
        mailbox_of.insert(upn.clone(), device.mailbox.expect("a mailbox"));
    }
    let run = within(LIMIT, sync.run(SyncKind::Quick, false, policy))
        .await
        .unwrap();
    assert_eq!((run.notices.queued, run.notices.sent), (2, 2), "{run:?}");
    let mails = lab.control().mails();
    let parsed_for = |upn: &String| {
        let mail = mails
            .iter()
            .find(|m| m.to == [mailbox_of[upn].clone()])
            .unwrap_or_else(|| panic!("no notice to {upn}"));
        let parsed = MessageParser::default().parse(mail.raw.as_bytes()).unwrap();
        (
            parsed.subject().unwrap().to_owned(),
            parsed.body_text(0).unwrap().into_owned(),
            parsed.body_html(0).unwrap().into_owned(),
        )
    };

    let (subject, text, html) = parsed_for(german);
    assert!(
        subject.starts_with("Handlungsbedarf:") && subject.ends_with("unter Quarantäne gestellt"),
        "{subject}"
    );
    assert!(text.starts_with("Hallo "), "{text}");
    assert!(
        text.contains("weil es nicht in der Geräteverwaltung registriert ist."),
        "{text}"
    );
    assert!(html.contains("<html lang=\"de\">"), "{html}");

    let (subject, text, _) = parsed_for(italian);
    assert!(subject.starts_with("Action required:"), "{subject}");
    assert!(text.starts_with("Hello "), "{text}");

    // The outbox kept each notice's language.
    let org = sync.store.organization(&sync.name, 0).unwrap();
    let stored = sync.store.notices(org, 10).unwrap();
    let mut locales: Vec<&str> = stored
        .iter()
        .filter(|n| n.run == Some(run.run))
        .map(|n| n.locale.as_str())
        .collect();
    locales.sort();
    assert_eq!(locales, ["de-DE", "it-IT"]);
}

over_transports!(without_a_graph_language_the_mailbox_language_decides);
/// An organization without scope groups lists nobody's `preferredLanguage`, so the users about
/// to be notified are looked up in Graph, one request per user, not per user of the org; where
/// Graph has no language, the mailbox's Exchange `Languages` (read with `Get-Mailbox`) decide.
/// No Graph language and a French mailbox: the French notice; neither: the English one; a
/// Graph language (`es-MX`) wins over the mailbox's (`de-DE`).
async fn without_a_graph_language_the_mailbox_language_decides(transport: Transport) {
    let lab = sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let Notifying { sync, policy, .. } = notifying_over(&lab, dir.path(), transport);
    assert!(sync.settings.scope_groups.is_empty());
    let lookups = || {
        lab.control()
            .counters()
            .graph
            .by_endpoint
            .get("users")
            .copied()
    };

    let first = within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    let mailboxes = lab
        .control()
        .truth()
        .iter()
        .filter_map(|d| d.mailbox.clone())
        .collect::<HashSet<_>>()
        .len() as u64;
    let looked_up = lookups().unwrap_or(0);
    // One lookup per notified user at most, however many users the organization has.
    assert!(
        looked_up > 0 && looked_up <= first.notices.queued && looked_up <= mailboxes,
        "{looked_up} lookups, {} notices, {mailboxes} mailboxes",
        first.notices.queued
    );
    lab.control().clear_mails();

    let mut users: Vec<String> = lab
        .control()
        .truth()
        .iter()
        .filter(|d| d.mailbox.is_some())
        .filter_map(|d| d.user_principal_name.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    users.sort();
    let (french, neither, spanish) = (&users[0], &users[1], &users[2]);
    let control = lab.control();
    control.set_preferred_language(french, None).unwrap();
    control
        .set_mailbox_languages(french, &["fr-FR", "en-US"])
        .unwrap();
    control.set_preferred_language(neither, None).unwrap();
    control.set_mailbox_languages(neither, &[]).unwrap();
    control
        .set_preferred_language(spanish, Some("es-MX"))
        .unwrap();
    control.set_mailbox_languages(spanish, &["de-DE"]).unwrap();

    // A new, unenrolled device on each mailbox: quarantined, with a notice.
    let mut mailbox_of = HashMap::new();
    for upn in [french, neither, spanish] {
        let added = control
            .add_devices(&NewDevices {
                count: 1,
                mailbox: Some(upn.clone()),
                enroll: None,
            })
            .unwrap();
        let device = control
            .truth()
            .into_iter()
            .find(|d| d.device_id == added[0])
            .unwrap();
        mailbox_of.insert(upn.clone(), device.mailbox.expect("a mailbox"));
    }
    let before = lookups().unwrap_or(0);
    let run = within(LIMIT, sync.run(SyncKind::Quick, false, policy))
        .await
        .unwrap();
    assert_eq!((run.notices.queued, run.notices.sent), (3, 3), "{run:?}");
    assert_eq!(
        lookups().unwrap_or(0) - before,
        3,
        "one lookup per notified user"
    );

    let mails = control.mails();
    let parsed_for = |upn: &String| {
        let mail = mails
            .iter()
            .find(|m| m.to == [mailbox_of[upn].clone()])
            .unwrap_or_else(|| panic!("no notice to {upn}"));
        let parsed = MessageParser::default().parse(mail.raw.as_bytes()).unwrap();
        (
            parsed.subject().unwrap().to_owned(),
            parsed.body_text(0).unwrap().into_owned(),
            parsed.body_html(0).unwrap().into_owned(),
        )
    };
    let (subject, text, html) = parsed_for(french);
    assert!(
        subject.starts_with("Action requise :") && subject.ends_with("a été mis en quarantaine"),
        "{subject}"
    );
    assert!(text.starts_with("Bonjour "), "{text}");
    assert!(
        text.contains("car l'appareil n'est pas inscrit dans la gestion des appareils."),
        "{text}"
    );
    assert!(html.contains("<html lang=\"fr\">"), "{html}");

    let (subject, text, _) = parsed_for(neither);
    assert!(subject.starts_with("Action required:"), "{subject}");
    assert!(text.starts_with("Hello "), "{text}");

    let (subject, text, _) = parsed_for(spanish);
    assert!(
        subject.starts_with("Acción necesaria:") && subject.ends_with("se ha puesto en cuarentena"),
        "{subject}"
    );
    assert!(text.starts_with("Hola, "), "{text}");

    let org = sync.store.organization(&sync.name, 0).unwrap();
    let mut locales: Vec<String> = sync
        .store
        .notices(org, 1_000)
        .unwrap()
        .into_iter()
        .filter(|n| n.run == Some(run.run))
        .map(|n| n.locale)
        .collect();
    locales.sort();
    assert_eq!(locales, ["", "es-MX", "fr-FR"]);
}
