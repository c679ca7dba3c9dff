//! `[organization.exchange]`: where Exchange is, which transport reaches it (REST or remote
//! PowerShell), how the connector signs in, and how it spreads load over the CAS.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::duration;
use super::url::{check_service_url, is_loopback_url, shown};
use super::{SecretSource, defaults};

/// Where and how to reach Exchange: its REST admin API (Exchange Online) or its remote
/// PowerShell endpoint (on-premises).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConnection {
    /// How cmdlets reach Exchange; `rest` by default.
    #[serde(default)]
    pub transport: ExchangeTransport,
    /// The Client Access Servers, tried in order on failure; the first is the primary. For
    /// `rest`, base URLs (`https://host[:port]`); for `powershell`, the endpoint itself
    /// (`https://cas01.contoso.com/PowerShell/`).
    pub cas_urls: Vec<String>,
    /// The `{tenantId}` path segment of `/adminapi/beta/{tenantId}/InvokeCommand`: the tenant
    /// GUID or its initial domain. Required for `rest`; an on-premises organization has none,
    /// so `powershell` refuses it rather than silently ignoring a misplaced key.
    #[serde(default)]
    pub tenant_id: String,
    /// How the connector signs in.
    #[serde(default)]
    pub auth: ExchangeAuth,
    /// `powershell` only: run `Set-ADServerSettings -ViewEntireForest $true` when a runspace
    /// pool opens, so that mailboxes in every domain of a multi-domain forest are seen (true
    /// when not written). An `Option` so that writing it for `rest` can be refused.
    #[serde(default)]
    pub view_entire_forest: Option<bool>,
    /// When a CAS fails, discover and use the others (`Get-ClientAccessService`), returning to
    /// the primary once it answers again. Off: a dead primary fails the command.
    #[serde(default = "defaults::cas_failover")]
    pub cas_failover: bool,
    /// Exchange commands in flight at once (the upper bound: throttling lowers it for a while).
    #[serde(default = "defaults::parallel_commands")]
    pub parallel_commands: usize,
    /// A command fails when no CAS has answered for this long.
    #[serde(
        default = "defaults::unavailable_timeout",
        deserialize_with = "duration"
    )]
    pub unavailable_timeout: Duration,
    /// Wait before re-checking a failed CAS; doubles after each failed check (up to 5 minutes).
    #[serde(default = "defaults::probe_interval", deserialize_with = "duration")]
    pub probe_interval: Duration,
}

/// How cmdlets reach Exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeTransport {
    /// The admin API's `InvokeCommand` (Exchange Online, or a gateway speaking it).
    #[default]
    Rest,
    /// Remote PowerShell: WS-Management and MS-PSRP at the CAS's `/PowerShell/` virtual
    /// directory (configuration `Microsoft.Exchange`), as on-premises Exchange offers.
    #[serde(rename = "powershell")]
    PowerShell,
}

impl ExchangeConnection {
    /// Whether a PowerShell runspace pool runs `Set-ADServerSettings -ViewEntireForest $true`.
    pub fn view_entire_forest(&self) -> bool {
        self.view_entire_forest.unwrap_or(true)
    }
}

/// How the connector authenticates to Exchange.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExchangeAuth {
    /// `rest`: a client-credentials token from the organization's Graph app registration
    /// (`[organization.graph]` tenant, client id and secret), for `scope`. The default.
    ClientCredentials {
        #[serde(default = "defaults::exchange_scope")]
        scope: String,
    },
    /// `rest`: a fixed bearer token, e.g. from a gateway in front of an on-premises Exchange.
    Bearer { token: SecretSource },
    /// `powershell`: HTTP Basic with a service account (`svc-easgate@contoso.com`). Only over
    /// HTTPS or to loopback: the password travels in every request.
    Basic {
        username: String,
        password: SecretSource,
    },
    /// `powershell`: Kerberos with the service account's password or its keytab; every envelope
    /// sealed (WS-Management message encryption), so plain `http://` CAS URLs are fine.
    Kerberos {
        username: String,
        /// The account's password; this or `keytab` (checked at load): the ticket is acquired
        /// with it.
        #[serde(default)]
        password: Option<SecretSource>,
        /// A keytab file holding the account's key (relative to the configuration's directory),
        /// instead of `password`: Linux hosts keep service keys this way, with no password on
        /// disk. Read at each sign-in, so a keytab exported again is used without a restart.
        #[serde(default)]
        keytab: Option<PathBuf>,
        /// The realm, when it is not the user name's domain upper-cased.
        #[serde(default)]
        realm: Option<String>,
        /// An explicit KDC (`host[:port]`) instead of the system's Kerberos configuration or
        /// the realm's domain name.
        #[serde(default)]
        kdc: Option<String>,
        /// The CAS's service principal when it is not `HTTP/<the CAS URL's host>`.
        #[serde(default)]
        spn: Option<String>,
    },
    /// `powershell`: NTLM with the service account's password (`CONTOSO\\svc-easgate` or
    /// `svc-easgate@contoso.com`); every envelope sealed, as under Kerberos.
    Ntlm {
        username: String,
        password: SecretSource,
    },
}

impl ExchangeAuth {
    /// Whether every envelope is sealed with the sign-in's context (WS-Management message
    /// encryption): Kerberos and NTLM, so plain `http://` to a CAS reads nothing to an
    /// eavesdropper, as with WinRM itself.
    pub fn seals(&self) -> bool {
        matches!(
            self,
            ExchangeAuth::Kerberos { .. } | ExchangeAuth::Ntlm { .. }
        )
    }

    /// The `kind` as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            ExchangeAuth::ClientCredentials { .. } => "client_credentials",
            ExchangeAuth::Bearer { .. } => "bearer",
            ExchangeAuth::Basic { .. } => "basic",
            ExchangeAuth::Kerberos { .. } => "kerberos",
            ExchangeAuth::Ntlm { .. } => "ntlm",
        }
    }

    /// The secret this sign-in reads, and its key under `exchange.auth`.
    pub(super) fn secret_mut(&mut self) -> Option<(&'static str, &mut SecretSource)> {
        match self {
            ExchangeAuth::ClientCredentials { .. } => None,
            ExchangeAuth::Bearer { token } => Some(("token", token)),
            ExchangeAuth::Basic { password, .. } | ExchangeAuth::Ntlm { password, .. } => {
                Some(("password", password))
            }
            ExchangeAuth::Kerberos { password, .. } => password.as_mut().map(|p| ("password", p)),
        }
    }

    /// Under Kerberos with a keytab: the keytab, and the account and realm whose key it must hold.
    pub fn keytab(&self) -> Option<(&std::path::Path, String, String)> {
        match self {
            ExchangeAuth::Kerberos {
                username,
                keytab: Some(path),
                realm,
                ..
            } => {
                let (account, realm) = kerberos_principal(username, realm.as_deref());
                Some((path, account, realm))
            }
            _ => None,
        }
    }

    pub(super) fn secret(&self) -> Option<(&'static str, &SecretSource)> {
        match self {
            ExchangeAuth::ClientCredentials { .. } => None,
            ExchangeAuth::Bearer { token } => Some(("token", token)),
            ExchangeAuth::Basic { password, .. } | ExchangeAuth::Ntlm { password, .. } => {
                Some(("password", password))
            }
            ExchangeAuth::Kerberos { password, .. } => password.as_ref().map(|p| ("password", p)),
        }
    }
}

/// A Kerberos sign-in's account without its realm (`svc-easgate`) and its realm: `realm` if
/// given, else the user name's domain, upper-cased (`CONTOSO.COM`).
pub fn kerberos_principal(username: &str, realm: Option<&str>) -> (String, String) {
    let (account, domain) = match username.rsplit_once('@') {
        Some((a, d)) => (a.to_owned(), Some(d)),
        None => (username.to_owned(), None),
    };
    let realm = realm
        .or(domain)
        .map(str::to_owned)
        .unwrap_or_default()
        .to_ascii_uppercase();
    (account, realm)
}

impl Default for ExchangeAuth {
    fn default() -> Self {
        ExchangeAuth::ClientCredentials {
            scope: defaults::exchange_scope(),
        }
    }
}

impl ExchangeConnection {
    /// Checks this organization's Exchange settings; `at` names its fields, `insecure` is
    /// `network.allow_insecure_http`.
    pub(super) fn validate(
        &self,
        at: impl Fn(&str) -> String,
        insecure: bool,
    ) -> Result<(), (String, String)> {
        if self.cas_urls.is_empty() {
            return Err((at("exchange.cas_urls"), "list at least one CAS URL".into()));
        }
        validate_transport(self).map_err(|(f, m)| (at(&f), m))?;
        // Kerberos seals every envelope (WS-Management message encryption): plain HTTP to a
        // CAS is what WinRM itself does, and reads nothing to an eavesdropper.
        let sealed = self.auth.seals();
        for (j, url) in self.cas_urls.iter().enumerate() {
            check_service_url(url, insecure || sealed)
                .map_err(|m| (at(&format!("exchange.cas_urls[{j}]")), m))?;
        }
        if !(1..=defaults::MAX_PARALLEL_COMMANDS).contains(&self.parallel_commands) {
            return Err((
                at("exchange.parallel_commands"),
                format!(
                    "must be between 1 and {} (Exchange refuses more than 18 per tenant)",
                    defaults::MAX_PARALLEL_COMMANDS
                ),
            ));
        }
        for (field, d) in [
            ("exchange.unavailable_timeout", self.unavailable_timeout),
            ("exchange.probe_interval", self.probe_interval),
        ] {
            if d.is_zero() {
                return Err((at(field), "must be longer than 0".into()));
            }
        }
        if self.transport == ExchangeTransport::Rest && self.tenant_id.trim().is_empty() {
            return Err((
                at("exchange.tenant_id"),
                "must not be empty: the REST transport names the tenant in every request \
                 (for on-premises Exchange, set transport = \"powershell\")"
                    .into(),
            ));
        }
        if let ExchangeAuth::ClientCredentials { scope } = &self.auth
            && !scope.ends_with("/.default")
        {
            return Err((
                at("exchange.auth.scope"),
                format!("`{scope}` is not a client-credentials scope (it must end in /.default)"),
            ));
        }
        Ok(())
    }
}

/// The keys of `[organization.exchange]` that belong to one transport only, the sign-in each
/// transport takes, and the PowerShell endpoint's shape. Returns the field under `exchange` and
/// why.
fn validate_transport(x: &ExchangeConnection) -> Result<(), (String, String)> {
    match x.transport {
        ExchangeTransport::Rest => validate_rest_keys(x),
        ExchangeTransport::PowerShell => {
            if !x.tenant_id.is_empty() {
                return Err((
                    "exchange.tenant_id".into(),
                    "applies to transport = \"rest\" only (remote PowerShell has no tenant in \
                     its URL); remove it"
                        .into(),
                ));
            }
            validate_powershell_auth(x)?;
            validate_powershell_paths(x)
        }
    }
}

/// REST takes an app's sign-in and no AD server settings: a PowerShell-only key is a mistake.
fn validate_rest_keys(x: &ExchangeConnection) -> Result<(), (String, String)> {
    let auth = x.auth.kind();
    if matches!(
        x.auth,
        ExchangeAuth::Basic { .. } | ExchangeAuth::Kerberos { .. } | ExchangeAuth::Ntlm { .. }
    ) {
        return Err((
            "exchange.auth".into(),
            format!(
                "kind = \"{auth}\" signs in to remote PowerShell: set \
                 transport = \"powershell\" (the REST transport takes \
                 \"client_credentials\" or \"bearer\")"
            ),
        ));
    }
    if x.view_entire_forest.is_some() {
        return Err((
            "exchange.view_entire_forest".into(),
            "applies to transport = \"powershell\" only (the REST admin API has no \
             AD server settings); remove it or set the transport"
                .into(),
        ));
    }
    Ok(())
}

/// The sign-ins remote PowerShell takes, each with the keys it needs.
fn validate_powershell_auth(x: &ExchangeConnection) -> Result<(), (String, String)> {
    let auth = x.auth.kind();
    match &x.auth {
        ExchangeAuth::ClientCredentials { .. } | ExchangeAuth::Bearer { .. } => Err((
            "exchange.auth".into(),
            format!(
                "kind = \"{auth}\" is for the REST admin API; remote PowerShell \
                 signs in with auth = {{ kind = \"basic\", username = \"…\", \
                 password = {{ env = \"…\" }} }}"
            ),
        )),
        ExchangeAuth::Ntlm { username, .. } => validate_ntlm(username),
        ExchangeAuth::Kerberos {
            username,
            password,
            keytab,
            realm,
            kdc,
            spn,
        } => validate_kerberos(
            username,
            (password.is_some(), keytab.is_some()),
            realm.as_deref(),
            kdc.as_deref(),
            spn.as_deref(),
        ),
        ExchangeAuth::Basic { username, .. } => validate_basic(x, username),
    }
}

/// An NTLM account is `DOMAIN\user` or `user@domain` (the domain is in the NTLMv2 hash, so it
/// must be the account's).
fn validate_ntlm(username: &str) -> Result<(), (String, String)> {
    let ok = match (username.split_once('\\'), username.split_once('@')) {
        (Some((d, u)), None) => !d.is_empty() && !u.is_empty() && !u.contains('\\'),
        (None, Some((u, d))) => !u.is_empty() && !d.is_empty() && !d.contains('@'),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err((
        "exchange.auth.username".into(),
        format!(
            "`{username}` names no domain: write username = \"CONTOSO\\\\svc-easgate\" or \
             \"svc-easgate@contoso.com\" (NTLM hashes the domain with the password)"
        ),
    ))
}

/// Kerberos needs a password or a keytab (one of them) to get a ticket and a realm to get it
/// from; the KDC and SPN, when given, must have their shapes.
fn validate_kerberos(
    username: &str,
    (has_password, has_keytab): (bool, bool),
    realm: Option<&str>,
    kdc: Option<&str>,
    spn: Option<&str>,
) -> Result<(), (String, String)> {
    if username.trim().is_empty() {
        return Err((
            "exchange.auth.username".into(),
            "must not be empty (e.g. \"svc-easgate@contoso.com\")".into(),
        ));
    }
    match (has_password, has_keytab) {
        (true, false) | (false, true) => {}
        (false, false) => {
            return Err((
                "exchange.auth".into(),
                "kind = \"kerberos\" needs the account's password or its keytab to acquire \
                 the ticket with: password = { env = \"…\" } or { file = \"…\" }, or \
                 keytab = \"/etc/easgate/svc-easgate.keytab\""
                    .into(),
            ));
        }
        (true, true) => {
            return Err((
                "exchange.auth.keytab".into(),
                "is given with a password too: the ticket is acquired with one of them; keep \
                 the keytab and remove the password, or the reverse"
                    .into(),
            ));
        }
    }
    if realm.is_some_and(|r| r.trim().is_empty()) || (realm.is_none() && !username.contains('@')) {
        return Err((
            "exchange.auth.realm".into(),
            format!(
                "the Kerberos realm is not known: write realm = \"CONTOSO.COM\", \
                 or the user name as `{username}@contoso.com`"
            ),
        ));
    }
    if let Some(k) = kdc
        && (k.trim().is_empty() || k.contains("://") || k.contains('/'))
    {
        return Err((
            "exchange.auth.kdc".into(),
            format!("`{k}` is not host[:port] (e.g. \"dc01.contoso.com:88\")"),
        ));
    }
    if let Some(s) = spn
        && !s.contains('/')
    {
        return Err((
            "exchange.auth.spn".into(),
            format!("`{s}` is not a service principal (e.g. \"HTTP/cas01.contoso.com\")"),
        ));
    }
    Ok(())
}

/// Basic sends the password with every request, so only over TLS or to loopback.
fn validate_basic(x: &ExchangeConnection, username: &str) -> Result<(), (String, String)> {
    if username.trim().is_empty() {
        return Err((
            "exchange.auth.username".into(),
            "must not be empty (e.g. \"svc-easgate@contoso.com\")".into(),
        ));
    }
    for (j, url) in x.cas_urls.iter().enumerate() {
        if url.starts_with("http://") && !is_loopback_url(url) {
            return Err((
                format!("exchange.cas_urls[{j}]"),
                format!(
                    "`{}` is plain HTTP to a host other than loopback: Basic \
                     authentication would send the password of `{username}` in \
                     clear to that CAS; use https:// (require SSL on its \
                     PowerShell virtual directory) — allow_insecure_http does \
                     not cover passwords",
                    shown(url)
                ),
            ));
        }
    }
    Ok(())
}

/// Each CAS URL must name Exchange's PowerShell virtual directory, not a bare host or WinRM's.
fn validate_powershell_paths(x: &ExchangeConnection) -> Result<(), (String, String)> {
    for (j, url) in x.cas_urls.iter().enumerate() {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        let path = path.split(['?', '#']).next().unwrap_or("");
        let problem = if path.trim_matches('/').is_empty() {
            Some("has no path")
        } else if path.to_ascii_lowercase().contains("wsman") {
            Some("is the WinRM endpoint (/wsman), not Exchange's")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err((
                format!("exchange.cas_urls[{j}]"),
                format!(
                    "`{}` {problem}: write the Exchange PowerShell virtual directory, \
                     e.g. \"https://cas01.contoso.com/PowerShell/\"",
                    shown(url)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{FULL, parse, place};
    use std::path::Path;

    /// An on-premises organization over remote PowerShell, as a template: `{transport}`,
    /// `{urls}`, `{auth}` and `{extra}` are filled in by each case.
    const POWERSHELL: &str = r#"
[[organization]]
name = "contoso"

[organization.exchange]
{transport}
cas_urls = {urls}
auth = {auth}
{extra}

[organization.graph]
tenant = "contoso.onmicrosoft.com"
client_id = "3b1a6f2e-0000-4000-8000-000000000001"
client_secret = "inline-secret-value"
"#;

    const BASIC: &str =
        r#"{ kind = "basic", username = "svc-easgate@contoso.com", password = { env = "PW" } }"#;

    fn powershell(transport: &str, urls: &str, auth: &str, extra: &str) -> String {
        POWERSHELL
            .replace("{transport}", transport)
            .replace("{urls}", urls)
            .replace("{auth}", auth)
            .replace("{extra}", extra)
    }

    #[test]
    fn powershell_transport_parses_with_basic_and_forest_default() {
        let text = powershell(
            r#"transport = "powershell""#,
            r#"["https://cas01.contoso.com/PowerShell/", "http://127.0.0.1:8080/PowerShell/"]"#,
            BASIC,
            "",
        );
        let c = parse(&text).unwrap();
        let x = &c.organizations[0].exchange;
        assert_eq!(x.transport, ExchangeTransport::PowerShell);
        assert_eq!(
            x.auth,
            ExchangeAuth::Basic {
                username: "svc-easgate@contoso.com".into(),
                password: SecretSource::Env("PW".into()),
            }
        );
        assert!(x.view_entire_forest());
        assert_eq!(x.tenant_id, "");
        let off = parse(&text.replace(
            "\n\n[organization.graph]",
            "view_entire_forest = false\n\n[organization.graph]",
        ))
        .unwrap();
        assert!(!off.organizations[0].exchange.view_entire_forest());
        // A relative password file is beside the configuration.
        let file = parse(&text.replace(r#"{ env = "PW" }"#, r#"{ file = "ex.pw" }"#)).unwrap();
        assert!(matches!(
            &file.organizations[0].exchange.auth,
            ExchangeAuth::Basic { password: SecretSource::File(p), .. }
                if p == Path::new("/etc/easgate/ex.pw")
        ));
        // Without a transport it is REST, as before.
        assert_eq!(
            parse(FULL).unwrap().organizations[0].exchange.transport,
            ExchangeTransport::Rest
        );
    }

    #[test]
    fn ntlm_parses_with_either_form_of_account_and_allows_plain_http() {
        for (toml, name) in [
            (r#""CONTOSO\\svc-easgate""#, r"CONTOSO\svc-easgate"),
            (r#""svc-easgate@contoso.com""#, "svc-easgate@contoso.com"),
        ] {
            let text = powershell(
                r#"transport = "powershell""#,
                r#"["http://cas01.contoso.com/PowerShell/"]"#,
                &format!(
                    r#"{{ kind = "ntlm", username = {toml}, password = {{ file = "/etc/easgate/pw" }} }}"#
                ),
                "",
            );
            let c = parse(&text).unwrap();
            assert_eq!(
                c.organizations[0].exchange.auth,
                ExchangeAuth::Ntlm {
                    username: name.into(),
                    password: SecretSource::File("/etc/easgate/pw".into()),
                }
            );
        }
    }

    #[test]
    fn kerberos_parses_and_allows_plain_http_since_every_envelope_is_sealed() {
        let text = powershell(
            r#"transport = "powershell""#,
            r#"["http://cas01.contoso.com/PowerShell/"]"#,
            r#"{ kind = "kerberos", username = "svc-easgate@contoso.com", password = { env = "PW" }, kdc = "dc01.contoso.com:88", spn = "HTTP/exchange.contoso.com" }"#,
            "",
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.organizations[0].exchange.auth,
            ExchangeAuth::Kerberos {
                username: "svc-easgate@contoso.com".into(),
                password: Some(SecretSource::Env("PW".into())),
                keytab: None,
                realm: None,
                kdc: Some("dc01.contoso.com:88".into()),
                spn: Some("HTTP/exchange.contoso.com".into()),
            }
        );
    }

    #[test]
    fn kerberos_takes_a_keytab_instead_of_a_password_beside_the_configuration() {
        for (written, resolved) in [
            ("svc-easgate.keytab", "/etc/easgate/svc-easgate.keytab"),
            ("/var/lib/easgate/svc.keytab", "/var/lib/easgate/svc.keytab"),
        ] {
            let text = powershell(
                r#"transport = "powershell""#,
                r#"["http://cas01.contoso.com/PowerShell/"]"#,
                &format!(
                    r#"{{ kind = "kerberos", username = "svc-easgate@contoso.com", keytab = "{written}" }}"#
                ),
                "",
            );
            let c = parse(&text).unwrap();
            let auth = &c.organizations[0].exchange.auth;
            assert_eq!(
                *auth,
                ExchangeAuth::Kerberos {
                    username: "svc-easgate@contoso.com".into(),
                    password: None,
                    keytab: Some(resolved.into()),
                    realm: None,
                    kdc: None,
                    spn: None,
                }
            );
            let (path, account, realm) = auth.keytab().unwrap();
            assert_eq!(
                (path, account.as_str(), realm.as_str()),
                (Path::new(resolved), "svc-easgate", "CONTOSO.COM")
            );
        }
    }

    #[test]
    fn powershell_settings_refuse_what_does_not_fit_naming_line_and_key() {
        let ps = r#"transport = "powershell""#;
        let url = r#"["https://cas01.contoso.com/PowerShell/"]"#;
        // (case, text, field, the line the error points at, words the message must hold)
        let cases: Vec<(&str, String, &str, &str, Vec<&str>)> = vec![
            (
                "kerberos without a password or a keytab",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "kerberos", username = "svc@contoso.com", kdc = "dc01:88" }"#,
                    "",
                ),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["kind = \"kerberos\"", "password = {", "keytab = \""],
            ),
            (
                "kerberos with both a password and a keytab",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "kerberos", username = "svc@contoso.com", password = { env = "PW" }, keytab = "svc.keytab" }"#,
                    "",
                ),
                "organization[0].exchange.auth.keytab",
                "auth = ",
                vec!["with a password too", "remove the password"],
            ),
            (
                "a keytab with basic",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "basic", username = "svc@contoso.com", password = "p", keytab = "svc.keytab" }"#,
                    "",
                ),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["keytab"],
            ),
            (
                "a keytab with ntlm",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "ntlm", username = "CONTOSO\\svc", keytab = "svc.keytab" }"#,
                    "",
                ),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["keytab"],
            ),
            (
                "kerberos without a realm",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "kerberos", username = "svc", password = { env = "PW" } }"#,
                    "",
                ),
                "organization[0].exchange.auth.realm",
                "auth = ",
                vec!["realm = \"CONTOSO.COM\"", "svc@contoso.com"],
            ),
            (
                "kerberos with a URL for a KDC",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "kerberos", username = "svc@contoso.com", password = { env = "PW" }, kdc = "tcp://dc01" }"#,
                    "",
                ),
                "organization[0].exchange.auth.kdc",
                "auth = ",
                vec!["tcp://dc01", "host[:port]"],
            ),
            (
                "ntlm without a domain",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "ntlm", username = "svc", password = "x" }"#,
                    "",
                ),
                "organization[0].exchange.auth.username",
                "auth = ",
                vec!["`svc` names no domain", r"CONTOSO\\svc-easgate"],
            ),
            (
                "basic over plain http to a remote CAS",
                powershell(ps, r#"["http://cas01.contoso.com/PowerShell/"]"#, BASIC, ""),
                "organization[0].exchange.cas_urls[0]",
                "cas_urls = ",
                vec![
                    "http://cas01.contoso.com/PowerShell/",
                    "in clear",
                    "use https://",
                ],
            ),
            (
                "allow_insecure_http does not cover basic",
                format!(
                    "[network]\nallow_insecure_http = true\n{}",
                    powershell(
                        ps,
                        r#"["https://cas01/PowerShell/", "http://cas02.contoso.com/PowerShell/"]"#,
                        BASIC,
                        "",
                    )
                ),
                "organization[0].exchange.cas_urls[1]",
                "cas_urls = ",
                vec!["cas02.contoso.com", "allow_insecure_http does not cover"],
            ),
            (
                "a bearer token is for rest",
                powershell(ps, url, r#"{ kind = "bearer", token = "t" }"#, ""),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["bearer", "kind = \"basic\""],
            ),
            (
                "powershell without auth gets the REST default, refused",
                powershell(ps, url, "\"x\"", "").replace("auth = \"x\"\n", ""),
                "organization[0].exchange.auth",
                "[organization.exchange]",
                vec!["client_credentials", "kind = \"basic\""],
            ),
            (
                "tenant_id is for rest",
                powershell(ps, url, BASIC, r#"tenant_id = "contoso.onmicrosoft.com""#),
                "organization[0].exchange.tenant_id",
                "tenant_id = ",
                vec!["transport = \"rest\" only"],
            ),
            (
                "view_entire_forest is for powershell",
                powershell(
                    "tenant_id = \"contoso.onmicrosoft.com\"",
                    r#"["https://outlook.office365.com"]"#,
                    r#"{ kind = "client_credentials" }"#,
                    "view_entire_forest = true",
                ),
                "organization[0].exchange.view_entire_forest",
                "view_entire_forest = ",
                vec!["powershell"],
            ),
            (
                "basic without the powershell transport",
                powershell(
                    "tenant_id = \"contoso.onmicrosoft.com\"",
                    r#"["https://outlook.office365.com"]"#,
                    BASIC,
                    "",
                ),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["transport = \"powershell\""],
            ),
            (
                "rest still needs its tenant",
                powershell(
                    "",
                    r#"["https://outlook.office365.com"]"#,
                    r#"{ kind = "client_credentials" }"#,
                    "",
                ),
                "organization[0].exchange.tenant_id",
                "[organization.exchange]",
                vec!["must not be empty", "powershell"],
            ),
            (
                "the WinRM endpoint",
                powershell(ps, r#"["https://cas01.contoso.com/wsman"]"#, BASIC, ""),
                "organization[0].exchange.cas_urls[0]",
                "cas_urls = ",
                vec!["/wsman", "/PowerShell/"],
            ),
            (
                "a bare host",
                powershell(ps, r#"["https://cas01.contoso.com"]"#, BASIC, ""),
                "organization[0].exchange.cas_urls[0]",
                "cas_urls = ",
                vec!["has no path", "/PowerShell/"],
            ),
            (
                "an unknown transport",
                powershell(r#"transport = "soap""#, url, BASIC, ""),
                "organization[0].exchange.transport",
                "transport = ",
                vec!["soap"],
            ),
            (
                "an unknown key of basic",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "basic", username = "svc", password = "p", realm = "X" }"#,
                    "",
                ),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["realm"],
            ),
            (
                "basic needs a password",
                powershell(ps, url, r#"{ kind = "basic", username = "svc" }"#, ""),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["password"],
            ),
        ];
        for (case, text, field, line_starts, words) in cases {
            let e = parse(&text).expect_err(case);
            let shown = e.to_string();
            assert!(
                shown.starts_with("/etc/easgate/easgate.toml:"),
                "{case}: {shown}"
            );
            let (line, _, got, message) = place(e);
            assert!(
                got.starts_with(field),
                "{case}: field {got}, wanted {field}"
            );
            let at = text.lines().nth(line - 1).unwrap();
            assert!(
                at.starts_with(line_starts),
                "{case}: points at line {line} `{at}`"
            );
            for w in words {
                assert!(message.contains(w), "{case}: `{w}` not in: {message}");
            }
            assert!(!shown.contains("inline-secret-value"), "{case}: {shown}");
        }
    }
}
