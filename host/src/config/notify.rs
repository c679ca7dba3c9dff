//! `[notify]` and `[organization.notify]`: the mail server notices go through, their sender,
//! copies and remediation links.

use std::time::Duration;

use serde::Deserialize;

use super::duration::duration;
use super::url::{check_url, is_loopback_host};
use super::{Organization, SecretSource, defaults};

/// `[notify]`: how notices reach users, and the defaults of every organization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub smtp: Smtp,
    /// The `From` of every notice, `Name <address>` or a bare address. Its domain also names
    /// the Message-IDs (and the EHLO greeting unless `smtp.helo_name` is set).
    pub from: String,
    /// Addresses that get a copy (`Cc`) of every notice, e.g. the MDM team's list.
    #[serde(default)]
    pub admin_recipients: Vec<String>,
    /// Where users go to enroll or fix their device.
    pub remediation_url: String,
    /// Per-platform links (`ios`, `android`, `windows`, `macos`) replacing `remediation_url`
    /// for devices of that platform, e.g. the Company Portal in each app store.
    #[serde(default)]
    pub remediation_urls: std::collections::BTreeMap<String, String>,
    /// No second notice for the same device and the same state within this time.
    #[serde(default = "defaults::resend_interval", deserialize_with = "duration")]
    pub resend_interval: Duration,
    /// At most this many notices are sent per sync run; the rest wait for the next run.
    #[serde(default = "defaults::max_notices_per_run")]
    pub max_per_run: usize,
}

/// `smtp = { … }`: the mail server notices are submitted to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    /// Default: by `security`, 587 (`starttls`), 465 (`tls`) or 25 (`none`).
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// AUTH user; needs `password`, and TLS unless the server is on loopback.
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    /// One notice's delivery attempt — connecting, TLS, the whole conversation — gives up
    /// after this long (a transient failure: the notice is retried).
    #[serde(default = "defaults::smtp_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The name the connector greets with (`EHLO`); default: the domain of `from`.
    pub helo_name: Option<String>,
    /// Allows `security = "none"` to a host other than loopback: mail (and its links) then
    /// travels in clear. Off by default, like `network.allow_insecure_http`.
    #[serde(default)]
    pub allow_insecure: bool,
}

impl Smtp {
    /// The configured port, or the usual one for the security mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => defaults::SMTP_PORT_STARTTLS,
            SmtpSecurity::Tls => defaults::SMTP_PORT_TLS,
            SmtpSecurity::None => defaults::SMTP_PORT_NONE,
        })
    }
}

/// How the SMTP connection is protected. TLS certificates are always verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with `STARTTLS`, which the server must offer (never falls
    /// back to plain). The default.
    #[default]
    Starttls,
    /// TLS from the first byte (implicit TLS, "SMTPS").
    Tls,
    /// No encryption: only to loopback (a local relay), unless `allow_insecure`.
    None,
}

/// The platforms `remediation_urls` may name.
pub const NOTICE_PLATFORMS: [&str; 4] = ["ios", "android", "windows", "macos"];

/// `[organization.notify]`: what differs for one organization; every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyOverrides {
    pub from: Option<String>,
    pub admin_recipients: Option<Vec<String>>,
    pub remediation_url: Option<String>,
    /// Merged over `[notify].remediation_urls` (a platform named here wins).
    #[serde(default)]
    pub remediation_urls: std::collections::BTreeMap<String, String>,
}

/// One organization's notice settings: `[notify]` with its `[organization.notify]` applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgNotify {
    pub from: String,
    pub admin_recipients: Vec<String>,
    pub remediation_url: String,
    pub remediation_urls: std::collections::BTreeMap<String, String>,
}

impl Notify {
    /// The settings of `org`, overrides applied.
    pub fn for_organization(&self, org: &Organization) -> OrgNotify {
        let o = &org.notify;
        let mut remediation_urls = self.remediation_urls.clone();
        remediation_urls.extend(o.remediation_urls.clone());
        OrgNotify {
            from: o.from.clone().unwrap_or_else(|| self.from.clone()),
            admin_recipients: o
                .admin_recipients
                .clone()
                .unwrap_or_else(|| self.admin_recipients.clone()),
            remediation_url: o
                .remediation_url
                .clone()
                .unwrap_or_else(|| self.remediation_url.clone()),
            remediation_urls,
        }
    }
}

/// A mail address as notices use it: `Name <local@domain>` or `local@domain`.
fn check_mailbox(text: &str) -> Result<(), String> {
    text.parse::<lettre::message::Mailbox>()
        .map(drop)
        .map_err(|e| format!("`{text}` is not a mail address ({e})"))
}

impl Smtp {
    /// A host without a port, a port and timeout above zero, no password or mail in clear
    /// beyond loopback unless said so, a one-word EHLO name.
    fn validate(&self) -> Result<(), (String, String)> {
        let smtp = self;
        let host = smtp.host.trim();
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains(['/', ':']) {
            return Err((
                "notify.smtp.host".into(),
                format!(
                    "`{}` is not a host name or IP address (give the port in `port`)",
                    smtp.host
                ),
            ));
        }
        if smtp.port == Some(0) {
            return Err((
                "notify.smtp.port".into(),
                "must be between 1 and 65535".into(),
            ));
        }
        if smtp.timeout.is_zero() {
            return Err(("notify.smtp.timeout".into(), "must be longer than 0".into()));
        }
        let loopback = is_loopback_host(host);
        if smtp.security == SmtpSecurity::None && !loopback && !smtp.allow_insecure {
            return Err((
                "notify.smtp.security".into(),
                format!(
                    "\"none\" sends mail in clear to `{host}`, which is not loopback; use \"starttls\" \
                     or \"tls\", or set notify.smtp.allow_insecure = true"
                ),
            ));
        }
        match (&smtp.username, &smtp.password) {
            (Some(_), None) => {
                return Err(("notify.smtp.username".into(), "needs a `password`".into()));
            }
            (None, Some(_)) => {
                return Err(("notify.smtp.password".into(), "needs a `username`".into()));
            }
            (Some(_), Some(_)) if smtp.security == SmtpSecurity::None && !loopback => {
                return Err((
                    "notify.smtp.password".into(),
                    "would travel in clear: AUTH needs \"starttls\" or \"tls\" unless the server is \
                     on loopback"
                        .into(),
                ));
            }
            _ => {}
        }
        if let Some(name) = &smtp.helo_name
            && (name.trim().is_empty() || name.contains(char::is_whitespace))
        {
            return Err((
                "notify.smtp.helo_name".into(),
                format!("`{name}` is not a host name"),
            ));
        }
        Ok(())
    }
}

/// Checks `[notify]` and every `[organization.notify]`.
fn validate_notify_section(notify: &Notify, orgs: &[Organization]) -> Result<(), (String, String)> {
    notify.smtp.validate()?;
    if notify.max_per_run == 0 {
        return Err((
            "notify.max_per_run".into(),
            "must be at least 1 (remove [notify] to send no notice)".into(),
        ));
    }
    check_notice_addresses(
        "notify",
        &notify.from,
        &notify.admin_recipients,
        &notify.remediation_url,
        &notify.remediation_urls,
    )?;
    for (i, org) in orgs.iter().enumerate() {
        let o = &org.notify;
        let at = format!("organization[{i}].notify");
        if let Some(from) = &o.from {
            check_mailbox(from).map_err(|m| (format!("{at}.from"), m))?;
        }
        for (j, a) in o.admin_recipients.iter().flatten().enumerate() {
            check_mailbox(a).map_err(|m| (format!("{at}.admin_recipients[{j}]"), m))?;
        }
        if let Some(url) = &o.remediation_url {
            check_url(url).map_err(|m| (format!("{at}.remediation_url"), m))?;
        }
        check_platform_urls(&at, &o.remediation_urls)?;
    }
    Ok(())
}

fn check_notice_addresses(
    at: &str,
    from: &str,
    admins: &[String],
    url: &str,
    urls: &std::collections::BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    check_mailbox(from).map_err(|m| (format!("{at}.from"), m))?;
    for (j, a) in admins.iter().enumerate() {
        check_mailbox(a).map_err(|m| (format!("{at}.admin_recipients[{j}]"), m))?;
    }
    check_url(url).map_err(|m| (format!("{at}.remediation_url"), m))?;
    check_platform_urls(at, urls)
}

fn check_platform_urls(
    at: &str,
    urls: &std::collections::BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    for (platform, url) in urls {
        let field = format!("{at}.remediation_urls.{platform}");
        if !NOTICE_PLATFORMS.contains(&platform.as_str()) {
            return Err((
                field,
                format!(
                    "unknown platform `{platform}` (known: {})",
                    NOTICE_PLATFORMS.join(", ")
                ),
            ));
        }
        check_url(url).map_err(|m| (field, m))?;
    }
    Ok(())
}

/// Checks `[notify]` when present; without it, no organization may override it.
pub(super) fn validate(
    notify: Option<&Notify>,
    orgs: &[Organization],
) -> Result<(), (String, String)> {
    match notify {
        Some(notify) => validate_notify_section(notify, orgs),
        None => {
            if let Some(i) = orgs
                .iter()
                .position(|o| o.notify != NotifyOverrides::default())
            {
                return Err((
                    format!("organization[{i}].notify"),
                    "notices are off: add a [notify] section with the mail server".into(),
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{FULL, parse, place};
    use crate::config::{SecretSource, defaults, is_loopback_host};
    use std::time::Duration;

    const NOTIFY: &str = r#"
[notify]
smtp = { host = "smtp.contoso.com", username = "easgate", password = { file = "smtp.secret" } }
from = "IT Helpdesk <noreply@contoso.com>"
admin_recipients = ["mdm-admins@contoso.com"]
remediation_url = "https://portal.manage.microsoft.com/"
remediation_urls = { ios = "https://apps.apple.com/app/id719171358" }
"#;

    #[test]
    fn notify_parses_with_defaults_and_organization_overrides() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.notify, None, "no [notify]: no notices");

        let text = FULL.replace(
            "[[organization]]\nname = \"fabrikam\"",
            "[[organization]]\nname = \"fabrikam\"\nnotify = { from = \"Fabrikam IT <it@fabrikam.com>\", admin_recipients = [], remediation_urls = { android = \"https://fabrikam.com/android\" } }",
        ) + NOTIFY;
        let c = parse(&text).unwrap();
        let n = c.notify.as_ref().unwrap();
        assert_eq!(n.smtp.security, SmtpSecurity::Starttls);
        assert_eq!(n.smtp.port(), 587);
        assert_eq!(n.smtp.timeout, defaults::SMTP_TIMEOUT);
        assert_eq!(n.resend_interval, Duration::from_secs(86_400));
        assert_eq!(n.max_per_run, defaults::MAX_NOTICES_PER_RUN);
        assert_eq!(
            n.smtp.password,
            Some(SecretSource::File("/etc/easgate/smtp.secret".into()))
        );

        let contoso = n.for_organization(&c.organizations[0]);
        assert_eq!(contoso.from, "IT Helpdesk <noreply@contoso.com>");
        assert_eq!(contoso.admin_recipients, ["mdm-admins@contoso.com"]);
        let fabrikam = n.for_organization(&c.organizations[1]);
        assert_eq!(fabrikam.from, "Fabrikam IT <it@fabrikam.com>");
        assert!(
            fabrikam.admin_recipients.is_empty(),
            "an empty list overrides"
        );
        assert_eq!(
            fabrikam.remediation_url,
            "https://portal.manage.microsoft.com/"
        );
        assert_eq!(fabrikam.remediation_urls.len(), 2, "platform links merge");

        let tuned = text.replace(
            "smtp = { host = \"smtp.contoso.com\", username = \"easgate\", password = { file = \"smtp.secret\" } }",
            "smtp = { host = \"smtp.contoso.com\", port = 2465, security = \"tls\", timeout = \"5s\", helo_name = \"easgate.contoso.com\" }\nresend_interval = \"12h\"\nmax_per_run = 10",
        );
        let n = parse(&tuned).unwrap().notify.unwrap();
        assert_eq!((n.smtp.security, n.smtp.port()), (SmtpSecurity::Tls, 2465));
        assert_eq!(n.smtp.timeout, Duration::from_secs(5));
        assert_eq!(n.resend_interval, Duration::from_secs(43_200));
        assert_eq!(n.max_per_run, 10);
        let local = tuned.replace(
            "smtp.contoso.com\", port = 2465, security = \"tls\"",
            "127.0.0.1\", security = \"none\"",
        );
        let n = parse(&local).unwrap().notify.unwrap();
        assert_eq!(n.smtp.port(), 25);
    }

    #[test]
    fn notify_secrets_are_redacted_resolved_and_named() {
        let text = format!("{FULL}{NOTIFY}").replace(
            "password = { file = \"smtp.secret\" }",
            "password = \"smtp-inline-pw\"",
        );
        let c = parse(&text).unwrap();
        assert!(!format!("{c:?}").contains("smtp-inline-pw"));
        let text = format!("{FULL}{NOTIFY}")
            .replace(
                "client_secret = { file = \"fabrikam.secret\" }",
                "client_secret = \"s\"",
            )
            .replace(
                "password = { file = \"smtp.secret\" }",
                "password = { env = \"EASGATE_TEST_SURELY_UNSET_SMTP_PW\" }",
            );
        let e = parse(&text)
            .unwrap()
            .check_secrets()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("notify.smtp.password: environment variable"),
            "{e}"
        );
    }

    #[test]
    fn notify_settings_are_checked() {
        let base = format!("{FULL}{NOTIFY}");
        let smtp_line = "smtp = { host = \"smtp.contoso.com\", username = \"easgate\", password = { file = \"smtp.secret\" } }";
        let with_smtp = |smtp: &str| base.replace(smtp_line, smtp);
        let cases = [
            (
                with_smtp("smtp = { host = \"smtp.contoso.com\", security = \"none\" }"),
                "notify.smtp.security",
                "not loopback",
            ),
            (
                with_smtp("smtp = { host = \"mail.lan\", security = \"none\", allow_insecure = true, username = \"u\", password = \"p\" }"),
                "notify.smtp.password",
                "in clear",
            ),
            (
                with_smtp("smtp = { host = \"smtp.contoso.com\", username = \"u\" }"),
                "notify.smtp.username",
                "needs a `password`",
            ),
            (
                with_smtp("smtp = { host = \"smtp.contoso.com:587\" }"),
                "notify.smtp.host",
                "give the port in `port`",
            ),
            (
                // A bad value inside an inline table is located at the table's key.
                with_smtp("smtp = { host = \"smtp.contoso.com\", security = \"ssl\" }"),
                "notify.smtp",
                "unknown variant",
            ),
            (
                with_smtp("smtp = { host = \"smtp.contoso.com\", pasword = \"x\" }"),
                "notify.smtp.pasword",
                "unknown field",
            ),
            (
                with_smtp("smtp = { host = \"smtp.contoso.com\", timeout = \"0s\" }"),
                "notify.smtp.timeout",
                "longer than 0",
            ),
            (
                base.replace("IT Helpdesk <noreply@contoso.com>", "IT Helpdesk"),
                "notify.from",
                "not a mail address",
            ),
            (
                base.replace("[\"mdm-admins@contoso.com\"]", "[\"mdm-admins@contoso.com\", \"nobody\"]"),
                "notify.admin_recipients[1]",
                "not a mail address",
            ),
            (
                base.replace("{ ios = ", "{ symbian = "),
                "notify.remediation_urls.symbian",
                "unknown platform",
            ),
            (
                base.replace(
                    "remediation_url = \"https://portal.manage.microsoft.com/\"",
                    "remediation_url = \"portal\"",
                ),
                "notify.remediation_url",
                "not an http:// or https:// URL",
            ),
            (
                format!("{base}max_per_run = 0\n"),
                "notify.max_per_run",
                "at least 1",
            ),
            (
                FULL.replace(
                    "[[organization]]\nname = \"fabrikam\"",
                    "[[organization]]\nname = \"fabrikam\"\nnotify = { from = \"it@fabrikam.com\" }",
                ),
                "organization[1].notify",
                "add a [notify] section",
            ),
            (
                base.replace(
                    "[[organization]]\nname = \"fabrikam\"",
                    "[[organization]]\nname = \"fabrikam\"\nnotify = { from = \"fabrikam\" }",
                ),
                "organization[1].notify.from",
                "not a mail address",
            ),
        ];
        for (text, want_field, want_message) in cases {
            let (line, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(field, want_field, "{message}");
            assert!(message.contains(want_message), "{field}: {message}");
            assert!(line > 1, "{field} located at line {line}");
        }
        // A local relay without TLS, with or without AUTH, is fine.
        assert!(parse(&with_smtp("smtp = { host = \"localhost\", security = \"none\", username = \"u\", password = \"p\" }")).is_ok());
        assert!(
            parse(&with_smtp(
                "smtp = { host = \"mail.lan\", security = \"none\", allow_insecure = true }"
            ))
            .is_ok()
        );
        assert!(is_loopback_host("[::1]") && is_loopback_host("127.0.0.2"));
        assert!(!is_loopback_host("localhost.evil.com"));
    }
}
