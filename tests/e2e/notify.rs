//! Notices rendered by the built-in template plugin and delivered over real SMTP to the lab's
//! sink on loopback; what arrived is read back with a real MIME parser.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use easgate::config::{Config, Smtp, SmtpSecurity};
use easgate::notify::{
    NoticeChannel, NoticeId, NoticeSettings, OutgoingNotice, Retry, RetryPolicy, SendError,
    SmtpChannel,
};
use easgate::plugin::loaded::sample_notice;
use easgate::plugin::{NoticeTemplatePlugin, types};
use mail_parser::MessageParser;

use crate::support::{builtin_template, client_lab, plugin_registry, within};

const LIMIT: Duration = Duration::from_secs(60);
const GENERAL_URL: &str = "https://portal.contoso.example/enroll";
const IOS_URL: &str = "https://apps.example/company-portal-ios";
const ADMIN: &str = "MDM Team <mdm-admins@contoso.com>";

/// The connector's configuration for `lab`, with a `[notify]` section sending plain SMTP to
/// the lab's sink on loopback (short timeout, so that failures show quickly): the notice
/// settings of its organization and the SMTP settings, as the connector would load them.
fn setup(lab: &easgate_lab::Lab) -> (NoticeSettings, Smtp) {
    let text = format!(
        "{}\n[notify]\n\
         smtp = {{ host = \"127.0.0.1\", port = {}, security = \"none\", timeout = \"5s\" }}\n\
         from = \"Contoso IT <noreply@contoso.com>\"\n\
         admin_recipients = [\"{ADMIN}\"]\n\
         remediation_url = \"{GENERAL_URL}\"\n\
         remediation_urls = {{ ios = \"{IOS_URL}\" }}\n",
        lab.connector_config(&easgate_lab::SecretSource::Inline),
        lab.smtp_addr().port(),
    );
    let config = Config::from_toml(&text, Path::new("lab.toml")).expect("the config loads");
    let notify = config.notify.expect("[notify]");
    let org = &config.organizations[0];
    let settings = NoticeSettings::new("Contoso", &notify.for_organization(org)).unwrap();
    (settings, notify.smtp)
}

fn smtp_to(lab: &easgate_lab::Lab) -> Smtp {
    setup(lab).1
}

/// Device `i`: its own mailbox; even ones are iPhones, odd ones Android phones; device 7's
/// model is markup.
fn device(i: usize) -> types::DeviceContext {
    let mut d = sample_notice().device;
    d.eas.device_id = format!("DEV{i:03}EASID");
    d.eas.mailbox = format!("user{i:02}@contoso.com");
    d.eas.identity = format!("{}\\ExchangeActiveSyncDevices\\x§{i}", d.eas.mailbox);
    if i % 2 == 1 {
        d.eas.device_type = "Android".into();
        d.eas.device_os = "Android 14".into();
        d.eas.device_model = format!("Pixel {i}");
    } else {
        d.eas.device_model = format!("iPhone15,{i}");
    }
    if i == 7 {
        d.eas.device_model = "Evil <b>&</b> Phone".into();
    }
    if let Some(user) = &mut d.user {
        user.primary_smtp = d.eas.mailbox.clone();
        user.user_principal_name = d.eas.mailbox.clone();
    }
    d
}

fn notice_id(i: usize) -> NoticeId {
    NoticeId::derive("Contoso", &device(i).eas.device_id, "quarantine", "sync-42")
}

/// Renders device `i`'s notice with `template` and addresses it, as the notify stage will.
fn outgoing_with(
    settings: &NoticeSettings,
    template: &NoticeTemplatePlugin,
    i: usize,
) -> OutgoingNotice {
    let device = device(i);
    let notice = settings.notice(&device, &sample_notice().decision, "en-US");
    let rendered = template
        .render(&notice)
        .expect("the built-in template renders");
    settings
        .outgoing(notice_id(i), &device, rendered, SystemTime::now())
        .unwrap()
}

fn outgoing(template: &NoticeTemplatePlugin, i: usize) -> OutgoingNotice {
    // The settings do not depend on the lab's ports.
    static SETTINGS: std::sync::OnceLock<NoticeSettings> = std::sync::OnceLock::new();
    let settings = SETTINGS.get_or_init(|| {
        let config = easgate::config::OrgNotify {
            from: "Contoso IT <noreply@contoso.com>".into(),
            admin_recipients: vec![ADMIN.into()],
            remediation_url: GENERAL_URL.into(),
            remediation_urls: BTreeMap::from([("ios".to_owned(), IOS_URL.to_owned())]),
        };
        NoticeSettings::new("Contoso", &config).unwrap()
    });
    outgoing_with(settings, template, i)
}

#[tokio::test]
async fn fifty_notices_arrive_once_each_at_the_right_addresses() {
    let lab = client_lab(10, 1).await;
    let template = builtin_template("{}");
    let (settings, smtp) = setup(&lab);
    let channel: Box<dyn NoticeChannel> =
        Box::new(SmtpChannel::new(&smtp, settings.from.email.domain()).unwrap());
    let notices: Vec<OutgoingNotice> = (0..50)
        .map(|i| outgoing_with(&settings, &template, i))
        .collect();
    for notice in &notices {
        let delivered = within(LIMIT, channel.send(notice)).await.unwrap();
        assert_eq!(delivered.message_id, notice_id_header(notice));
        assert!(delivered.response.starts_with("250"), "{delivered:?}");
    }
    let mails = within(LIMIT, lab.control().wait_for_mails(50)).await;
    assert_eq!(
        mails.len(),
        50,
        "every send was answered, so nothing more is coming"
    );

    let mut seen = HashSet::new();
    for mail in &mails {
        let m = MessageParser::default()
            .parse(mail.raw.as_bytes())
            .expect("a parsable mail");
        let to = m
            .to()
            .unwrap()
            .first()
            .unwrap()
            .address()
            .unwrap()
            .to_owned();
        let i: usize = to
            .strip_prefix("user")
            .and_then(|r| r.strip_suffix("@contoso.com"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected recipient {to}"));
        assert!(seen.insert(i), "user{i:02} got two notices");
        let notice = &notices[i];
        let d = device(i);

        // Envelope and headers: the user, the admin in copy.
        assert_eq!(mail.from, "noreply@contoso.com");
        assert_eq!(mail.to, [to.clone(), "mdm-admins@contoso.com".to_owned()]);
        assert_eq!(
            m.cc().unwrap().first().unwrap().address(),
            Some("mdm-admins@contoso.com")
        );
        assert_eq!(m.subject(), Some(notice.rendered.subject.as_str()));
        assert_eq!(
            m.message_id(),
            Some(format!("notice.{}@contoso.com", notice_id(i)).as_str()),
            "the Message-ID is the notice id's"
        );

        // Both parts, each with the device and the platform's remediation link.
        assert_eq!((m.text_body.len(), m.html_body.len()), (1, 1));
        let text = m.body_text(0).unwrap();
        let html = m.body_html(0).unwrap();
        assert_ne!(text, html);
        let url = if i.is_multiple_of(2) {
            IOS_URL
        } else {
            GENERAL_URL
        };
        assert!(
            text.contains(url) && html.contains(url),
            "user{i:02}: {url}"
        );
        if i == 7 {
            assert!(text.contains("Evil <b>&</b> Phone"), "{text}");
            assert!(
                html.contains("Evil &lt;b&gt;&amp;&lt;/b&gt; Phone"),
                "{html}"
            );
            assert!(!html.contains("<b>&"), "{html}");
        } else {
            assert!(text.contains(&d.eas.device_model), "{text}");
            assert!(html.contains(&d.eas.device_model), "{html}");
        }
    }
    assert_eq!(seen.len(), 50);
    lab.shutdown().await;
}

fn notice_id_header(notice: &OutgoingNotice) -> String {
    notice.id.message_id("contoso.com")
}

#[tokio::test]
async fn a_server_that_is_down_fails_transiently_and_the_retry_arrives_once() {
    let lab = client_lab(10, 1).await;
    let channel = SmtpChannel::new(&smtp_to(&lab), "contoso.com").unwrap();
    let notice = outgoing(&builtin_template("{}"), 3);
    // A first delivery fills the connection pool, so the outage also breaks a pooled connection.
    within(LIMIT, channel.send(&outgoing(&builtin_template("{}"), 4)))
        .await
        .unwrap();
    lab.control().stop_smtp().await;

    let err = within(LIMIT, channel.send(&notice)).await.unwrap_err();
    assert!(
        matches!(err, SendError::Unreachable { .. }),
        "{err:?}: down is unreachable"
    );
    assert!(!err.is_permanent());
    assert!(
        err.to_string().contains("127.0.0.1:"),
        "names the server: {err}"
    );
    assert!(matches!(
        RetryPolicy::default().after_failure(1, &err),
        Retry::After(_)
    ));

    lab.control().start_smtp().await.unwrap();
    let delivered = within(LIMIT, channel.send(&notice)).await.unwrap();
    let mails = within(LIMIT, lab.control().wait_for_mails(2)).await;
    assert_eq!(mails.len(), 2);
    let retried = MessageParser::default()
        .parse(mails[1].raw.as_bytes())
        .unwrap();
    assert_eq!(mails[1].to[0], "user03@contoso.com");
    assert_eq!(
        retried.message_id().map(|id| format!("<{id}>")),
        Some(delivered.message_id)
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn a_refused_recipient_is_permanent_and_a_deferred_one_is_not() {
    let lab = client_lab(10, 1).await;
    lab.control().set_smtp_rules(easgate_lab::SmtpRules {
        reject: vec!["user01@contoso.com".into()],
        defer: vec!["user02@contoso.com".into()],
        ..Default::default()
    });
    let template = builtin_template("{}");
    let channel = SmtpChannel::new(&smtp_to(&lab), "contoso.com").unwrap();

    let rejected = within(LIMIT, channel.send(&outgoing(&template, 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(rejected, SendError::Rejected { code: 550, .. }),
        "{rejected:?}"
    );
    assert!(rejected.is_permanent());
    assert!(
        rejected
            .to_string()
            .contains("550 5.1.1 Recipient address rejected"),
        "{rejected}"
    );
    assert_eq!(
        RetryPolicy::default().after_failure(1, &rejected),
        Retry::GiveUp
    );

    let deferred = within(LIMIT, channel.send(&outgoing(&template, 2)))
        .await
        .unwrap_err();
    assert!(
        matches!(deferred, SendError::Deferred { code: 450, .. }),
        "{deferred:?}"
    );
    assert!(!deferred.is_permanent());

    // The connection is still good for the next notice; nothing half-sent arrived.
    within(LIMIT, channel.send(&outgoing(&template, 5)))
        .await
        .unwrap();

    // A relay that refuses the sender (5.7.1) refuses every notice: the configuration's
    // fault, so the notices wait for the fix instead of being given up.
    lab.control().set_smtp_rules(easgate_lab::SmtpRules {
        refuse_senders: vec!["noreply@contoso.com".into()],
        ..Default::default()
    });
    let refused = within(LIMIT, channel.send(&outgoing(&template, 6)))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SendError::Policy { code: 550, .. }),
        "{refused:?}"
    );
    assert!(!refused.is_permanent());
    let mails = within(LIMIT, lab.control().wait_for_mails(1)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to[0], "user05@contoso.com");
    lab.shutdown().await;
}

#[tokio::test]
async fn starttls_that_is_not_offered_sends_nothing_in_clear() {
    let lab = client_lab(10, 1).await;
    let smtp = Smtp {
        security: SmtpSecurity::Starttls,
        ..smtp_to(&lab)
    };
    let channel = SmtpChannel::new(&smtp, "contoso.com").unwrap();
    let err = within(LIMIT, channel.send(&outgoing(&builtin_template("{}"), 1)))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Tls { .. }), "{err:?}");
    assert!(
        !err.is_permanent(),
        "a server's TLS gets fixed; keep the notice"
    );
    assert!(lab.control().mails().is_empty());
    lab.shutdown().await;
}

#[tokio::test]
async fn auth_with_the_right_password_delivers_and_the_password_shows_nowhere() {
    let lab = client_lab(10, 1).await;
    let password = "smtp-pw-7f3a9c";
    let with_password = |password: &str| Smtp {
        username: Some("easgate-user".into()),
        password: Some(easgate::config::SecretSource::Inline(
            easgate::config::Secret::new(password),
        )),
        ..smtp_to(&lab)
    };
    let template = builtin_template("{}");

    // A server that offers no AUTH: the notice must not go out unauthenticated.
    let channel = SmtpChannel::new(&with_password(password), "contoso.com").unwrap();
    let err = within(LIMIT, channel.send(&outgoing(&template, 1)))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Auth { .. }), "{err:?}");

    lab.control().set_smtp_rules(easgate_lab::SmtpRules {
        auth: Some(easgate_lab::SmtpAuth {
            username: "easgate-user".into(),
            password: password.into(),
        }),
        ..Default::default()
    });
    // Wrong credentials (535): the channel's problem, so the notice waits for a fix.
    let wrong = SmtpChannel::new(&with_password("not-the-password"), "contoso.com").unwrap();
    let err = within(LIMIT, wrong.send(&outgoing(&template, 2)))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Auth { .. }), "{err:?}");
    assert!(!err.is_permanent());
    for text in [err.to_string(), format!("{err:?}"), format!("{wrong:?}")] {
        assert!(!text.contains("not-the-password"), "{text}");
    }

    let channel = SmtpChannel::new(&with_password(password), "contoso.com").unwrap();
    within(LIMIT, channel.send(&outgoing(&template, 3)))
        .await
        .unwrap();
    assert!(!format!("{channel:?}").contains(password));
    let mails = within(LIMIT, lab.control().wait_for_mails(1)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to[0], "user03@contoso.com");
    assert!(!mails[0].raw.contains(password));
    lab.shutdown().await;
}

#[tokio::test]
async fn implicit_tls_to_a_plain_server_fails_without_sending() {
    let lab = client_lab(10, 1).await;
    let smtp = Smtp {
        security: SmtpSecurity::Tls,
        ..smtp_to(&lab)
    };
    let channel = SmtpChannel::new(&smtp, "contoso.com").unwrap();
    assert!(channel.describe().starts_with("smtps://127.0.0.1:"));
    let err = within(LIMIT, channel.send(&outgoing(&builtin_template("{}"), 1)))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Tls { .. }), "{err:?}");
    assert!(!err.is_permanent());
    assert!(lab.control().mails().is_empty());
    lab.shutdown().await;
}

/// A server that accepts the connection and never says a word: the configured timeout ends
/// the attempt, as a transient failure.
#[tokio::test]
async fn a_silent_server_times_out_transiently() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let smtp = Smtp {
        host: "127.0.0.1".into(),
        port: Some(port),
        security: SmtpSecurity::None,
        username: None,
        password: None,
        timeout: Duration::from_millis(500),
        helo_name: None,
        allow_insecure: false,
    };
    let channel = SmtpChannel::new(&smtp, "contoso.com").unwrap();
    let started = std::time::Instant::now();
    let err = within(
        Duration::from_secs(20),
        channel.send(&outgoing(&builtin_template("{}"), 1)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SendError::Unreachable { .. }), "{err:?}");
    assert!(!err.is_permanent());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    hold.abort();
}

/// The notice template is taken from the registry for each notice: after a swap, the next
/// notice is rendered by the new version.
#[tokio::test]
async fn after_a_template_swap_the_next_notice_uses_the_new_one() {
    let lab = client_lab(10, 1).await;
    let (settings, smtp) = setup(&lab);
    let channel = SmtpChannel::new(&smtp, "contoso.com").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = plugin_registry(dir.path());

    let first = outgoing_with(&settings, &registry.notice_template(), 1);
    within(LIMIT, channel.send(&first)).await.unwrap();

    // An operator drops in their own version of the template, with its own subject.
    let bytes = crate::support::with_custom_section(
        &crate::support::wasm_bytes("notice_template.wasm"),
        "contoso-notice",
    );
    std::fs::write(dir.path().join("notice-template.wasm"), &bytes).unwrap();
    std::fs::write(
        dir.path().join("notice-template.toml"),
        "world = \"notice-template\"\n[settings]\nsubject = \"Contoso: {{device_model}} needs enrolling\"\n",
    )
    .unwrap();
    registry.reload("notice-template");
    assert_eq!(
        registry.notice_template().meta.digest,
        easgate::plugin::Digest::of(&bytes),
        "{:#?}",
        registry.status()
    );

    let second = outgoing_with(&settings, &registry.notice_template(), 2);
    within(LIMIT, channel.send(&second)).await.unwrap();
    let mails = within(LIMIT, lab.control().wait_for_mails(2)).await;
    let subjects: Vec<String> = mails
        .iter()
        .map(|m| {
            MessageParser::default()
                .parse(m.raw.as_bytes())
                .unwrap()
                .subject()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(subjects[0], first.rendered.subject);
    assert!(!subjects[0].starts_with("Contoso: "), "{}", subjects[0]);
    assert_eq!(subjects[1], "Contoso: iPhone15,2 needs enrolling");
    lab.shutdown().await;
}
