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
//! `kind = "kerberos"` (username, password or `keytab = "path"`, `realm`, optional
//! `kdc = "host:port"` and `spn`) seals every envelope, so plain `http://` is fine; so does
//! `kind = "ntlm"` (username
//! `CONTOSO\\svc-easgate` or `svc-easgate@contoso.com`, password).
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
//! Durations are written `"500ms"`, `"30s"`, `"5m"`, `"1h"` or `"1h 30m"` (see `duration.rs`).
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
//!
//! Layout: one file per section, each with its types, its checks and their tests — `exchange`,
//! `organization` (with Graph), `network`, `notify`, `sync`, `schedule`, `admin`; beside them
//! `secrets`, `duration`, `url`, [`defaults`], and `load` (the loader, which names file, line,
//! column and key). `Config::validate` only calls each section's checks in turn.

use std::collections::HashMap;

use serde::Deserialize;

mod admin;
pub mod defaults;
mod duration;
mod exchange;
mod load;
mod network;
mod notify;
mod organization;
mod policy;
mod schedule;
mod secrets;
mod sync;
#[cfg(test)]
mod testing;
mod url;

pub use admin::Admin;
pub use exchange::{ExchangeAuth, ExchangeConnection, ExchangeTransport, kerberos_principal};
pub use load::ConfigError;
pub use network::{Network, Proxy, read_ca_file};
pub use notify::{NOTICE_PLATFORMS, Notify, NotifyOverrides, OrgNotify, Smtp, SmtpSecurity};
pub use organization::{GraphConnection, Organization};
pub use policy::OrgPolicy;
pub use secrets::{Secret, SecretError, SecretSource};
pub use sync::SyncConfig;
pub use url::{is_loopback_host, is_loopback_url};

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

impl Config {
    /// Checks what the types can't, section by section: returns the offending field and why.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.organizations.is_empty() {
            return Err((
                "organization".into(),
                "at least one [[organization]] is required".into(),
            ));
        }
        self.network.validate()?;
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, org) in self.organizations.iter().enumerate() {
            org.validate(i, &mut names, self.network.allow_insecure_http)?;
            if let Some(policy) = &org.policy {
                policy.validate(|field| format!("organization[{i}].{field}"), &self.sync)?;
            }
            policy::check_stale_limit(i, org, &self.sync)?;
        }
        if let Some(admin) = &self.admin {
            admin.validate()?;
        }
        self.sync.validate()?;
        notify::validate(self.notify.as_ref(), &self.organizations)
    }
}
