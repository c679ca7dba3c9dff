//! Every default of the configuration, in one place.

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
