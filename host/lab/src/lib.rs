//! The lab: a simulated Exchange organization and Intune tenant that speak the real APIs, on
//! loopback. The connector is developed, tested, benchmarked and demonstrated against it; a client
//! that works against the lab must work against the real services with only base URLs and
//! credentials changed.
//!
//! Layout, following one request:
//! - `server` — the listeners (K CAS endpoints, Graph + login, control, SMTP) and the state they
//!   share; stopping a CAS closes its socket at once.
//! - `exchange` — `POST /adminapi/beta/{tenant}/InvokeCommand`: parameter binding, `-Filter`,
//!   the cmdlets, Exchange's access-state precedence, latency model and concurrency limit; and
//!   `exchange::powershell`, the on-premises face `POST /PowerShell/` (WS-Management + PSRP via
//!   the `easgate-psrp` crate) over the same cmdlets and organization.
//! - `login` — the Entra token endpoint and the tokens both services check.
//! - `graph` — Intune `managedDevices`, group members and users, with OData options and Intune's
//!   throttling.
//! - `paging` — the opaque `$skiptoken`s of both services' `@odata.nextLink`.
//! - `org` — the organization both sides read; `dataset` — how a seed becomes one.
//! - `smtp` — the mail sink; `control` — `/_lab/…` and `LabControl`; `counters` — what was served.
//! - `malformed` — records broken on purpose in the listings, for the connector's bad-input drills.
//! - `kdc` — a real MIT KDC for tests (`TestKdc`), for the Kerberos faces.
//! - `connector_config` — the connector configuration that points at a lab; `sim` — `easgate sim`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), easgate_lab::LabError> {
//! let lab = easgate_lab::Lab::start(easgate_lab::LabOptions { devices: 1000, ..Default::default() }).await?;
//! println!("Exchange at {}, Graph at {}", lab.cas_urls()[0], lab.graph_url());
//! lab.control().stop_cas(1).await?;
//! lab.shutdown().await;
//! # Ok(()) }
//! ```

mod connector_config;
mod control;
mod counters;
mod dataset;
mod exchange;
mod graph;
pub mod kdc;
mod login;
mod malformed;
mod org;
mod paging;
mod random;
mod server;
mod sim;
mod smtp;
mod tls;
mod utc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use connector_config::{
    ExchangeApi, SecretSource, connector_config, powershell_connector_config,
};
pub use control::{LabControl, LabInfo};
pub use counters::{CmdletCounters, CounterSnapshot, ExchangeCounters, GraphCounters};
pub use exchange::cost::{CmdletLatency, DEFAULT_CONCURRENCY, LatencyModel};
pub use exchange::faults::ExchangeFaults;
pub use exchange::powershell::{
    DEFAULT_MAX_SHELLS, ExtendedProtection, PowerShellLimits, SelectObject, UserLoadQuota,
    WindowsAuth,
};
pub use graph::faults::GraphFaults;
pub use graph::throttle::GraphLimits;
pub use login::{Audience, DEFAULT_TOKEN_LIFETIME};
pub use malformed::{Damage, Malformation, Service};
pub use org::{
    AccessLevel, AccessReason, AccessState, Characteristic, ComplianceState, DeviceTruth,
    ManagementState, NewDevices, OrgError, OwnerType, WipeRequest,
};
pub use random::Guid;
pub use server::{CasMode, CasStatus, LabError};
pub use sim::{SimArgs, run_sim};
pub use smtp::{ReceivedMail, SmtpAuth, SmtpRules};
pub use tls::TlsError;
pub use utc::Utc;

use exchange::ServerInfo;
use server::{CasSlot, Shared};

/// How to build and serve a lab. `Default` gives what `easgate sim` does without flags.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// EAS devices in the organization (over about half as many mailboxes).
    pub devices: usize,
    /// Seed of the dataset.
    pub seed: u64,
    /// CAS endpoints serving the organization (at least 1).
    pub cas: usize,
    pub latency: LatencyModel,
    /// Concurrent Exchange requests per tenant before 429.
    pub exchange_concurrency: usize,
    pub graph_limits: GraphLimits,
    /// Loopback address. Port 0: every listener on a free port; otherwise CAS endpoints on
    /// consecutive ports from this one, then Graph/login, control and SMTP.
    pub listen: SocketAddr,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// Every generated time lies before this instant; `None`: the start of the current UTC day,
    /// so that one seed gives the same organization all day while its times look recent.
    pub anchor: Option<Utc>,
    /// Serve Graph and login over TLS (`https://`), with a certificate authority generated for
    /// this lab ([`Lab::tls_ca_pem`]): what clients that insist on an https authority need.
    pub tls: bool,
    /// Serve the CAS endpoints (the REST admin API and the `/PowerShell/` face) over TLS too,
    /// with the same generated authority: `https://` CAS URLs.
    pub cas_tls: bool,
    /// The names the TLS server certificate is issued to, instead of the listen address and
    /// `localhost` (a certificate for another host, to see a client refuse it).
    pub tls_names: Option<Vec<String>>,
    /// With `cas_tls`: whether the `/PowerShell/` face checks the channel binding of an NTLM or
    /// Kerberos sign-in (IIS's `extendedProtection tokenChecking`); nothing is checked over
    /// http, as with IIS.
    pub extended_protection: ExtendedProtection,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            devices: 10_000,
            seed: 1,
            cas: 2,
            latency: LatencyModel::default(),
            exchange_concurrency: DEFAULT_CONCURRENCY,
            graph_limits: GraphLimits::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            anchor: None,
            tls: false,
            cas_tls: false,
            tls_names: None,
            extended_protection: ExtendedProtection::None,
        }
    }
}

/// A running lab. Dropping it stops every listener; `shutdown` does so and waits.
#[derive(Debug)]
pub struct Lab {
    control: LabControl,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The certificate authority of the Graph + login listener, with `tls`.
    tls_ca_pem: Option<String>,
}

/// Binds listener `offset` (`what`) under `listen`: the same address when its port is 0,
/// otherwise the port `offset` above it.
async fn bind_at(
    what: &str,
    listen: SocketAddr,
    offset: usize,
) -> Result<tokio::net::TcpListener, LabError> {
    let port = match listen.port() {
        0 => Some(0),
        p => u16::try_from(offset).ok().and_then(|o| p.checked_add(o)),
    };
    let Some(port) = port else {
        return Err(LabError::Bind {
            what: what.to_owned(),
            addr: listen,
            source: std::io::Error::other(format!("no port {offset} above {}", listen.port())),
        });
    };
    server::bind(what, SocketAddr::new(listen.ip(), port)).await
}

impl Lab {
    /// Generates the organization and starts every listener.
    pub async fn start(opts: LabOptions) -> Result<Lab, LabError> {
        if !opts.listen.ip().is_loopback() {
            return Err(LabError::NotLoopback(opts.listen.ip()));
        }
        let cas_count = opts.cas.max(1);
        // Bind everything first: the URLs must be known before the shared state is built.
        let mut cas_listeners = Vec::with_capacity(cas_count);
        for i in 0..cas_count {
            cas_listeners.push(bind_at(&format!("CAS {i}"), opts.listen, i).await?);
        }
        let graph_listener = bind_at("Graph", opts.listen, cas_count).await?;
        let control_listener = bind_at("control", opts.listen, cas_count + 1).await?;
        let smtp_listener = bind_at("SMTP", opts.listen, cas_count + 2).await?;
        let local = |l: &tokio::net::TcpListener| l.local_addr().expect("bound socket");
        let tls = if opts.tls || opts.cas_tls {
            let names = opts
                .tls_names
                .clone()
                .unwrap_or_else(|| vec![opts.listen.ip().to_string(), "localhost".to_owned()]);
            Some(tls::LabTls::generate(names)?)
        } else {
            None
        };
        let cas_scheme = if opts.cas_tls { "https" } else { "http" };

        let anchor = opts.anchor.unwrap_or_else(|| Utc::now().day_start());
        let spec = dataset::DatasetSpec {
            seed: opts.seed,
            devices: opts.devices,
            anchor,
        };
        // Generation is CPU-bound (about a second for 100 000 devices in a debug build).
        let org = tokio::task::spawn_blocking(move || dataset::generate(&spec))
            .await
            .expect("dataset generation panicked");

        let mut ids = random::Rng::stream(opts.seed, 0xca5);
        let servers: Vec<ServerInfo> = cas_listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ServerInfo {
                name: format!("CAS{:02}", i + 1),
                fqdn: format!("CAS{:02}.{}", i + 1, org.tenant.domain),
                base_url: format!("{cas_scheme}://{}", local(l)),
                guid: ids.guid(),
            })
            .collect();
        let tokens = login::TokenStore::new(opts.seed, opts.token_lifetime);
        let exchange_token = tokens.issue(Audience::Exchange, false);
        let shared = Arc::new(Shared {
            tenant: org.tenant.clone(),
            tokens,
            pages: paging::PageTokens::new(opts.seed),
            latency: RwLock::new(opts.latency.clone()),
            gate: exchange::cost::Gate::new(opts.exchange_concurrency),
            timer: exchange::timer::PreciseTimer::new(),
            throttle: graph::throttle::Throttle::new(opts.graph_limits),
            graph_faults: Default::default(),
            exchange_faults: Default::default(),
            malformed: Default::default(),
            counters: counters::Counters::new(cas_count),
            cas: cas_listeners
                .iter()
                .map(|l| CasSlot::new(local(l)))
                .collect(),
            servers,
            cas_tls: tls
                .as_ref()
                .filter(|_| opts.cas_tls)
                .map(|t| t.acceptor.clone()),
            graph_url: format!(
                "{}://{}",
                if opts.tls { "https" } else { "http" },
                local(&graph_listener)
            ),
            control_url: format!("http://{}", local(&control_listener)),
            smtp_addr: local(&smtp_listener),
            smtp: smtp::SmtpSlot::new(local(&smtp_listener)),
            mail: smtp::MailStore::new(),
            settings_guid: ids.guid(),
            exchange_token,
            arrivals: Mutex::new(None),
            powershell: exchange::powershell::PowerShellState::new(
                &org.tenant.domain,
                opts.seed,
                exchange::powershell::Expected::new(
                    opts.extended_protection,
                    tls.as_ref()
                        .filter(|_| opts.cas_tls)
                        .map(|t| t.end_point_binding.as_slice()),
                ),
            ),
            org: RwLock::new(org),
        });
        for (i, listener) in cas_listeners.into_iter().enumerate() {
            server::start_cas(&shared, i, Some(listener)).await?;
        }
        smtp::start(&shared, Some(smtp_listener)).await?;
        let control = LabControl {
            shared: shared.clone(),
        };
        let tasks = vec![
            server::serve_with(
                graph_listener,
                graph::router(shared.clone()),
                tls.as_ref()
                    .filter(|_| opts.tls)
                    .map(|t| t.acceptor.clone()),
            ),
            server::serve(control_listener, control::router(control.clone())),
        ];
        Ok(Lab {
            control,
            tasks: Mutex::new(tasks),
            tls_ca_pem: tls.map(|t| t.ca_pem),
        })
    }

    /// Control of this lab (also reachable over HTTP at `control_url()/_lab/…`).
    pub fn control(&self) -> &LabControl {
        &self.control
    }

    fn shared(&self) -> &Shared {
        &self.control.shared
    }

    /// Base URLs of the CAS endpoints (`http://127.0.0.1:port`); the first is the primary.
    pub fn cas_urls(&self) -> Vec<String> {
        self.shared()
            .servers
            .iter()
            .map(|s| s.base_url.clone())
            .collect()
    }

    /// Base URL of Graph (`…/v1.0/…` below it).
    pub fn graph_url(&self) -> &str {
        &self.shared().graph_url
    }

    /// Base URL of the login endpoint (`…/{tenant}/oauth2/v2.0/token` below it).
    pub fn login_url(&self) -> &str {
        &self.shared().graph_url
    }

    /// With `LabOptions::tls` or `cas_tls`, the PEM of the certificate authority that signed
    /// the listeners' certificate: what a client must trust.
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls_ca_pem.as_deref()
    }

    /// Base URL of the control API (`…/_lab/…` below it).
    pub fn control_url(&self) -> &str {
        &self.shared().control_url
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        self.shared().smtp_addr
    }

    /// The tenant GUID.
    pub fn tenant_id(&self) -> String {
        self.shared().tenant.tenant_id.to_string()
    }

    /// The tenant's initial domain (`contoso.onmicrosoft.com`), accepted wherever the GUID is.
    pub fn tenant_domain(&self) -> &str {
        &self.shared().tenant.initial_domain
    }

    pub fn client_id(&self) -> String {
        self.shared().tenant.client_id.to_string()
    }

    pub fn client_secret(&self) -> &str {
        &self.shared().tenant.client_secret
    }

    /// Makes the remote PowerShell face accept Kerberos (`Authorization: Negotiate` or
    /// `Kerberos`) besides Basic, with the service keys in `keytab` (the SPN the clients ask
    /// for must be in it: `kdc::TestKdc::keytab` holds `HTTP/localhost@LAB.EASGATE.TEST`). A
    /// ticket for the principal `svc-easgate@REALM` is the service account. The keytab is
    /// found through the process-wide `KRB5_KTNAME`, which this sets.
    pub fn enable_powershell_kerberos(&self, keytab: &Path) -> Result<(), String> {
        self.shared().powershell.enable_kerberos(keytab)
    }

    /// The account of the remote PowerShell face (`/PowerShell/` on every CAS): user
    /// (`svc-easgate@contoso.com`) and password, for Basic authentication.
    pub fn powershell_account(&self) -> (String, String) {
        let (u, p) = self.shared().powershell.account();
        (u.to_owned(), p.to_owned())
    }

    /// URLs of the remote PowerShell face, one per CAS (`http://127.0.0.1:port/PowerShell/`).
    pub fn powershell_urls(&self) -> Vec<String> {
        self.cas_urls()
            .into_iter()
            .map(|u| format!("{u}/PowerShell/"))
            .collect()
    }

    /// A non-expiring Exchange admin API token, for configurations with a static bearer token.
    pub fn exchange_token(&self) -> &str {
        &self.shared().exchange_token
    }

    /// A connector configuration pointing at this lab, its secret taken from `secret`.
    pub fn connector_config(&self, secret: &SecretSource) -> String {
        connector_config::connector_config(&self.control.info(), "contoso", secret)
    }

    /// Writes `connector_config` to `path`, the client secret to `path` with extension
    /// `.secret` (mode 0600); returns the secret's path.
    pub fn write_connector_config(&self, path: &Path) -> Result<PathBuf, LabError> {
        connector_config::write(&self.control.info(), "contoso", path)
    }

    fn abort_all(&self) {
        for t in self.tasks.lock().expect("lab tasks").iter() {
            t.abort();
        }
        for slot in &self.shared().cas {
            slot.abort();
        }
        self.shared().smtp.abort();
        if let Some(a) = self.shared().arrivals.lock().expect("arrivals").take() {
            a.abort();
        }
    }

    /// Stops every listener and waits until their sockets are closed.
    pub async fn shutdown(self) {
        for i in 0..self.shared().cas.len() {
            // Only fails for an index out of range, which this loop can't produce.
            let _ = server::stop_cas(self.shared(), i).await;
        }
        smtp::stop(self.shared()).await;
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().expect("lab tasks"));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        self.abort_all();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.abort_all();
    }
}
