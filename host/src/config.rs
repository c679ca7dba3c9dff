//! The connector's configuration: one TOML file, read into plain serde structs (separate from
//! the command line), with every default in [`defaults`].
//!
//! This module defines the connection part — which organizations, where their Exchange and
//! Graph endpoints are, and how the connector signs in. Later stages (sync, plugins, notify, the
//! admin API) add their own sections to [`Config`] and [`Organization`]; unknown keys are errors
//! everywhere, so a typo never silently falls back to a default.
//!
//! ```toml
//! [[organization]]
//! name = "contoso"
//!
//! [organization.exchange]
//! cas_urls = ["https://cas01.contoso.com", "https://cas02.contoso.com"]   # first is the primary
//! tenant_id = "contoso.onmicrosoft.com"      # {tenantId} of /adminapi/beta/{tenantId}/InvokeCommand
//! auth = { kind = "client_credentials" }     # token of the Graph app below, Exchange scope
//! # auth = { kind = "bearer", token = { env = "EXCHANGE_TOKEN" } }
//!
//! [organization.graph]
//! # graph_url = "https://graph.microsoft.com"          (default)
//! # login_url = "https://login.microsoftonline.com"    (default)
//! tenant = "8f2c…"                                      # tenant GUID or initial domain
//! client_id = "3b1a…"
//! client_secret = { env = "EASGATE_CONTOSO_SECRET" }    # or { file = "contoso.secret" }
//! ```
//!
//! How the connector talks to them — failover, parallelism, proxy, timeouts — has defaults that
//! suit a small organization; every one is in [`defaults`]:
//!
//! ```toml
//! [network]                                  # applies to every organization
//! proxy = { url = "http://proxy.contoso.com:3128", username = "easgate", password = { env = "PROXY_PW" } }
//! allow_insecure_http = false                # plain http:// only to loopback unless true
//! connect_timeout = "10s"
//! request_timeout = "120s"
//!
//! [organization.exchange]                    # besides the keys above
//! cas_failover = true                        # use the other CAS when one fails
//! parallel_commands = 1                      # commands in flight at once
//! unavailable_timeout = "2m"                 # a command gives up when no CAS answered this long
//! probe_interval = "5s"                      # first re-check of a failed CAS (doubles to 5m)
//!
//! [organization.graph]
//! request_budget = 1500                      # Graph requests per 20 s (Intune allows 2000 per app)
//! ```
//!
//! An on-premises Exchange is reached over remote PowerShell instead (no `tenant_id`; the Graph
//! section stays, for Intune):
//!
//! ```toml
//! [organization.exchange]
//! transport = "powershell"                   # default "rest"
//! cas_urls = ["https://cas01.contoso.com/PowerShell/", "https://cas02.contoso.com/PowerShell/"]
//! auth = { kind = "basic", username = "svc-easgate@contoso.com", password = { env = "EXCHANGE_PW" } }
//! view_entire_forest = true                  # Set-ADServerSettings when a pool opens (default)
//! parallel_commands = 4                      # keep below the account's PowerShellMaxConcurrency
//! ```
//!
//! Basic is refused over plain HTTP except to loopback (the password is in every request);
//! `kind = "kerberos"` and `"ntlm"` are read but refused: this build does not speak them.
//!
//! Notices to users (quarantined or blocked devices) go out through SMTP when `[notify]` is
//! present; without it no notice is sent. `[notify]` holds the mail server and the defaults of
//! every organization; `[organization.notify]` overrides the sender, the admin copies and the
//! remediation links of one organization:
//!
//! ```toml
//! [notify]
//! smtp = { host = "smtp.contoso.com", security = "starttls", username = "easgate", password = { env = "SMTP_PW" } }
//! # smtp keys: port (default 587 for starttls, 465 for tls, 25 for none), timeout = "60s",
//! # helo_name (default: the sender's domain), allow_insecure = false (security "none" only to
//! # loopback unless true)
//! from = "IT Helpdesk <noreply@contoso.com>"
//! admin_recipients = ["mdm-admins@contoso.com"]   # a copy (Cc) of every notice; default none
//! remediation_url = "https://portal.manage.microsoft.com/"
//! remediation_urls = { ios = "https://apps.apple.com/app/id719171358", android = "https://play.google.com/store/apps/details?id=com.microsoft.windowsintune.companyportal" }
//! resend_interval = "24h"                          # no second notice for the same device and state
//! max_per_run = 200                                # notices sent per sync run at most
//!
//! [organization.notify]                            # optional, per organization
//! from = "Fabrikam IT <noreply@fabrikam.com>"
//! admin_recipients = []
//! remediation_url = "https://fabrikam.com/enroll"
//! ```
//!
//! Durations are written `"500ms"`, `"30s"`, `"5m"` or `"1h"`.
//!
//! When syncs run, and the admin API (off without an `[admin]` section):
//!
//! ```toml
//! [[organization]]                           # besides the keys above
//! quick_interval = "10m"                     # scheduled quick syncs (default)
//! full_interval = "24h"                      # scheduled full syncs (default)
//! # full_at = "02:30"                        # or: a daily full sync at this UTC time
//!
//! [admin]
//! listen = "127.0.0.1:8470"                  # default; loopback: the token is sent in clear
//! token = { file = "admin.token" }           # bearer token for the API, page and /metrics
//! # allow_remote = true                      # required for a listen address off loopback
//! ```
//!
//! Secrets ([`SecretSource`]) come from an environment variable (`{ env = "NAME" }`), from a file
//! (`{ file = "path" }`, relative to the configuration file's directory, trailing newline
//! ignored), or inline as a plain string (discouraged: the file then is a secret too). Resolved
//! values are [`Secret`]s, whose `Debug` and `Display` print `[redacted]`.
//!
//! Loading errors name the file, the line and column, and the field
//! (`easgate.toml:12:13: organization[0].graph.client_id: invalid type: integer …`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// Every default of the configuration, in one place.
pub mod defaults {
    /// Microsoft Graph (global cloud).
    pub const GRAPH_URL: &str = "https://graph.microsoft.com";
    /// Microsoft Entra ID token endpoint host (global cloud).
    pub const LOGIN_URL: &str = "https://login.microsoftonline.com";
    /// Client-credentials scope for Graph.
    pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
    /// Client-credentials scope for the Exchange admin API.
    pub const EXCHANGE_SCOPE: &str = "https://outlook.office365.com/.default";

    pub(super) fn graph_url() -> String {
        GRAPH_URL.to_owned()
    }

    pub(super) fn login_url() -> String {
        LOGIN_URL.to_owned()
    }

    pub(super) fn graph_scope() -> String {
        GRAPH_SCOPE.to_owned()
    }

    pub(super) fn exchange_scope() -> String {
        EXCHANGE_SCOPE.to_owned()
    }

    use std::time::Duration;

    /// The seed's `IsCasFailoverEnabled`: on.
    pub const CAS_FAILOVER: bool = true;
    /// The seed's `EnableParallelCommandSupport`: off (one command at a time), which is right for
    /// small organizations; large ones raise it (see docs/operator-guide.md).
    pub const PARALLEL_COMMANDS: usize = 1;
    /// Upper bound of `parallel_commands`: Exchange's own limit is 18 concurrent requests per
    /// tenant, beyond which more only earns 429s.
    pub const MAX_PARALLEL_COMMANDS: usize = 64;
    /// How long a command keeps trying while no CAS answers.
    pub const UNAVAILABLE_TIMEOUT: Duration = Duration::from_secs(120);
    /// First re-check of a failed CAS; doubles up to `MAX_PROBE_INTERVAL`.
    pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
    pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(300);
    /// Graph requests per 20-second window: below Intune's 2000 per app, leaving room for the
    /// tenant's other apps sharing the 4000 per tenant.
    pub const GRAPH_REQUEST_BUDGET: u32 = 1500;
    /// Intune's documented app limit per 20 seconds; the budget may not exceed it.
    pub const GRAPH_APP_LIMIT: u32 = 2000;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// A page of 1000 devices from a busy Exchange can take tens of seconds.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
    /// The store's directory, beside the configuration file.
    pub const DATA_DIR: &str = "data";

    pub(super) fn cas_failover() -> bool {
        CAS_FAILOVER
    }

    pub(super) fn parallel_commands() -> usize {
        PARALLEL_COMMANDS
    }

    pub(super) fn unavailable_timeout() -> Duration {
        UNAVAILABLE_TIMEOUT
    }

    pub(super) fn probe_interval() -> Duration {
        PROBE_INTERVAL
    }

    pub(super) fn graph_request_budget() -> u32 {
        GRAPH_REQUEST_BUDGET
    }

    pub(super) fn connect_timeout() -> Duration {
        CONNECT_TIMEOUT
    }

    /// No second notice for the same device and state within a day.
    pub const RESEND_INTERVAL: Duration = Duration::from_secs(24 * 3600);
    /// Notices per sync run: enough for a normal day's changes; a mass change (a policy
    /// mistake quarantining everybody) is spread over runs instead of flooding every mailbox.
    pub const MAX_NOTICES_PER_RUN: usize = 200;
    /// One notice's delivery (connecting, TLS, the whole conversation) may take this long.
    pub const SMTP_TIMEOUT: Duration = Duration::from_secs(60);
    /// The submission port with STARTTLS (RFC 6409).
    pub const SMTP_PORT_STARTTLS: u16 = 587;
    /// Submission over implicit TLS (RFC 8314).
    pub const SMTP_PORT_TLS: u16 = 465;
    /// Plain SMTP.
    pub const SMTP_PORT_NONE: u16 = 25;

    pub(super) fn resend_interval() -> Duration {
        RESEND_INTERVAL
    }

    pub(super) fn max_notices_per_run() -> usize {
        MAX_NOTICES_PER_RUN
    }

    pub(super) fn smtp_timeout() -> Duration {
        SMTP_TIMEOUT
    }

    pub(super) fn request_timeout() -> Duration {
        REQUEST_TIMEOUT
    }

    /// The admin API's address: loopback, because the bearer token travels in clear over plain
    /// HTTP; put a TLS proxy in front to reach it from elsewhere.
    pub const ADMIN_LISTEN: &str = "127.0.0.1:8470";
    /// Quick syncs pick up new devices and Intune changes; every 10 minutes keeps a new phone's
    /// quarantine short while costing a few calls when nothing changed.
    pub const QUICK_INTERVAL: Duration = Duration::from_secs(600);
    /// A full sync re-reads everything (and the organization settings) once a day.
    pub const FULL_INTERVAL: Duration = Duration::from_secs(86_400);

    pub(super) fn admin_listen() -> std::net::SocketAddr {
        ADMIN_LISTEN.parse().expect("a socket address")
    }

    pub(super) fn quick_interval() -> Duration {
        QUICK_INTERVAL
    }

    pub(super) fn full_interval() -> Duration {
        FULL_INTERVAL
    }
}

/// The whole configuration file.
// Not `Eq`: the sync settings hold a percentage (`f64`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Exchange organizations this connector serves (`[[organization]]`), at least one.
    #[serde(rename = "organization", default)]
    pub organizations: Vec<Organization>,
    /// How the connector reaches the services: proxy, plain-HTTP rule, timeouts.
    #[serde(default)]
    pub network: Network,
    /// Notices to users by mail; `None`: no notice is sent.
    pub notify: Option<Notify>,
    /// The admin API and status page (`[admin]`); without it they are off.
    pub admin: Option<Admin>,
    /// `[sync]`: where the connector keeps its state and which access policy decides.
    #[serde(default)]
    pub sync: SyncConfig,
}

/// `[admin]`: the admin API, the status page and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port` to listen on; loopback by default (see [`defaults::ADMIN_LISTEN`]).
    #[serde(default = "defaults::admin_listen")]
    pub listen: std::net::SocketAddr,
    /// The bearer token every call but `/healthz` must carry.
    pub token: SecretSource,
    /// Allows `listen` off loopback. The token and device data then cross the network in
    /// clear unless a TLS proxy sits in front, so this takes an explicit yes.
    #[serde(default)]
    pub allow_remote: bool,
}

/// `[sync]`: what every organization's sync shares.
///
/// ```toml
/// [sync]
/// data_dir = "data"                      # the store (easgate.db); relative to this file
/// plugin_dir = "plugins"                 # watched plugin files; absent: built-ins only
/// access_policy = "access-policy"        # the active policy's name (a file's, or the built-in)
/// # allowed_digests = ["sha256:…"]       # when set: only these directory plugins load
/// [sync.builtin_policy_settings]         # the built-in policy's settings (its README)
/// includedGroups = ["5a0c1d7e-…"]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// The store's directory, created with owner-only access. Relative paths are taken from
    /// the configuration file's directory, so that a service and an operator's CLI run from
    /// elsewhere open the same store.
    pub data_dir: PathBuf,
    /// The plugin directory; `None` runs on the built-in plugins.
    pub plugin_dir: Option<PathBuf>,
    /// The active access policy's name.
    pub access_policy: String,
    /// Digest pinning: when set, a plugin of the directory (of either world) loads only if
    /// the sha256 of its `.wasm` is listed; any other version is rejected before it is
    /// compiled, and the last allowed version (or the built-in) keeps serving. The built-ins
    /// are part of the binary and always allowed. `None`: any valid plugin loads.
    pub allowed_digests: Option<Vec<String>>,
    /// The built-in access policy's settings (a table, handed to it as a JSON object).
    pub builtin_policy_settings: toml::Table,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(defaults::DATA_DIR),
            plugin_dir: None,
            access_policy: crate::plugin::World::AccessPolicy.builtin_name().to_owned(),
            allowed_digests: None,
            builtin_policy_settings: toml::Table::new(),
        }
    }
}

impl SyncConfig {
    /// The built-in policy's settings as the JSON object `configure` receives.
    pub fn builtin_policy_json(&self) -> String {
        serde_json::to_string(&self.builtin_policy_settings).unwrap_or_else(|_| "{}".into())
    }
}

/// `[network]`: settings of every outgoing connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// An HTTP(S) proxy for every request to Exchange, Graph and the token endpoint.
    pub proxy: Option<Proxy>,
    /// Allows plain `http://` to hosts other than loopback. Off: tokens and device data only
    /// travel over TLS (always verified) unless they stay on this machine.
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[serde(default = "defaults::connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Whole request, body included; a CAS that exceeds it counts as failed.
    #[serde(default = "defaults::request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            proxy: None,
            allow_insecure_http: false,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            request_timeout: defaults::REQUEST_TIMEOUT,
        }
    }
}

/// A proxy; credentials go in their own keys, never in the URL (URLs end up in logs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// `http://host:port` (or `https://`).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
}

/// Reads `"500ms"`, `"30s"`, `"5m"`, `"1h"`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).ok_or_else(|| {
        de::Error::custom(format!(
            r#"`{text}` is not a duration like "500ms", "30s", "5m" or "1h""#
        ))
    })
}

fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

/// One Exchange organization and the Intune tenant that manages its devices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    /// Unique name, used in logs, the store and the admin API.
    pub name: String,
    pub exchange: ExchangeConnection,
    pub graph: GraphConnection,
    /// This organization's sender, admin copies and remediation links, where they differ from
    /// `[notify]`.
    #[serde(default)]
    pub notify: NotifyOverrides,
    /// Time between scheduled quick syncs; manual triggers come on top.
    #[serde(default = "defaults::quick_interval", deserialize_with = "duration")]
    pub quick_interval: Duration,
    /// Time between scheduled full syncs.
    #[serde(default = "defaults::full_interval", deserialize_with = "duration")]
    pub full_interval: Duration,
    /// `"HH:MM"` (UTC): a daily full sync at that time instead of every `full_interval`
    /// (seconds after midnight once read).
    #[serde(default, deserialize_with = "time_of_day")]
    pub full_at: Option<u32>,
    /// `[organization.sync]`: the blast-radius guard, the org default, UPN overrides,
    /// partnership removal and the policy's scope groups; see [`SyncSettings`].
    #[serde(default)]
    pub sync: crate::model::SyncSettings,
}

/// Reads `"HH:MM"` (UTC) as seconds after midnight.
fn time_of_day<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(d)?;
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && text.len() == 5).then_some(h * 3600 + m * 60)
    });
    parsed.map(Some).ok_or_else(|| {
        de::Error::custom(format!(r#"`{text}` is not a UTC time of day like "02:30""#))
    })
}

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
    /// `powershell`: Kerberos. Read so that its keys are checked, but refused at load: this
    /// build has no Kerberos (nor WS-Management message encryption).
    Kerberos {
        username: String,
        #[serde(default)]
        password: Option<SecretSource>,
        /// The realm, when it is not the user name's domain upper-cased.
        #[serde(default)]
        realm: Option<String>,
        /// An explicit KDC (`host[:port]`) instead of DNS SRV discovery.
        #[serde(default)]
        kdc: Option<String>,
    },
    /// `powershell`: NTLM. Read, and refused at load like Kerberos.
    Ntlm {
        username: String,
        password: SecretSource,
    },
}

impl ExchangeAuth {
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
    fn secret_mut(&mut self) -> Option<(&'static str, &mut SecretSource)> {
        match self {
            ExchangeAuth::ClientCredentials { .. } => None,
            ExchangeAuth::Bearer { token } => Some(("token", token)),
            ExchangeAuth::Basic { password, .. } | ExchangeAuth::Ntlm { password, .. } => {
                Some(("password", password))
            }
            ExchangeAuth::Kerberos { password, .. } => password.as_mut().map(|p| ("password", p)),
        }
    }

    fn secret(&self) -> Option<(&'static str, &SecretSource)> {
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

impl Default for ExchangeAuth {
    fn default() -> Self {
        ExchangeAuth::ClientCredentials {
            scope: defaults::exchange_scope(),
        }
    }
}

/// Where and how to reach Microsoft Graph (Intune, groups) and its token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConnection {
    /// Graph base URL; requests go to `{graph_url}/v1.0/…`.
    #[serde(default = "defaults::graph_url")]
    pub graph_url: String,
    /// Token endpoint base URL; tokens come from `{login_url}/{tenant}/oauth2/v2.0/token`.
    #[serde(default = "defaults::login_url")]
    pub login_url: String,
    /// Entra tenant: GUID or initial domain.
    pub tenant: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    pub client_secret: SecretSource,
    /// Client-credentials scope for Graph.
    #[serde(default = "defaults::graph_scope")]
    pub scope: String,
    /// Graph requests the connector allows itself per 20 seconds (at most Intune's 2000).
    #[serde(default = "defaults::graph_request_budget")]
    pub request_budget: u32,
}

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

/// Whether `host` (a name or an IP address, no port) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks `[notify]` and every `[organization.notify]`.
fn validate_notify(notify: &Notify, orgs: &[Organization]) -> Result<(), (String, String)> {
    let smtp = &notify.smtp;
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

/// A secret value; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration (a plain string).
    Inline(Secret),
    /// `{ env = "NAME" }`: the environment variable `NAME`.
    Env(String),
    /// `{ file = "path" }`: the file's contents without trailing line breaks. Relative paths are
    /// made absolute against the configuration file's directory when it is loaded.
    File(PathBuf),
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{0}` is not set (or not valid Unicode)")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the secret now (environment and files can change between runs, so this is done
    /// when the connector starts, not when the configuration is parsed).
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let (value, origin) = match self {
            SecretSource::Inline(s) => (s.expose().to_owned(), "the configuration".to_owned()),
            SecretSource::Env(name) => (
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?,
                format!("environment variable `{name}`"),
            ),
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                (
                    text.trim_end_matches(['\r', '\n']).to_owned(),
                    path.display().to_string(),
                )
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(Secret(value))
    }
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SourceVisitor;

        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = SecretSource;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a string, { env = "NAME" } or { file = "path" }"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Inline(Secret(v.to_owned())))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
                let mut source = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    let next = match key.as_str() {
                        "env" => SecretSource::Env(value),
                        "file" => SecretSource::File(PathBuf::from(value)),
                        other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                    };
                    if source.replace(next).is_some() {
                        return Err(de::Error::custom(
                            "a secret comes from one place: give `env` or `file`, not both",
                        ));
                    }
                }
                source.ok_or_else(|| {
                    de::Error::custom(r#"expected { env = "NAME" } or { file = "path" }"#)
                })
            }
        }

        d.deserialize_any(SourceVisitor)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{}:{line}:{column}: {field}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        /// Dotted path of the offending key, e.g. `organization[0].graph.client_id`.
        field: String,
        message: String,
    },
    /// The file parses but a value is not acceptable.
    #[error("{}:{line}:{column}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{field}: {source}")]
    Secret {
        field: String,
        #[source]
        source: SecretError,
    },
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::from_toml(&text, path)?;
        // A missing secret is a mistake in this file: said at load, where it is, rather than
        // by the first sync that needs it.
        config.check_secrets().map_err(|err| match err {
            ConfigError::Secret { field, source } => {
                let (line, column) = locate_field(&text, &field);
                ConfigError::Invalid {
                    path: path.to_owned(),
                    line,
                    column,
                    field,
                    message: source.to_string(),
                }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates `text`, read from `path` (named in errors; relative secret files
    /// are taken relative to its directory).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, column) = line_column(text, span.start);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                field: field_at(text, span.start, e.message()),
                message: e.message().trim().to_owned(),
            }
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        config.absolutize(dir);
        config.validate().map_err(|(field, message)| {
            let (line, column) = locate_field(text, &field);
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                field,
                message,
            }
        })?;
        Ok(config)
    }

    /// Makes relative secret file paths relative to `dir`. Sections with secrets add theirs here.
    fn absolutize(&mut self, dir: &Path) {
        if self.sync.data_dir.is_relative() {
            self.sync.data_dir = dir.join(&self.sync.data_dir);
        }
        if let Some(p) = &mut self.sync.plugin_dir
            && p.is_relative()
        {
            *p = dir.join(&*p);
        }
        let fix = |s: &mut SecretSource| {
            if let SecretSource::File(p) = s
                && p.is_relative()
            {
                *p = dir.join(&*p);
            }
        };
        if let Some(Proxy {
            password: Some(p), ..
        }) = &mut self.network.proxy
        {
            fix(p);
        }
        if let Some(admin) = &mut self.admin {
            fix(&mut admin.token);
        }
        if let Some(Notify {
            smtp: Smtp {
                password: Some(p), ..
            },
            ..
        }) = &mut self.notify
        {
            fix(p);
        }
        for org in &mut self.organizations {
            fix(&mut org.graph.client_secret);
            if let Some((_, secret)) = org.exchange.auth.secret_mut() {
                fix(secret);
            }
        }
    }

    /// Checks what the types can't: returns the offending field and why.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.organizations.is_empty() {
            return Err((
                "organization".into(),
                "at least one [[organization]] is required".into(),
            ));
        }
        let net = &self.network;
        for (field, d) in [
            ("network.connect_timeout", net.connect_timeout),
            ("network.request_timeout", net.request_timeout),
        ] {
            if d.is_zero() {
                return Err((field.into(), "must be longer than 0".into()));
            }
        }
        if let Some(proxy) = &net.proxy {
            check_url(&proxy.url).map_err(|m| ("network.proxy.url".to_owned(), m))?;
            if has_userinfo(&proxy.url) {
                return Err((
                    "network.proxy.url".into(),
                    "put the proxy's credentials in `username` and `password`, not in the URL"
                        .into(),
                ));
            }
            if proxy.password.is_some() && proxy.username.is_none() {
                return Err((
                    "network.proxy.password".into(),
                    "a password needs a `username`".into(),
                ));
            }
        }
        let insecure = net.allow_insecure_http;
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, org) in self.organizations.iter().enumerate() {
            let at = |field: &str| format!("organization[{i}].{field}");
            if org.name.trim().is_empty() {
                return Err((at("name"), "must not be empty".into()));
            }
            if let Some(first) = names.insert(org.name.to_lowercase(), i) {
                return Err((
                    at("name"),
                    format!("`{}` is also the name of organization[{first}]", org.name),
                ));
            }
            if org.exchange.cas_urls.is_empty() {
                return Err((at("exchange.cas_urls"), "list at least one CAS URL".into()));
            }
            validate_transport(&org.exchange).map_err(|(f, m)| (at(&f), m))?;
            for (j, url) in org.exchange.cas_urls.iter().enumerate() {
                check_service_url(url, insecure)
                    .map_err(|m| (at(&format!("exchange.cas_urls[{j}]")), m))?;
            }
            check_service_url(&org.graph.graph_url, insecure)
                .map_err(|m| (at("graph.graph_url"), m))?;
            check_service_url(&org.graph.login_url, insecure)
                .map_err(|m| (at("graph.login_url"), m))?;
            let x = &org.exchange;
            if !(1..=defaults::MAX_PARALLEL_COMMANDS).contains(&x.parallel_commands) {
                return Err((
                    at("exchange.parallel_commands"),
                    format!(
                        "must be between 1 and {} (Exchange refuses more than 18 per tenant)",
                        defaults::MAX_PARALLEL_COMMANDS
                    ),
                ));
            }
            for (field, d) in [
                ("exchange.unavailable_timeout", x.unavailable_timeout),
                ("exchange.probe_interval", x.probe_interval),
                ("quick_interval", org.quick_interval),
                ("full_interval", org.full_interval),
            ] {
                if d.is_zero() {
                    return Err((at(field), "must be longer than 0".into()));
                }
            }
            let percent = org.sync.max_new_restrictions.percent;
            // NaN and infinity parse as TOML floats; either would switch the guard off.
            if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
                return Err((
                    at("sync.max_new_restrictions.percent"),
                    format!("{percent} is not a share of the devices: write 0 to 100"),
                ));
            }
            if !(1..=defaults::GRAPH_APP_LIMIT).contains(&org.graph.request_budget) {
                return Err((
                    at("graph.request_budget"),
                    format!(
                        "must be between 1 and {} (Intune's limit per app and 20 seconds)",
                        defaults::GRAPH_APP_LIMIT
                    ),
                ));
            }
            if org.exchange.transport == ExchangeTransport::Rest
                && org.exchange.tenant_id.trim().is_empty()
            {
                return Err((
                    at("exchange.tenant_id"),
                    "must not be empty: the REST transport names the tenant in every request \
                     (for on-premises Exchange, set transport = \"powershell\")"
                        .into(),
                ));
            }
            for (field, value) in [
                ("graph.tenant", &org.graph.tenant),
                ("graph.client_id", &org.graph.client_id),
            ] {
                if value.trim().is_empty() {
                    return Err((at(field), "must not be empty".into()));
                }
            }
            let scopes = [
                ("graph.scope", &org.graph.scope),
                match &org.exchange.auth {
                    ExchangeAuth::ClientCredentials { scope } => ("exchange.auth.scope", scope),
                    _ => ("graph.scope", &org.graph.scope),
                },
            ];
            for (field, scope) in scopes {
                if !scope.ends_with("/.default") {
                    return Err((
                        at(field),
                        format!(
                            "`{scope}` is not a client-credentials scope (it must end in /.default)"
                        ),
                    ));
                }
            }
        }
        if let Some(admin) = &self.admin
            && !admin.listen.ip().is_loopback()
            && !admin.allow_remote
        {
            return Err((
                "admin.listen".into(),
                format!(
                    "{} is not a loopback address: the admin token and device data would cross \
                     the network in clear; put a TLS proxy in front and set \
                     `allow_remote = true` in [admin] to listen there",
                    admin.listen
                ),
            ));
        }
        for (i, digest) in self.sync.allowed_digests.iter().flatten().enumerate() {
            if crate::plugin::Digest::parse(digest).is_none() {
                return Err((
                    format!("sync.allowed_digests[{i}]"),
                    format!(
                        "`{digest}` is not a plugin digest: write \"sha256:\" and 64 hex digits, \
                         as `easgate policy check FILE` prints it"
                    ),
                ));
            }
        }
        match &self.notify {
            Some(notify) => validate_notify(notify, &self.organizations)?,
            None => {
                if let Some(i) = self
                    .organizations
                    .iter()
                    .position(|o| o.notify != NotifyOverrides::default())
                {
                    return Err((
                        format!("organization[{i}].notify"),
                        "notices are off: add a [notify] section with the mail server".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Resolves every secret now, so a missing one stops start-up with the field named.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        if let Some(Proxy {
            password: Some(p), ..
        }) = &self.network.proxy
        {
            p.resolve().map_err(|source| ConfigError::Secret {
                field: "network.proxy.password".into(),
                source,
            })?;
        }
        if let Some(admin) = &self.admin {
            admin
                .token
                .resolve()
                .map_err(|source| ConfigError::Secret {
                    field: "admin.token".into(),
                    source,
                })?;
        }
        if let Some(Notify {
            smtp: Smtp {
                password: Some(p), ..
            },
            ..
        }) = &self.notify
        {
            p.resolve().map_err(|source| ConfigError::Secret {
                field: "notify.smtp.password".into(),
                source,
            })?;
        }
        for (i, org) in self.organizations.iter().enumerate() {
            let check = |field: &str, s: &SecretSource| {
                s.resolve().map(drop).map_err(|source| ConfigError::Secret {
                    field: format!("organization[{i}].{field}"),
                    source,
                })
            };
            check("graph.client_secret", &org.graph.client_secret)?;
            if let Some((key, secret)) = org.exchange.auth.secret() {
                check(&format!("exchange.auth.{key}"), secret)?;
            }
        }
        Ok(())
    }
}

/// The keys of `[organization.exchange]` that belong to one transport only, the sign-in each
/// transport takes, and the PowerShell endpoint's shape. Returns the field under `exchange` and
/// why.
fn validate_transport(x: &ExchangeConnection) -> Result<(), (String, String)> {
    let auth = x.auth.kind();
    match x.transport {
        ExchangeTransport::Rest => {
            if matches!(
                x.auth,
                ExchangeAuth::Basic { .. }
                    | ExchangeAuth::Kerberos { .. }
                    | ExchangeAuth::Ntlm { .. }
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
        }
        ExchangeTransport::PowerShell => {
            if !x.tenant_id.is_empty() {
                return Err((
                    "exchange.tenant_id".into(),
                    "applies to transport = \"rest\" only (remote PowerShell has no tenant in \
                     its URL); remove it"
                        .into(),
                ));
            }
            match &x.auth {
                ExchangeAuth::ClientCredentials { .. } | ExchangeAuth::Bearer { .. } => {
                    return Err((
                        "exchange.auth".into(),
                        format!(
                            "kind = \"{auth}\" is for the REST admin API; remote PowerShell \
                             signs in with auth = {{ kind = \"basic\", username = \"…\", \
                             password = {{ env = \"…\" }} }}"
                        ),
                    ));
                }
                ExchangeAuth::Kerberos { .. } | ExchangeAuth::Ntlm { .. } => {
                    return Err((
                        "exchange.auth".into(),
                        format!(
                            "kind = \"{auth}\" is not supported yet in this build (no Kerberos, \
                             NTLM or WS-Management message encryption); use kind = \"basic\" \
                             over https://"
                        ),
                    ));
                }
                ExchangeAuth::Basic { username, .. } => {
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
                }
            }
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
        }
    }
    Ok(())
}

/// An absolute `http(s)://host…` URL.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{}` is not an http:// or https:// URL", shown(url)))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{}` has no host", shown(url)));
    }
    Ok(())
}

/// `url` as an error message may show it: credentials in its authority (`user:password@`)
/// replaced, since configuration errors go to the terminal and the service's journal.
fn shown(url: &str) -> String {
    if !has_userinfo(url) {
        return url.to_owned();
    }
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}[redacted]@{host}{path}")
}

/// `user[:password]@` in the authority of an http(s) URL.
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

/// Whether the host of an `http(s)://` URL is a loopback address (`localhost`, `127.x.y.z`,
/// `[::1]`): the one place plain HTTP can't be read by anybody else.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A service URL: absolute, no credentials in it, and TLS unless loopback or `insecure`.
fn check_service_url(url: &str, insecure: bool) -> Result<(), String> {
    check_url(url)?;
    if has_userinfo(url) {
        return Err(format!(
            "`{}` carries credentials; they belong in the auth settings",
            shown(url)
        ));
    }
    if url.starts_with("http://") && !insecure && !is_loopback_url(url) {
        return Err(format!(
            "`{url}` is plain HTTP to a host other than loopback; use https:// or set \
             network.allow_insecure_http = true"
        ));
    }
    Ok(())
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The key of a `key = value` line, if the line is one.
fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('[') || t.starts_with('#') {
        return None;
    }
    let (key, _) = t.split_once('=')?;
    Some(key.trim().trim_matches('"'))
}

/// Walks the lines up to (and including) line index `upto`, returning the dotted path of the
/// table they are in, with array-of-tables indexes (`organization[1].graph`).
fn table_path(lines: &[&str], upto: usize) -> String {
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut current = String::new();
    for line in lines.iter().take(upto + 1) {
        let t = line.trim();
        let (header, is_array) = if let Some(h) = t.strip_prefix("[[") {
            (h.split("]]").next().unwrap_or(""), true)
        } else if let Some(h) = t.strip_prefix('[') {
            (h.split(']').next().unwrap_or(""), false)
        } else {
            continue;
        };
        let header = header.trim();
        if is_array {
            *arrays.entry(header.to_owned()).or_insert(0) += 1;
        }
        let mut path = String::new();
        let mut prefix = String::new();
        for segment in header.split('.').map(str::trim) {
            if !prefix.is_empty() {
                prefix.push('.');
                path.push('.');
            }
            prefix.push_str(segment);
            path.push_str(segment);
            if let Some(n) = arrays.get(&prefix) {
                path.push_str(&format!("[{}]", n - 1));
            }
        }
        current = path;
    }
    current
}

fn join(table: &str, key: &str) -> String {
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => table.to_owned(),
        _ => format!("{table}.{key}"),
    }
}

/// Names the field a parse error at byte `offset` is about.
fn field_at(text: &str, offset: usize, message: &str) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let (line, _) = line_column(text, offset);
    let index = line - 1;
    let table = table_path(&lines, index);
    // serde names the field itself for missing and unknown fields; the span is the table.
    for lead in ["missing field `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(lead)
            && let Some((name, _)) = rest.split_once('`')
        {
            // An unknown key's span is the key itself; a missing one's is the table holding it
            // (a header line, or an inline table after its key).
            return match lines.get(index).and_then(|l| key_of(l)) {
                Some(key) if key == name => join(&table, key),
                Some(key) => join(&join(&table, key), name),
                None => join(&table, name),
            };
        }
    }
    let key = lines.get(index).and_then(|l| key_of(l)).unwrap_or("");
    join(&table, key)
}

/// Finds the line and column where `field` (as `validate` names it) is written.
/// Where `field` is written in `text` (line and column): a key inside an inline table
/// (`proxy = { url = … }`) is found at its parent's key; the file's start if nowhere.
fn locate_field(text: &str, field: &str) -> (usize, usize) {
    let mut at = Some(field);
    let mut place = None;
    while let (None, Some(f)) = (place, at) {
        place = locate(text, f);
        at = f.rsplit_once('.').map(|(parent, _)| parent);
    }
    place.unwrap_or((1, 1))
}

fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    // `organization[0].exchange.cas_urls[1]` → table `organization[0].exchange`, key `cas_urls`.
    let field = field
        .strip_suffix(']')
        .map_or(field, |f| f.rsplit_once('[').map_or(f, |(head, _)| head));
    let (table, key) = field.rsplit_once('.').unwrap_or(("", field));
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let here = table_path(&lines, i);
        let matches_key = key_of(line) == Some(key) && here == table;
        // A missing key is reported at its table's header.
        let is_table = line.trim_start().starts_with('[') && here == field;
        if matches_key || is_table {
            return Some((i + 1, line.len() - line.trim_start().len() + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[[organization]]
name = "contoso"

[organization.exchange]
cas_urls = ["https://cas01.contoso.com", "https://cas02.contoso.com:8443"]
tenant_id = "contoso.onmicrosoft.com"

[organization.graph]
tenant = "contoso.onmicrosoft.com"
client_id = "3b1a6f2e-0000-4000-8000-000000000001"
client_secret = "inline-secret-value"

[[organization]]
name = "fabrikam"

[organization.exchange]
cas_urls = ["http://127.0.0.1:8080"]
tenant_id = "fabrikam.onmicrosoft.com"
auth = { kind = "bearer", token = { env = "PATH" } }

[organization.graph]
graph_url = "http://127.0.0.1:8081"
login_url = "http://127.0.0.1:8081"
tenant = "fabrikam.onmicrosoft.com"
client_id = "3b1a6f2e-0000-4000-8000-000000000002"
client_secret = { file = "fabrikam.secret" }
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/easgate/easgate.toml"))
    }

    /// The error's (line, column, field).
    fn place(e: ConfigError) -> (usize, usize, String, String) {
        match e {
            ConfigError::Parse {
                line,
                column,
                field,
                message,
                ..
            }
            | ConfigError::Invalid {
                line,
                column,
                field,
                message,
                ..
            } => (line, column, field, message),
            other => panic!("not a located error: {other}"),
        }
    }

    #[test]
    fn sync_sections_default_and_resolve_paths_beside_the_file() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.sync.data_dir, Path::new("/etc/easgate/data"));
        assert_eq!(c.sync.plugin_dir, None);
        assert_eq!(c.sync.access_policy, "access-policy");
        assert_eq!(c.sync.builtin_policy_json(), "{}");
        assert_eq!(
            c.organizations[0].sync,
            crate::model::SyncSettings::default()
        );

        let text = format!(
            "[sync]\ndata_dir = \"state\"\nplugin_dir = \"/opt/plugins\"\n\
             [sync.builtin_policy_settings]\nincludedGroups = [\"g1\"]\n{FULL}\n\
             [organization.sync]\nmanage_org_default = false\nscope_groups = [\"g1\"]\n\
             max_new_restrictions = {{ percent = 5.0, floor = 10 }}\n\
             upn_overrides = {{ \"a@x.com\" = \"a@y.com\" }}\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.sync.data_dir, Path::new("/etc/easgate/state"));
        assert_eq!(
            c.sync.plugin_dir.as_deref(),
            Some(Path::new("/opt/plugins"))
        );
        assert_eq!(c.sync.builtin_policy_json(), r#"{"includedGroups":["g1"]}"#);
        // The section belongs to the last organization.
        let s = &c.organizations[1].sync;
        assert!(!s.manage_org_default);
        assert_eq!(s.scope_groups, ["g1"]);
        assert_eq!(s.max_new_restrictions.floor, 10);
        assert_eq!(s.upn_overrides["a@x.com"], "a@y.com");
        assert!(c.organizations[0].sync.manage_org_default);

        let typo = format!("{FULL}\n[organization.sync]\nmanage_org_defaults = false\n");
        let (_, _, field, _) = place(parse(&typo).unwrap_err());
        assert!(field.contains("sync"), "{field}");
    }

    /// Regression (hostile run, hole 10): −5, NaN, 101 and inf were accepted as the guard's
    /// share (inf switches the guard off).
    #[test]
    fn a_guard_share_outside_0_to_100_is_refused_with_its_line() {
        for bad in ["-5.0", "nan", "101.0", "inf"] {
            let text = format!(
                "{FULL}\n[organization.sync]\nmax_new_restrictions = {{ percent = {bad}, floor = 10 }}\n"
            );
            let (line, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(
                field, "organization[1].sync.max_new_restrictions.percent",
                "{bad}"
            );
            let written = text.lines().position(|l| l.starts_with("max_new")).unwrap() + 1;
            assert_eq!(line, written, "{bad}");
            assert!(message.contains("0 to 100"), "{bad}: {message}");
        }
        for good in ["0.0", "12.5", "100.0"] {
            let text = format!(
                "{FULL}\n[organization.sync]\nmax_new_restrictions = {{ percent = {good}, floor = 10 }}\n"
            );
            parse(&text).unwrap();
        }
    }

    /// Regression (hostile run, hole 10): a missing secret failed only at sync time, with exit
    /// 2 and the organization named three times. It is now a load error naming file, line and
    /// key, its cause said once.
    #[test]
    fn a_missing_secret_is_a_load_error_naming_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("easgate.toml");
        std::fs::write(dir.path().join("fabrikam.secret"), "s3cret").unwrap();
        let config = FULL.replace(
            "{ env = \"PATH\" }",
            "{ env = \"EASGATE_TEST_UNSET_4711\" }",
        );
        std::fs::write(&path, &config).unwrap();
        let err = Config::load(&path).unwrap_err();
        let text = format!("{err:#}");
        let written = config
            .lines()
            .position(|l| l.contains("UNSET_4711"))
            .unwrap()
            + 1;
        assert!(
            text.starts_with(&format!("{}:{written}:", path.display())),
            "file and line: {text}"
        );
        assert!(
            text.contains("organization[1].exchange.auth.token"),
            "{text}"
        );
        assert_eq!(text.matches("EASGATE_TEST_UNSET_4711").count(), 1, "{text}");
        assert_eq!(text.matches("fabrikam").count(), 0, "{text}");
    }

    #[test]
    fn parses_and_applies_defaults() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.organizations.len(), 2);
        let contoso = &c.organizations[0];
        assert_eq!(contoso.exchange.cas_urls[0], "https://cas01.contoso.com");
        assert_eq!(
            contoso.exchange.auth,
            ExchangeAuth::ClientCredentials {
                scope: defaults::EXCHANGE_SCOPE.into()
            }
        );
        assert_eq!(contoso.graph.graph_url, defaults::GRAPH_URL);
        assert_eq!(contoso.graph.login_url, defaults::LOGIN_URL);
        assert_eq!(contoso.graph.scope, defaults::GRAPH_SCOPE);
        let fabrikam = &c.organizations[1];
        assert_eq!(
            fabrikam.exchange.auth,
            ExchangeAuth::Bearer {
                token: SecretSource::Env("PATH".into())
            }
        );
        // Relative secret files are relative to the configuration's directory.
        assert_eq!(
            fabrikam.graph.client_secret,
            SecretSource::File("/etc/easgate/fabrikam.secret".into())
        );
    }

    #[test]
    fn schedule_and_admin_defaults_and_settings() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.admin, None);
        assert_eq!(c.organizations[0].quick_interval, defaults::QUICK_INTERVAL);
        assert_eq!(c.organizations[0].full_interval, defaults::FULL_INTERVAL);
        let text = FULL.replacen(
            "name = \"fabrikam\"\n",
            "name = \"fabrikam\"\nquick_interval = \"2m\"\nfull_interval = \"6h\"\n",
            1,
        ) + "\n[admin]\ntoken = { file = \"admin.token\" }\n";
        let c = parse(&text).unwrap();
        assert_eq!(c.organizations[1].full_at, None);
        let daily = parse(&FULL.replacen(
            "name = \"fabrikam\"\n",
            "name = \"fabrikam\"\nfull_at = \"02:30\"\n",
            1,
        ))
        .unwrap();
        assert_eq!(daily.organizations[1].full_at, Some(2 * 3600 + 30 * 60));
        assert_eq!(c.organizations[1].quick_interval, Duration::from_secs(120));
        assert_eq!(
            c.organizations[1].full_interval,
            Duration::from_secs(6 * 3600)
        );
        let admin = c.admin.unwrap();
        assert_eq!(admin.listen, "127.0.0.1:8470".parse().unwrap());
        assert!(admin.listen.ip().is_loopback());
        assert_eq!(
            admin.token,
            SecretSource::File("/etc/easgate/admin.token".into())
        );
        let listen =
            parse(&(FULL.to_owned() + "\n[admin]\nlisten = \"[::1]:9000\"\ntoken = \"t\"\n"));
        assert_eq!(
            listen.unwrap().admin.unwrap().listen,
            "[::1]:9000".parse().unwrap()
        );
    }

    #[test]
    fn bad_schedule_and_admin_settings_name_the_field() {
        let zero = FULL.replacen(
            "name = \"fabrikam\"\n",
            "name = \"fabrikam\"\nquick_interval = \"0s\"\n",
            1,
        );
        let (line, _, field, message) = place(parse(&zero).unwrap_err());
        assert_eq!(field, "organization[1].quick_interval");
        assert_eq!(
            zero.lines().nth(line - 1).unwrap(),
            "quick_interval = \"0s\""
        );
        assert!(message.contains("longer than 0"), "{message}");

        for bad in ["24:00", "2:30", "02:60", "noon"] {
            let text = FULL.replacen(
                "name = \"fabrikam\"\n",
                &format!("name = \"fabrikam\"\nfull_at = \"{bad}\"\n"),
                1,
            );
            let (_, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(field, "organization[1].full_at", "{bad}");
            assert!(message.contains("time of day"), "{message}");
        }

        let no_token = FULL.to_owned() + "\n[admin]\nlisten = \"127.0.0.1:1\"\n";
        let (_, _, field, message) = place(parse(&no_token).unwrap_err());
        assert_eq!(field, "admin.token", "{message}");

        let bad_listen = FULL.to_owned() + "\n[admin]\nlisten = \"localhost\"\ntoken = \"t\"\n";
        let (_, _, field, _) = place(parse(&bad_listen).unwrap_err());
        assert_eq!(field, "admin.listen");

        let missing =
            FULL.to_owned() + "\n[admin]\ntoken = { env = \"EASGATE_TEST_SURELY_UNSET_4712\" }\n";
        let err = parse(&missing).unwrap().check_secrets().unwrap_err();
        assert!(err.to_string().starts_with("admin.token: "), "{err}");
    }

    #[test]
    fn a_remote_admin_listener_takes_an_explicit_allow_remote() {
        for listen in ["0.0.0.0:8470", "192.0.2.7:8470", "[::]:8470"] {
            let text = format!("{FULL}\n[admin]\nlisten = \"{listen}\"\ntoken = \"t\"\n");
            let err = parse(&text).unwrap_err();
            let shown = err.to_string();
            let (line, _, field, message) = place(err);
            assert_eq!(field, "admin.listen", "{listen}");
            assert_eq!(
                text.lines().nth(line - 1).unwrap(),
                format!("listen = \"{listen}\"")
            );
            assert!(message.contains("allow_remote = true"), "{message}");
            assert!(shown.starts_with("/etc/easgate/easgate.toml:"), "{shown}");
            let allowed = text.replace("token = \"t\"", "token = \"t\"\nallow_remote = true");
            assert!(parse(&allowed).unwrap().admin.unwrap().allow_remote);
        }
        let loopback = format!("{FULL}\n[admin]\nlisten = \"[::1]:1\"\ntoken = \"t\"\n");
        assert!(!parse(&loopback).unwrap().admin.unwrap().allow_remote);
    }

    /// Found by the secrets review: a URL with `user:password@` in it was quoted whole in the
    /// error, and configuration errors end up in the service's journal.
    #[test]
    fn credentials_in_a_url_never_show_in_its_error() {
        let password = "Sup3r-s3cret";
        for (field, url) in [
            (
                "graph.graph_url",
                format!("https://app:{password}@graph.example.com/"),
            ),
            (
                "graph.login_url",
                format!("ftp://app:{password}@login.example.com"),
            ),
            (
                "exchange.cas_urls[0]",
                format!("http://ex:{password}@cas.example.com"),
            ),
            (
                "network.proxy.url",
                format!("socks5://u:{password}@proxy:1080"),
            ),
        ] {
            let text = match field {
                "network.proxy.url" => format!("[network]\nproxy = {{ url = \"{url}\" }}\n{FULL}"),
                "exchange.cas_urls[0]" => {
                    FULL.replacen("[\"http://127.0.0.1:8080\"]", &format!("[\"{url}\"]"), 1)
                }
                _ => {
                    let key = field.rsplit('.').next().unwrap();
                    FULL.replacen(
                        &format!("{key} = \"http://127.0.0.1:8081\""),
                        &format!("{key} = \"{url}\""),
                        1,
                    )
                }
            };
            assert!(
                text.contains(&url),
                "{field}: the test did not place the URL"
            );
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
            assert!(!err.contains(password), "{field}: {err}");
            assert!(err.contains("[redacted]@"), "{err}");
        }
        assert_eq!(
            shown("https://graph.example.com/v1"),
            "https://graph.example.com/v1"
        );
        assert_eq!(
            shown("https://a:b@c@graph.example.com/v1?x=1"),
            "https://[redacted]@graph.example.com/v1?x=1"
        );
    }

    #[test]
    fn allowed_digests_must_be_sha256_digests() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let pinned = format!("[sync]\nallowed_digests = [\"{digest}\"]\n{FULL}");
        assert_eq!(
            parse(&pinned).unwrap().sync.allowed_digests,
            Some(vec![digest.clone()])
        );
        assert_eq!(parse(FULL).unwrap().sync.allowed_digests, None);
        let bad = format!("[sync]\nallowed_digests = [\"{digest}\", \"ab12\"]\n{FULL}");
        let (line, _, field, message) = place(parse(&bad).unwrap_err());
        assert_eq!(field, "sync.allowed_digests[1]");
        assert_eq!(line, 2);
        assert!(
            message.contains("\"ab12\"") || message.contains("`ab12`"),
            "{message}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let c = parse(FULL).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("inline-secret-value"), "{debug}");
        assert!(debug.contains("[redacted]"));
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secrets_resolve_from_inline_env_and_file() {
        assert_eq!(
            SecretSource::Inline(Secret::new("x"))
                .resolve()
                .unwrap()
                .expose(),
            "x"
        );
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            SecretSource::Env("PATH".into()).resolve().unwrap().expose(),
            path
        );
        let missing = SecretSource::Env("EASGATE_TEST_SURELY_UNSET_4711".into()).resolve();
        assert!(matches!(missing, Err(SecretError::EnvMissing(_))));

        let dir = std::env::temp_dir().join(format!("easgate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.secret");
        std::fs::write(&file, "from-a-file\n").unwrap();
        assert_eq!(
            SecretSource::File(file.clone()).resolve().unwrap().expose(),
            "from-a-file"
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            SecretSource::File(file).resolve(),
            Err(SecretError::Empty(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();

        // check_secrets names the field that failed.
        let c = parse(FULL).unwrap();
        let e = c.check_secrets().unwrap_err().to_string();
        assert!(e.starts_with("organization[1].graph.client_secret: cannot read secret file /etc/easgate/fabrikam.secret"), "{e}");
    }

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
    fn powershell_settings_refuse_what_does_not_fit_naming_line_and_key() {
        let ps = r#"transport = "powershell""#;
        let url = r#"["https://cas01.contoso.com/PowerShell/"]"#;
        // (case, text, field, the line the error points at, words the message must hold)
        let cases: Vec<(&str, String, &str, &str, Vec<&str>)> = vec![
            (
                "kerberos is not in this build",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "kerberos", username = "svc@contoso.com", kdc = "dc01:88" }"#,
                    "",
                ),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["kerberos", "not supported yet in this build"],
            ),
            (
                "ntlm is not in this build",
                powershell(
                    ps,
                    url,
                    r#"{ kind = "ntlm", username = "svc", password = "x" }"#,
                    "",
                ),
                "organization[0].exchange.auth",
                "auth = ",
                vec!["ntlm", "not supported yet in this build"],
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

    #[test]
    fn parse_errors_name_file_line_column_and_field() {
        let typo = FULL.replace(
            "client_id = \"3b1a6f2e-0000-4000-8000-000000000002\"",
            "clientid = \"x\"",
        );
        let e = parse(&typo).unwrap_err();
        assert!(
            e.to_string().starts_with("/etc/easgate/easgate.toml:"),
            "{e}"
        );
        let (line, _, field, message) = place(e);
        assert_eq!(line, 26);
        assert_eq!(field, "organization[1].graph.clientid");
        assert!(message.contains("unknown field `clientid`"), "{message}");

        let wrong_type = FULL.replace("tenant_id = \"contoso.onmicrosoft.com\"", "tenant_id = 42");
        let (line, column, field, _) = place(parse(&wrong_type).unwrap_err());
        assert_eq!(
            (line, column, field.as_str()),
            (7, 13, "organization[0].exchange.tenant_id")
        );

        let missing = FULL.replace("client_secret = \"inline-secret-value\"\n", "");
        let (_, _, field, message) = place(parse(&missing).unwrap_err());
        assert_eq!(field, "organization[0].graph.client_secret");
        assert!(message.contains("missing field `client_secret`"));

        let bad_secret = FULL.replace("{ file = \"fabrikam.secret\" }", "{ path = \"x\" }");
        let (line, _, field, _) = place(parse(&bad_secret).unwrap_err());
        assert_eq!(
            (line, field.as_str()),
            (27, "organization[1].graph.client_secret.path")
        );

        let bad_auth = FULL.replace("kind = \"bearer\"", "kind = \"telepathy\"");
        let (line, _, field, _) = place(parse(&bad_auth).unwrap_err());
        assert_eq!(
            (line, field.as_str()),
            (20, "organization[1].exchange.auth")
        );

        let (line, column, _, _) = place(parse("[[organization]\n").unwrap_err());
        assert_eq!((line, column), (1, 16));
    }

    #[test]
    fn invalid_values_are_located_too() {
        let (_, _, field, _) = place(parse("").unwrap_err());
        assert_eq!(field, "organization");

        let dup = FULL.replace("name = \"fabrikam\"", "name = \"Contoso\"");
        let (line, _, field, message) = place(parse(&dup).unwrap_err());
        assert_eq!((line, field.as_str()), (15, "organization[1].name"));
        assert!(message.contains("organization[0]"));

        let empty = FULL.replace("cas_urls = [\"http://127.0.0.1:8080\"]", "cas_urls = []");
        let (line, _, field, _) = place(parse(&empty).unwrap_err());
        assert_eq!(
            (line, field.as_str()),
            (18, "organization[1].exchange.cas_urls")
        );

        let bad = FULL.replace(
            "\"https://cas02.contoso.com:8443\"",
            "\"cas02.contoso.com\"",
        );
        let (line, _, field, message) = place(parse(&bad).unwrap_err());
        assert_eq!(
            (line, field.as_str()),
            (6, "organization[0].exchange.cas_urls[1]")
        );
        assert!(message.contains("not an http:// or https:// URL"));

        let scope = FULL.replace(
            "client_secret = \"inline-secret-value\"",
            "client_secret = \"x\"\nscope = \"https://graph.microsoft.com/User.Read\"",
        );
        let (_, _, field, _) = place(parse(&scope).unwrap_err());
        assert_eq!(field, "organization[0].graph.scope");
    }

    #[test]
    fn connection_settings_default_and_parse() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.network, Network::default());
        let x = &c.organizations[0].exchange;
        assert!(x.cas_failover);
        assert_eq!(x.parallel_commands, 1);
        assert_eq!(x.unavailable_timeout, defaults::UNAVAILABLE_TIMEOUT);
        assert_eq!(x.probe_interval, defaults::PROBE_INTERVAL);
        assert_eq!(c.organizations[0].graph.request_budget, 1500);

        let tuned = FULL
            .replace(
                "tenant_id = \"contoso.onmicrosoft.com\"",
                "tenant_id = \"contoso.onmicrosoft.com\"\ncas_failover = false\nparallel_commands = 16\nunavailable_timeout = \"1500ms\"\nprobe_interval = \"1m\"",
            )
            .replace(
                "client_secret = \"inline-secret-value\"",
                "client_secret = \"inline-secret-value\"\nrequest_budget = 200",
            )
            + "\n[network]\nallow_insecure_http = true\nconnect_timeout = \"3s\"\nrequest_timeout = \"1h\"\nproxy = { url = \"http://proxy.contoso.com:3128\", username = \"easgate\", password = \"proxy-pw-value\" }\n";
        let c = parse(&tuned).unwrap();
        let x = &c.organizations[0].exchange;
        assert!(!x.cas_failover);
        assert_eq!(x.parallel_commands, 16);
        assert_eq!(x.unavailable_timeout, Duration::from_millis(1500));
        assert_eq!(x.probe_interval, Duration::from_secs(60));
        assert_eq!(c.organizations[0].graph.request_budget, 200);
        assert!(c.network.allow_insecure_http);
        assert_eq!(c.network.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.network.request_timeout, Duration::from_secs(3600));
        let proxy = c.network.proxy.as_ref().unwrap();
        assert_eq!(proxy.username.as_deref(), Some("easgate"));
        assert!(!format!("{c:?}").contains("proxy-pw-value"));
    }

    #[test]
    fn connection_settings_are_checked() {
        let with_network = |net: &str| format!("{FULL}\n[network]\n{net}\n");
        let cases = [
            (
                FULL.replace(
                    "tenant_id = \"contoso.onmicrosoft.com\"",
                    "tenant_id = \"x\"\nparallel_commands = 0",
                ),
                "organization[0].exchange.parallel_commands",
                "between 1 and 64",
            ),
            (
                FULL.replace(
                    "tenant_id = \"contoso.onmicrosoft.com\"",
                    "tenant_id = \"x\"\nunavailable_timeout = \"soon\"",
                ),
                "organization[0].exchange.unavailable_timeout",
                "not a duration",
            ),
            (
                FULL.replace(
                    "client_secret = \"inline-secret-value\"",
                    "client_secret = \"s\"\nrequest_budget = 2500",
                ),
                "organization[0].graph.request_budget",
                "between 1 and 2000",
            ),
            (
                FULL.replace("https://cas01.contoso.com", "http://cas01.contoso.com"),
                "organization[0].exchange.cas_urls[0]",
                "plain HTTP",
            ),
            (
                FULL.replace(
                    "https://cas01.contoso.com",
                    "https://admin:pw@cas01.contoso.com",
                ),
                "organization[0].exchange.cas_urls[0]",
                "carries credentials",
            ),
            (
                with_network("proxy = { url = \"http://u:p@proxy:3128\" }"),
                "network.proxy.url",
                "not in the URL",
            ),
            (
                with_network("proxy = { url = \"http://proxy:3128\", password = \"x\" }"),
                "network.proxy.password",
                "needs a `username`",
            ),
            (
                with_network("request_timeout = \"0s\""),
                "network.request_timeout",
                "longer than 0",
            ),
            (
                with_network("proxy_url = \"http://proxy:3128\""),
                "network.proxy_url",
                "unknown field",
            ),
        ];
        for (text, want_field, want_message) in cases {
            let (line, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(field, want_field, "{message}");
            assert!(message.contains(want_message), "{field}: {message}");
            assert!(line > 1, "{field} located at line {line}");
        }
        // Plain HTTP to a remote host is allowed when said so.
        let allowed = with_network("allow_insecure_http = true")
            .replace("https://cas01.contoso.com", "http://cas01.contoso.com");
        assert!(parse(&allowed).is_ok());
    }

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

    #[test]
    fn loopback_urls_and_durations() {
        for url in [
            "http://127.0.0.1:80",
            "http://localhost/x",
            "http://[::1]:8080",
            "http://127.8.9.1",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.1",
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1d"), None);
    }

    #[test]
    fn the_labs_written_config_loads_and_points_at_the_lab() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let lab = easgate_lab::Lab::start(easgate_lab::LabOptions {
                devices: 10,
                ..Default::default()
            })
            .await
            .unwrap();
            let dir =
                std::env::temp_dir().join(format!("easgate-config-lab-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("lab.toml");
            lab.write_connector_config(&path).unwrap();
            let c = Config::load(&path).unwrap();
            c.check_secrets().unwrap();
            let org = &c.organizations[0];
            assert_eq!(org.exchange.cas_urls, lab.cas_urls());
            assert_eq!(org.exchange.tenant_id, lab.tenant_domain());
            assert_eq!(org.graph.graph_url, lab.graph_url());
            assert_eq!(org.graph.login_url, lab.login_url());
            assert_eq!(org.graph.tenant, lab.tenant_id());
            assert_eq!(org.graph.client_id, lab.client_id());
            assert_eq!(
                org.graph.client_secret.resolve().unwrap().expose(),
                lab.client_secret()
            );
            assert!(matches!(
                org.exchange.auth,
                ExchangeAuth::ClientCredentials { .. }
            ));

            // The other secret placements the lab can write parse as well.
            for source in [
                easgate_lab::SecretSource::Inline,
                easgate_lab::SecretSource::Env("LAB_SECRET".into()),
            ] {
                let text = lab.connector_config(&source);
                let c = Config::from_toml(&text, &path).unwrap();
                assert_eq!(c.organizations[0].graph.client_id, lab.client_id());
            }
            std::fs::remove_dir_all(&dir).unwrap();
            lab.shutdown().await;
        });
    }
}
