//! Remote PowerShell: the transport of on-premises Exchange (WS-Management + MS-PSRP at a CAS's
//! `/PowerShell/`, configuration `Microsoft.Exchange`).
//!
//! [`PsrpWire`] keeps one **long-lived runspace pool per CAS**, opened on first use (a shell
//! whose `creationXml` carries SESSION_CAPABILITY and INIT_RUNSPACEPOOL, then `Receive` until
//! RUNSPACEPOOL_STATE says Opened, then `Set-ADServerSettings -ViewEntireForest $true` when
//! configured). Each cmdlet is a pipeline in that pool (as many at once as the client's
//! adaptive limit of `parallel_commands` lets through), started with [`PsrpWire::start`] and
//! read with [`PsrpWire::next`]: every `Receive`'s objects become one page, JSON text
//! `{"value":[…]}` with Exchange's property names, which the REST transport's serde models
//! decode unchanged. A listing is therefore a stream of pages whose
//! continuation ([`Running`]) is bound to the CAS it runs on: it cannot move elsewhere.
//!
//! What one attempt came to is an [`Attempt`], the same classes as the REST wire's: a page,
//! throttling (the account's shell limit, the user load quota), a failed CAS, a refused sign-in
//! or an error (an ErrorRecord as a [`CmdletFailure`], or a clear [`ExchangeError::Endpoint`]
//! for a wrong path, password or role). A pool found broken (its shell gone) is dropped and
//! reopened by the next attempt; [`PsrpWire::close`] deletes every shell, so that the account's
//! shell quota is not held by a stopped connector.
//!
//! Sign-in is HTTP Basic (over HTTPS, or HTTP to loopback, as the configuration enforces) on
//! reqwest's pooled connections, or Kerberos ([`kerberos`], Devolutions' `sspi`, tickets from
//! the realm's KDC with the account's password or its [`keytab`]) or NTLM ([`ntlm`]) on
//! connections of our own ([`connection`]): the security context is bound to its connection,
//! mutual authentication is checked (Kerberos), and every envelope is sealed with WS-Management
//! message encryption ([`sealed`]), over HTTP as over HTTPS. Over HTTPS the NTLM sign-in also
//! carries the TLS connection's channel binding ([`binding`]), which a CAS with Extended
//! Protection requires; the Kerberos one does not yet (see [`connection`]).

mod binding;
mod connection;
pub mod convert;
mod kerberos;
pub mod keytab;
mod ntlm;
pub mod objects;
pub mod sealed;
mod srv;
pub mod wsman;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easgate_psrp::messages::{self, PipelineState, RunspacePoolState};
use easgate_psrp::{
    Destination, ErrorRecord, Fragmenter, Guid, InitRunspacePool, Message, MessageType,
    Reassembler, SessionCapability,
};

use self::wsman::{Action, Answer, Fault, Target};
use super::{CmdletFailure, ExchangeError};
use crate::config::{ExchangeAuth, ExchangeConnection, Organization, Secret, SecretSource};
use crate::model::{Command, Parameters};
use crate::net::{self, HttpSettings, SetupError};

/// PSRP fragments the client sends: well under any server's `MaxEnvelopeSize` once in base64
/// (WinRM's smallest default is 150 KiB).
const MAX_FRAGMENT: usize = 32 * 1024;
/// How long the server may hold a `Receive` with nothing to say. Shorter than the HTTP
/// request timeout, so a held `Receive` is never mistaken for a dead CAS.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Held `Receive`s that came back empty before an opening pool is given up on.
const OPEN_ROUNDS: u32 = 6;

/// The code of the refusal [`PsrpWire::next`] gives for a pipeline that ended before its
/// listing did: see [`interrupted_listing`].
const INTERRUPTED: &str = "ListingInterrupted";

/// A listing whose pipeline ended early (throttled or cut off mid-stream): it cannot go on
/// where it was, and is started over, as a refused REST page link is.
pub fn interrupted_listing(e: &ExchangeError) -> Option<&CmdletFailure> {
    match e {
        ExchangeError::Cmdlet(f) if f.code == INTERRUPTED => Some(f),
        _ => None,
    }
}

/// What one attempt of a cmdlet on one CAS came to (the seam's `Attempt`, for this wire).
#[derive(Debug)]
pub enum Attempt {
    /// Objects, as JSON text `{"value":[…]}`, and the running pipeline when more may follow.
    Page {
        objects: Vec<u8>,
        next: Option<Running>,
    },
    /// Exchange throttles this account (shell limit, user load quota): wait and try again.
    Throttled {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The CAS failed; `sent`: the command may have reached it.
    CasFailed { reason: String, sent: bool },
    /// The user name or password was refused.
    Unauthorized(ExchangeError),
    /// Exchange refused the cmdlet, or the endpoint is not Exchange's remote PowerShell.
    Error(ExchangeError),
}

/// A pipeline whose output is being read: a listing's continuation. It lives on one CAS's
/// pool. Dropped before its end, it is stopped on the server (a `Signal`), so that an abandoned
/// listing does not keep a runspace busy.
#[derive(Debug, Clone)]
pub struct Running {
    inner: Arc<tokio::sync::Mutex<Pipeline>>,
    cas: String,
}

impl Running {
    /// The CAS the rest of this listing can only come from.
    pub fn cas(&self) -> &str {
        &self.cas
    }
}

#[derive(Debug)]
struct Pipeline {
    wire: Arc<Inner>,
    pool: Arc<Pool>,
    cmdlet: String,
    command_id: String,
    inbox: Reassembler,
    /// The first error record, kept until the pipeline's state says how it ended.
    error: Option<ErrorRecord>,
    finished: bool,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.finished || self.pool.broken.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (wire, pool, id) = (
            self.wire.clone(),
            self.pool.clone(),
            self.command_id.clone(),
        );
        rt.spawn(async move {
            let t = pool.target(OPERATION_TIMEOUT);
            let _ = wire
                .post(&pool.cas, wsman::signal(&t, &id, wsman::SIGNAL_TERMINATE))
                .await;
        });
    }
}

/// One open runspace pool (a WinRS shell).
#[derive(Debug)]
struct Pool {
    cas: String,
    shell_id: String,
    id: Guid,
    /// Object ids must grow across all messages sent in the pool.
    fragmenter: Mutex<Fragmenter>,
    /// The shell is gone (deleted, timed out, or the server said so): reopen.
    broken: AtomicBool,
}

impl Pool {
    fn target(&self, timeout: Duration) -> Target<'_> {
        Target {
            to: &self.cas,
            shell_id: Some(&self.shell_id),
            timeout_secs: timeout.as_secs() as u32,
        }
    }
}

/// A CAS's pool, or none yet: its lock is held while the pool opens.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Pool>>>>;

/// How many times `close` looks again for pools opened while it closed the others.
const CLOSE_PASSES: usize = 4;

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    username: String,
    /// Basic's `Authorization` value, built once (Kerberos and NTLM sign in on their own
    /// connections, `kerberos`): two envelopes a write would otherwise encode it twice.
    basic: reqwest::header::HeaderValue,
    /// Under Kerberos, the authenticated connections every envelope goes on, sealed.
    kerberos: Option<connection::Connections>,
    view_entire_forest: bool,
    /// The pool's `MaxRunspaces`. Commands in flight are bounded by the client's adaptive
    /// limit (`parallel_commands`), one permit per attempt; but a listing's pipeline keeps its
    /// runspace between its pages, while it holds no permit. Were the pool only
    /// `parallel_commands` wide, new pipelines queued on the server for a runspace would hold
    /// every permit waiting for their first output, and the listings holding the runspaces could
    /// never fetch their next page. The client keeps at most twice its limit of commands
    /// started (`run_all`'s tasks), plus a few listings: room for all of them.
    max_runspaces: i32,
    operation_timeout: Duration,
    /// How long a pipeline may go without a word (output, state) before its CAS counts as
    /// failed: the REST wire's per-request timeout, so both wires give up alike.
    silence_limit: Duration,
    /// Per CAS: the pool, behind an async lock so that one opening serves every waiter.
    pools: Mutex<HashMap<String, Slot>>,
    /// The endpoint refused `Select-Object` (a session configuration that offers the role's
    /// cmdlets alone): listings ask for every property from then on.
    selection_refused: AtomicBool,
}

/// The remote PowerShell wire of one organization; cheap to clone.
#[derive(Debug, Clone)]
pub struct PsrpWire {
    inner: Arc<Inner>,
}

/// Names a field under the organization's `exchange` in a set-up error.
type FieldAt<'a> = &'a dyn Fn(&str) -> String;

/// Each CAS URL is one the network settings allow.
fn check_cas_urls(
    x: &ExchangeConnection,
    http: &HttpSettings,
    at: FieldAt,
) -> Result<(), SetupError> {
    let sealed = x.auth.seals();
    for (i, url) in x.cas_urls.iter().enumerate() {
        // Under Kerberos every envelope is sealed (WS-Management message encryption), so
        // plain HTTP to a CAS is what WinRM itself does; Basic needs HTTPS or loopback.
        if sealed && url.starts_with("http://") {
            continue;
        }
        http.check_url(url).map_err(|message| SetupError::Url {
            field: at(&format!("cas_urls[{i}]")),
            message,
        })?;
    }
    Ok(())
}

/// The account and password the wire signs in with, and under Kerberos its connections.
fn sign_in(
    x: &ExchangeConnection,
    http: &HttpSettings,
    at: FieldAt,
    max_runspaces: usize,
) -> Result<(String, Secret, Option<connection::Connections>), SetupError> {
    match &x.auth {
        ExchangeAuth::Basic { username, password } => Ok((
            username.clone(),
            password.resolve().map_err(|source| SetupError::Secret {
                field: at("auth.password"),
                source,
            })?,
            None,
        )),
        ExchangeAuth::Kerberos {
            username,
            password,
            keytab,
            realm,
            kdc,
            spn,
        } => {
            let credential = kerberos_credential(password.as_ref(), keytab.as_deref(), at)?;
            let settings = kerberos_settings(
                username,
                realm.as_deref(),
                kdc.as_deref(),
                spn,
                credential,
                http,
                at,
            )?;
            if let kerberos::Credential::Keytab(path) = &settings.credential {
                // Read now, so that a missing or unusable keytab stops start-up; read again at
                // each sign-in, so that a keytab exported again is picked up.
                keytab::load(path, &settings.account, &settings.realm).map_err(|e| {
                    SetupError::Secret {
                        field: at("auth.keytab"),
                        source: e.into(),
                    }
                })?;
                warn_if_others_read(path);
            }
            let connections = connection::Connections::new(
                connection::SignIn::Kerberos(settings),
                http,
                max_runspaces,
            );
            // Basic's password slot: unused under Kerberos.
            Ok((username.clone(), Secret::new(""), Some(connections)))
        }
        ExchangeAuth::Ntlm { username, password } => {
            if http.proxy.is_some() {
                return Err(SetupError::Unsupported {
                    field: at("auth"),
                    message: "remote PowerShell with NTLM connects to the CAS directly; \
                              network.proxy is not used for it: remove the proxy or reach the \
                              CAS without one"
                        .into(),
                });
            }
            let password = password.resolve().map_err(|source| SetupError::Secret {
                field: at("auth.password"),
                source,
            })?;
            let connections = connection::Connections::new(
                connection::SignIn::Ntlm(ntlm::Settings {
                    username: username.clone(),
                    password: password.clone(),
                }),
                http,
                max_runspaces,
            );
            Ok((username.clone(), password, Some(connections)))
        }
        other => Err(SetupError::Unsupported {
            field: at("auth"),
            message: format!(
                "kind = \"{}\": remote PowerShell in this build signs in with \"basic\" only",
                other.kind()
            ),
        }),
    }
}

/// Kerberos acquires its ticket with the account's password or its keytab: one of them.
fn kerberos_credential(
    password: Option<&SecretSource>,
    keytab: Option<&std::path::Path>,
    at: FieldAt,
) -> Result<kerberos::Credential, SetupError> {
    match (password, keytab) {
        (Some(p), None) => p
            .resolve()
            .map(kerberos::Credential::Password)
            .map_err(|source| SetupError::Secret {
                field: at("auth.password"),
                source,
            }),
        (None, Some(k)) => Ok(kerberos::Credential::Keytab(k.to_owned())),
        _ => Err(SetupError::Unsupported {
            field: at("auth"),
            message: "Kerberos needs the account's password or its keytab, one of them (no \
                      ticket cache is read)"
                .into(),
        }),
    }
}

/// A keytab is as good as the account's password: warn when others than its owner may read it.
fn warn_if_others_read(path: &std::path::Path) {
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                keytab = %path.display(),
                "the keytab is readable by others than its owner (mode {mode:04o}): it signs in \
                 as the service account; chmod 0600 it"
            );
        }
    }
}

/// The realm (given, or the user name's domain upper-cased), the KDC and the SPN to ask a
/// ticket with.
fn kerberos_settings(
    username: &str,
    realm: Option<&str>,
    kdc: Option<&str>,
    spn: &Option<String>,
    credential: kerberos::Credential,
    http: &HttpSettings,
    at: FieldAt,
) -> Result<kerberos::Settings, SetupError> {
    let (account, realm) = crate::config::kerberos_principal(username, realm);
    let kdc = kerberos::Settings::kdc_url(kdc).map_err(|message| SetupError::Url {
        field: at("auth.kdc"),
        message,
    })?;
    if http.proxy.is_some() {
        return Err(SetupError::Unsupported {
            field: at("auth"),
            message: "remote PowerShell with Kerberos connects to the CAS directly; \
                      network.proxy is not used for it: remove the proxy or reach the CAS \
                      without one"
                .into(),
        });
    }
    Ok(kerberos::Settings {
        account,
        credential,
        realm,
        kdc,
        spn: spn.clone(),
        kdc_timeout: http.connect_timeout.max(Duration::from_secs(3)) * 2,
    })
}

/// `Basic <base64 of user:password>`, marked sensitive (kept out of logs and HPACK tables).
fn basic_authorization(username: &str, password: &Secret) -> reqwest::header::HeaderValue {
    use base64::Engine as _;
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {credentials}"))
        .expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// Why an HTTP exchange did not give an envelope to read.
type Posted = Result<Answer, Attempt>;

impl PsrpWire {
    /// From the organization's `[organization.exchange]` (`transport = "powershell"`, Basic).
    pub fn new(org: &Organization, http: &HttpSettings) -> Result<PsrpWire, SetupError> {
        let x = &org.exchange;
        let at = |f: &str| format!("organization `{}`: exchange.{f}", org.name);
        check_cas_urls(x, http, &at)?;
        let max_runspaces = x.parallel_commands.max(1) * 2 + 4;
        let (username, password, kerberos) = sign_in(x, http, &at, max_runspaces)?;
        let operation_timeout = OPERATION_TIMEOUT
            .min(http.request_timeout.saturating_sub(Duration::from_secs(5)))
            .max(Duration::from_secs(1));
        let basic = basic_authorization(&username, &password);
        Ok(PsrpWire {
            inner: Arc::new(Inner {
                http: http.client()?,
                username,
                basic,
                kerberos,
                view_entire_forest: x.view_entire_forest(),
                max_runspaces: i32::try_from(max_runspaces).unwrap_or(i32::MAX),
                operation_timeout,
                silence_limit: http.request_timeout,
                pools: Mutex::new(HashMap::new()),
                selection_refused: AtomicBool::new(false),
            }),
        })
    }

    /// Starts `command` on the CAS `cas` (its `/PowerShell/` URL), opening that CAS's pool
    /// first if needed, and reads its first page. With `properties`, its objects are cut to
    /// those on the server (`| Select-Object -Property …`) unless the endpoint refused that.
    pub async fn start(
        &self,
        cas: &str,
        command: &Command,
        properties: Option<&'static [&'static str]>,
    ) -> Attempt {
        named(
            self.start_unnamed(cas, command, properties).await,
            &command.cmdlet,
        )
    }

    async fn start_unnamed(
        &self,
        cas: &str,
        command: &Command,
        properties: Option<&'static [&'static str]>,
    ) -> Attempt {
        let mut reopened = false;
        loop {
            let pool = match self.inner.pool(cas).await {
                Ok(p) => p,
                Err(a) => return a,
            };
            let refused = || self.inner.selection_refused.load(Ordering::Relaxed);
            let selection = properties.filter(|_| !refused());
            match self.inner.launch(&pool, command, selection).await {
                // A session without `Select-Object` fails the pipeline before its first
                // object: the same command again, with every property.
                Ok(running) => match self.next(&running).await {
                    Attempt::Error(_) if selection.is_some() && refused() => {}
                    first => return first,
                },
                // The shell vanished between two commands (idle timeout, an IIS recycle):
                // one fresh pool, then the failure counts.
                Err(Launch::Gone(reason)) if !reopened => {
                    tracing::info!(cas, "runspace pool gone ({reason}); reopening");
                    reopened = true;
                }
                Err(Launch::Gone(reason)) => {
                    return Attempt::CasFailed {
                        reason: format!("runspace pool gone: {reason}"),
                        sent: false,
                    };
                }
                Err(Launch::Failed(a)) => return a,
            }
        }
    }

    /// Reads the next page of a running pipeline.
    pub async fn next(&self, running: &Running) -> Attempt {
        let cmdlet = running.inner.lock().await.cmdlet.clone();
        named(self.next_unnamed(running).await, &cmdlet)
    }

    async fn next_unnamed(&self, running: &Running) -> Attempt {
        let mut p = running.inner.lock().await;
        if p.finished {
            // Its last page was handed on with no continuation, so this is a retry after the
            // pipeline ended abnormally (throttled or cut off mid-listing): the listing must
            // start over, never end short.
            return Attempt::Error(ExchangeError::Cmdlet(Box::new(CmdletFailure {
                cmdlet: p.cmdlet.clone(),
                cas: p.pool.cas.clone(),
                status: 409,
                code: INTERRUPTED.into(),
                exception: String::new(),
                category: "OperationStopped".into(),
                message: "the pipeline streaming the listing ended before its last object".into(),
            })));
        }
        match self.inner.read_page(&mut p).await {
            Ok((objects, more)) => Attempt::Page {
                objects,
                next: more.then(|| running.clone()),
            },
            Err(a) => a,
        }
    }

    /// Runs `command` on `cas` to its end: every object, as JSON. For one-off commands and
    /// tests; the client's loop (failover, throttling) drives [`start`](Self::start) and
    /// [`next`](Self::next) instead.
    pub async fn run_to_end(
        &self,
        cas: &str,
        command: &Command,
    ) -> Result<Vec<serde_json::Value>, ExchangeError> {
        let mut out = Vec::new();
        let mut attempt = self.start(cas, command, None).await;
        loop {
            match attempt {
                Attempt::Page { objects, next } => {
                    #[derive(serde::Deserialize)]
                    struct Page {
                        value: Vec<serde_json::Value>,
                    }
                    let page: Page = serde_json::from_slice(&objects)
                        .expect("pages are written by this module as {\"value\":[…]}");
                    out.extend(page.value);
                    match next {
                        Some(r) => attempt = self.next(&r).await,
                        None => return Ok(out),
                    }
                }
                Attempt::Throttled { message, .. } => {
                    return Err(ExchangeError::Throttled {
                        cmdlet: command.cmdlet.clone(),
                        attempts: 1,
                        message,
                    });
                }
                Attempt::CasFailed { reason, .. } => {
                    return Err(ExchangeError::Endpoint {
                        cmdlet: command.cmdlet.clone(),
                        cas: cas.to_owned(),
                        problem: reason,
                    });
                }
                Attempt::Unauthorized(e) | Attempt::Error(e) => return Err(e),
            }
        }
    }

    /// Deletes every open shell (the daemon calls this on shutdown), so that the service
    /// account's `PowerShellMaxConcurrency` is not held by shells nobody uses. Returns how many
    /// were closed; a failure is logged, not fatal (the server times idle shells out).
    pub async fn close(&self) -> usize {
        let mut closed = 0;
        // A cancelled run's tasks stop at their next await, not at once: one that met the
        // first pass's deletion could still open a session while it goes on, so the pools
        // opened meanwhile get another pass (each pass waits for the openings it finds).
        for _ in 0..CLOSE_PASSES {
            let slots: Vec<_> = self
                .inner
                .pools
                .lock()
                .expect("not poisoned")
                .drain()
                .collect();
            if slots.is_empty() {
                break;
            }
            for (cas, slot) in slots {
                let Some(pool) = slot.lock().await.take() else {
                    continue;
                };
                pool.broken.store(true, Ordering::Relaxed);
                match self
                    .inner
                    .post(
                        &cas,
                        wsman::delete(&pool.target(self.inner.operation_timeout)),
                    )
                    .await
                {
                    Ok(a) if a.fault.is_none() => closed += 1,
                    Ok(a) => tracing::warn!(cas, "closing the runspace pool: {:?}", a.fault),
                    Err(a) => tracing::warn!(cas, "closing the runspace pool: {a:?}"),
                }
            }
        }
        if let Some(k) = &self.inner.kerberos {
            k.clear();
        }
        closed
    }
}

/// The session's own requests (opening, closing) fail in the name of the cmdlet that needed
/// them: errors built below an attempt say "remote PowerShell", which this replaces.
fn named(attempt: Attempt, cmdlet: &str) -> Attempt {
    let rename = |e: ExchangeError| match e {
        ExchangeError::Endpoint {
            cmdlet: c,
            cas,
            problem,
        } if c == SESSION => ExchangeError::Endpoint {
            cmdlet: cmdlet.to_owned(),
            cas,
            problem,
        },
        ExchangeError::BadResponse {
            cmdlet: c,
            endpoint,
            field,
            problem,
        } if c == SESSION => ExchangeError::BadResponse {
            cmdlet: cmdlet.to_owned(),
            endpoint,
            field,
            problem,
        },
        other => other,
    };
    match attempt {
        Attempt::Unauthorized(e) => Attempt::Unauthorized(rename(e)),
        Attempt::Error(e) => Attempt::Error(rename(e)),
        other => other,
    }
}

/// The stand-in cmdlet name of errors of the session itself (see [`named`]).
const SESSION: &str = "remote PowerShell";

/// Why a pipeline did not start.
enum Launch {
    /// The pool's shell is gone.
    Gone(String),
    Failed(Attempt),
}

impl Inner {
    fn endpoint_error(&self, cmdlet: &str, cas: &str, problem: String) -> ExchangeError {
        ExchangeError::Endpoint {
            cmdlet: cmdlet.to_owned(),
            cas: cas.to_owned(),
            problem,
        }
    }

    /// One HTTP POST of an envelope; an answer to read, or what it came to.
    async fn post(&self, cas: &str, envelope: String) -> Posted {
        let (status, retry_after, text) = match &self.kerberos {
            // Boxed: the connection's handshake (TLS, Kerberos) would otherwise sit inline in
            // every future that posts, and those nest deep in a sync's.
            Some(k) => match Box::pin(k.post(cas, &envelope)).await {
                Ok(r) => (r.status, r.retry_after, r.body),
                Err(connection::Trouble::Connect(reason)) => {
                    return Err(Attempt::CasFailed {
                        reason,
                        sent: false,
                    });
                }
                Err(connection::Trouble::Broken(reason)) => {
                    return Err(Attempt::CasFailed { reason, sent: true });
                }
                Err(connection::Trouble::SignIn(problem)) => {
                    return Err(Attempt::Unauthorized(
                        self.endpoint_error(SESSION, cas, problem),
                    ));
                }
            },
            None => self.post_basic(cas, envelope).await?,
        };
        self.answer(cas, status, retry_after, text)
    }

    /// The HTTP exchange of [`post`](Self::post) under Basic (reqwest's pooled connections).
    async fn post_basic(
        &self,
        cas: &str,
        envelope: String,
    ) -> Result<(u16, Option<Duration>, String), Attempt> {
        let response = self
            .http
            .post(cas)
            .header(reqwest::header::AUTHORIZATION, self.basic.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/soap+xml;charset=UTF-8",
            )
            .body(envelope)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Err(Attempt::CasFailed {
                    sent: !e.is_connect(),
                    reason: net::describe(&e),
                });
            }
        };
        let status = response.status().as_u16();
        let retry_after = net::retry_after(response.headers());
        let text = match response.bytes().await {
            Ok(body) => answer_text(body),
            Err(e) => {
                return Err(Attempt::CasFailed {
                    sent: true,
                    reason: net::describe(&e),
                });
            }
        };
        Ok((status, retry_after, text))
    }

    /// What an HTTP answer to an envelope came to.
    fn answer(
        &self,
        cas: &str,
        status: u16,
        retry_after: Option<Duration>,
        text: String,
    ) -> Posted {
        let cmdlet = SESSION;
        match status {
            401 if let Some(k) = &self.kerberos => {
                return Err(Attempt::Unauthorized(self.endpoint_error(
                    cmdlet,
                    cas,
                    format!(
                        "{cas} refused the {}-sealed request of `{}` on an authenticated \
                         connection: check that the account may use remote PowerShell \
                         (Set-User -RemotePowerShellEnabled $true)",
                        k.mechanism(),
                        self.username
                    ),
                )));
            }
            401 => {
                return Err(Attempt::Unauthorized(self.endpoint_error(
                    cmdlet,
                    cas,
                    format!(
                        "wrong user name or password for {cas} (user `{}`): check \
                         exchange.auth, and that Basic authentication is enabled on the CAS's \
                         PowerShell virtual directory",
                        self.username
                    ),
                )));
            }
            404 => {
                return Err(Attempt::Error(self.endpoint_error(
                    cmdlet,
                    cas,
                    format!(
                        "no /PowerShell/ endpoint at {cas} (not /wsman; the Exchange PowerShell \
                         virtual directory): check exchange.cas_urls"
                    ),
                )));
            }
            403 => {
                return Err(Attempt::Error(self.endpoint_error(
                    cmdlet,
                    cas,
                    format!(
                        "HTTP 403 from {cas}: the account `{}` may not use remote PowerShell \
                         (Set-User -RemotePowerShellEnabled $true) or the virtual directory \
                         requires SSL: {}",
                        self.username,
                        net::first_line(&text)
                    ),
                )));
            }
            _ => {}
        }
        match wsman::parse(&text) {
            Ok(answer) => Ok(answer),
            Err(_) if status == 503 && retry_after.is_some() => Err(Attempt::Throttled {
                retry_after,
                message: format!("HTTP 503 from {cas}"),
            }),
            Err(_) if status >= 500 => Err(Attempt::CasFailed {
                sent: true,
                reason: format!("HTTP {status}: {}", net::first_line(&text)),
            }),
            Err(bad) => Err(Attempt::Error(ExchangeError::BadResponse {
                cmdlet: cmdlet.into(),
                endpoint: cas.to_owned(),
                field: ".".into(),
                problem: format!("HTTP {status}, not a WS-Management answer: {bad}"),
            })),
        }
    }

    /// A fault that is not a `Receive`'s timeout.
    fn fault(&self, cmdlet: &str, cas: &str, action: Action, f: &Fault) -> Attempt {
        if convert::is_throttling(&f.message) {
            return Attempt::Throttled {
                retry_after: convert::wait_hint(&f.message),
                message: net::first_line(&f.message),
            };
        }
        Attempt::Error(self.endpoint_error(
            cmdlet,
            cas,
            format!(
                "WS-Management {} refused (fault {}): {}",
                action.name(),
                f.code,
                net::first_line(&f.message)
            ),
        ))
    }

    /// The pool of `cas`, opened if there is none (or it broke).
    async fn pool(self: &Arc<Self>, cas: &str) -> Result<Arc<Pool>, Attempt> {
        let slot = self
            .pools
            .lock()
            .expect("not poisoned")
            .entry(cas.to_owned())
            .or_default()
            .clone();
        let mut guard = slot.lock_owned().await;
        if let Some(p) = &*guard
            && !p.broken.load(Ordering::Relaxed)
        {
            return Ok(p.clone());
        }
        *guard = None;
        // The opening runs as a task of its own, holding the slot: a caller cancelled in the
        // middle (a sync stopped by the daemon's SIGTERM) must not drop a shell the server has
        // already created, which nobody could close and which would count against the
        // account's PowerShellMaxConcurrency until Exchange's idle timeout. `close` waits for
        // the slot, so it deletes the shell once the opening ends.
        let me = self.clone();
        let cas = cas.to_owned();
        tokio::spawn(async move {
            let pool = me.open(&cas).await?;
            *guard = Some(pool.clone());
            Ok(pool)
        })
        .await
        .expect("opening a runspace pool does not panic")
    }

    /// Opens a runspace pool on `cas`.
    async fn open(self: &Arc<Self>, cas: &str) -> Result<Arc<Pool>, Attempt> {
        let id = Guid::new_v4();
        let mut fragmenter = Fragmenter::new(MAX_FRAGMENT);
        let caps = Message::new(
            Destination::Server,
            MessageType::SESSION_CAPABILITY,
            id,
            Guid::NIL,
            SessionCapability::windows_powershell().to_clixml(),
        );
        let init = Message::new(
            Destination::Server,
            MessageType::INIT_RUNSPACEPOOL,
            id,
            Guid::NIL,
            InitRunspacePool {
                min_runspaces: 1,
                max_runspaces: self.max_runspaces,
                ..InitRunspacePool::default()
            }
            .to_clixml(),
        );
        let creation: Vec<u8> = [
            fragmenter.fragment(&caps.encode()),
            fragmenter.fragment(&init.encode()),
        ]
        .concat()
        .concat();
        let shell_id = id.to_string().to_ascii_uppercase();
        let target = Target {
            to: cas,
            shell_id: None,
            timeout_secs: self.operation_timeout.as_secs() as u32,
        };
        let answer = self
            .post(cas, wsman::create(&target, &shell_id, &creation))
            .await?;
        if let Some(f) = &answer.fault {
            return Err(self.fault(SESSION, cas, Action::Create, f));
        }
        let pool = Arc::new(Pool {
            cas: cas.to_owned(),
            shell_id: answer.shell_id.clone().unwrap_or(shell_id),
            id,
            fragmenter: Mutex::new(fragmenter),
            broken: AtomicBool::new(false),
        });
        tracing::info!(cas, shell = %pool.shell_id, "opening a runspace pool");
        if let Err(a) = self.await_opened(&pool).await {
            self.discard(&pool).await;
            return Err(a);
        }
        if self.view_entire_forest {
            let command = Command::new(
                "Set-ADServerSettings",
                Parameters::new().bool("ViewEntireForest", true),
            );
            if let Err(a) = self.run_quietly(&pool, &command).await {
                self.discard(&pool).await;
                return Err(a);
            }
        }
        Ok(pool)
    }

    /// Reads the pool's own stream until RUNSPACEPOOL_STATE says how the opening went.
    async fn await_opened(&self, pool: &Pool) -> Result<(), Attempt> {
        let cmdlet = SESSION;
        let mut inbox = Reassembler::default();
        for _ in 0..OPEN_ROUNDS {
            let answer = self
                .post(
                    &pool.cas,
                    wsman::receive(&pool.target(self.operation_timeout), None),
                )
                .await?;
            if let Some(f) = &answer.fault {
                if f.is_timeout() {
                    continue;
                }
                return Err(self.fault(cmdlet, &pool.cas, Action::Receive, f));
            }
            for s in &answer.streams {
                let messages = inbox.feed(&s.data).map_err(|e| {
                    Attempt::Error(self.bad(cmdlet, &pool.cas, "stdout", e.to_string()))
                })?;
                for bytes in messages {
                    let m = Message::decode(&bytes).map_err(|e| {
                        Attempt::Error(self.bad(cmdlet, &pool.cas, "message", e.to_string()))
                    })?;
                    if m.message_type != MessageType::RUNSPACEPOOL_STATE {
                        continue;
                    }
                    let (state, error) =
                        messages::parse_runspace_pool_state(&m.text()).map_err(|e| {
                            Attempt::Error(self.bad(
                                cmdlet,
                                &pool.cas,
                                "RUNSPACEPOOL_STATE",
                                e.to_string(),
                            ))
                        })?;
                    match state {
                        RunspacePoolState::Opened => return Ok(()),
                        RunspacePoolState::Broken | RunspacePoolState::Closed => {
                            let message = error
                                .as_ref()
                                .map_or_else(|| format!("{state:?}"), |e| e.message.clone());
                            if error.as_ref().is_some_and(convert::record_is_throttling) {
                                return Err(Attempt::Throttled {
                                    retry_after: convert::wait_hint(&message),
                                    message: net::first_line(&message),
                                });
                            }
                            return Err(Attempt::Error(self.endpoint_error(
                                cmdlet,
                                &pool.cas,
                                format!(
                                    "the runspace pool did not open ({state:?}): {}",
                                    net::first_line(&message)
                                ),
                            )));
                        }
                        _ => {}
                    }
                }
            }
        }
        Err(Attempt::CasFailed {
            reason: format!(
                "the runspace pool did not open within {:?}",
                self.operation_timeout * OPEN_ROUNDS
            ),
            sent: true,
        })
    }

    fn bad(&self, cmdlet: &str, cas: &str, field: &str, problem: String) -> ExchangeError {
        ExchangeError::BadResponse {
            cmdlet: cmdlet.to_owned(),
            endpoint: cas.to_owned(),
            field: field.to_owned(),
            problem,
        }
    }

    /// Deletes a pool's shell that will not be used (best effort).
    async fn discard(&self, pool: &Pool) {
        pool.broken.store(true, Ordering::Relaxed);
        let _ = self
            .post(
                &pool.cas,
                wsman::delete(&pool.target(self.operation_timeout)),
            )
            .await;
    }

    /// Runs a command whose output is not wanted (the pool's set-up) to its end.
    async fn run_quietly(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        command: &Command,
    ) -> Result<(), Attempt> {
        let mut p = match self.launch(pool, command, None).await {
            Ok(r) => Arc::try_unwrap(r.inner)
                .expect("not shared yet")
                .into_inner(),
            Err(Launch::Gone(reason)) => {
                return Err(Attempt::CasFailed {
                    reason: format!("runspace pool gone: {reason}"),
                    sent: true,
                });
            }
            Err(Launch::Failed(a)) => return Err(a),
        };
        while !p.finished {
            self.read_page(&mut p).await?;
        }
        Ok(())
    }

    /// Sends CREATE_PIPELINE for `command` into `pool`, its output cut to `selection`.
    async fn launch(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        command: &Command,
        selection: Option<&[&str]>,
    ) -> Result<Running, Launch> {
        let pipeline_id = Guid::new_v4();
        let command_id = pipeline_id.to_string().to_ascii_uppercase();
        let message = Message::new(
            Destination::Server,
            MessageType::CREATE_PIPELINE,
            pool.id,
            pipeline_id,
            convert::pipeline(command, selection).to_clixml(),
        );
        let fragments = pool
            .fragmenter
            .lock()
            .expect("not poisoned")
            .fragment(&message.encode());
        let t = pool.target(self.operation_timeout);
        let (first, rest) = fragments.split_first().expect("a message has a fragment");
        let answer = self
            .post(&pool.cas, wsman::command(&t, &command_id, first))
            .await
            .map_err(Launch::Failed)?;
        if let Some(f) = &answer.fault {
            if shell_gone(f) {
                pool.broken.store(true, Ordering::Relaxed);
                return Err(Launch::Gone(net::first_line(&f.message)));
            }
            return Err(Launch::Failed(self.fault(
                &command.cmdlet,
                &pool.cas,
                Action::Command,
                f,
            )));
        }
        let command_id = answer.command_id.unwrap_or(command_id);
        for fragment in rest {
            let answer = self
                .post(&pool.cas, wsman::send(&t, Some(&command_id), fragment))
                .await
                .map_err(Launch::Failed)?;
            if let Some(f) = &answer.fault {
                return Err(Launch::Failed(self.fault(
                    &command.cmdlet,
                    &pool.cas,
                    Action::Send,
                    f,
                )));
            }
        }
        tracing::debug!(cas = %pool.cas, cmdlet = %command.cmdlet, "pipeline started");
        Ok(Running {
            cas: pool.cas.clone(),
            inner: Arc::new(tokio::sync::Mutex::new(Pipeline {
                wire: self.clone(),
                pool: pool.clone(),
                cmdlet: command.cmdlet.clone(),
                command_id,
                inbox: Reassembler::default(),
                error: None,
                finished: false,
            })),
        })
    }

    /// `Receive`s until the pipeline has objects to hand on or has ended. Returns the page and
    /// whether more may follow.
    async fn read_page(&self, p: &mut Pipeline) -> Result<(Vec<u8>, bool), Attempt> {
        let cas = p.pool.cas.clone();
        let mut page = Page::new();
        let mut heard = tokio::time::Instant::now();
        loop {
            let answer = self.receive(p, &cas).await?;
            if let Some(f) = &answer.fault {
                self.receive_fault(p, &cas, f, heard)?;
                continue;
            }
            heard = tokio::time::Instant::now();
            let ended = self.take_streams(p, &cas, &answer.streams, &mut page)?;
            let done_by_wsman = answer
                .command_state
                .as_ref()
                .is_some_and(|(_, state)| state == wsman::STATE_DONE);
            if let Some((state, error)) = ended {
                p.finished = true;
                let error = error.or_else(|| p.error.take());
                return self
                    .pipeline_ended(&p.cmdlet, &cas, state, error, page)
                    .map(|page| (page, false));
            }
            if done_by_wsman {
                // The server ended the command without saying how (a CAS going down aborts
                // its pipelines): a failure of that CAS, after which a write may be applied.
                p.finished = true;
                return Err(Attempt::CasFailed {
                    reason: format!("{} ended without its pipeline state", p.cmdlet),
                    sent: true,
                });
            }
            // Objects are handed on as soon as a Receive brought some; a pipeline that already
            // wrote an error is read to its end first (its state says what the error meant).
            if page.count > 0 && p.error.is_none() {
                return Ok((page.finish(), true));
            }
        }
    }

    /// One `Receive` of the pipeline's output.
    async fn receive(&self, p: &mut Pipeline, cas: &str) -> Posted {
        self.post(
            cas,
            wsman::receive(&p.pool.target(self.operation_timeout), Some(&p.command_id)),
        )
        .await
        .map_err(|a| {
            p.finished = true;
            match a {
                // The pipeline was started (its Command answered): whatever became of
                // this Receive, the command may have run, a write may be applied.
                Attempt::CasFailed { reason, .. } => Attempt::CasFailed { reason, sent: true },
                other => other,
            }
        })
    }

    /// A fault answering a `Receive`. `Ok` when it only timed out and the pipeline has not yet
    /// been silent for longer than `network.request_timeout`: receive again.
    fn receive_fault(
        &self,
        p: &mut Pipeline,
        cas: &str,
        f: &Fault,
        heard: tokio::time::Instant,
    ) -> Result<(), Attempt> {
        if f.is_timeout() {
            if heard.elapsed() < self.silence_limit {
                return Ok(());
            }
            p.finished = true;
            return Err(Attempt::CasFailed {
                reason: format!(
                    "{} sent nothing for {:?} (network.request_timeout)",
                    p.cmdlet, self.silence_limit
                ),
                sent: true,
            });
        }
        p.finished = true;
        if shell_gone(f) {
            p.pool.broken.store(true, Ordering::Relaxed);
            return Err(Attempt::CasFailed {
                reason: format!("runspace pool gone: {}", net::first_line(&f.message)),
                sent: true,
            });
        }
        Err(self.fault(&p.cmdlet, cas, Action::Receive, f))
    }

    /// The PSRP messages of one `Receive`'s streams: objects onto the page, the first error
    /// record kept, warnings logged. Returns the pipeline's state when a message gave it.
    fn take_streams(
        &self,
        p: &mut Pipeline,
        cas: &str,
        streams: &[wsman::Stream],
        page: &mut Page,
    ) -> Result<Option<(PipelineState, Option<ErrorRecord>)>, Attempt> {
        let mut ended = None;
        for s in streams {
            let messages = p.inbox.feed(&s.data).map_err(|e| {
                p.finished = true;
                Attempt::Error(self.bad(&p.cmdlet, cas, "stdout", e.to_string()))
            })?;
            for bytes in messages {
                let m = Message::decode(&bytes).map_err(|e| {
                    Attempt::Error(self.bad(&p.cmdlet, cas, "message", e.to_string()))
                })?;
                let text = m.text();
                let unreadable =
                    |what: &str, e: String| Attempt::Error(self.bad(&p.cmdlet, cas, what, e));
                match m.message_type {
                    MessageType::PIPELINE_OUTPUT => {
                        if page.count > 0 {
                            page.json.push(b',');
                        }
                        objects::write_json(&text, &mut page.json)
                            .map_err(|e| unreadable("PIPELINE_OUTPUT", e.to_string()))?;
                        page.count += 1;
                    }
                    MessageType::ERROR_RECORD => {
                        let e = ErrorRecord::parse(&text)
                            .map_err(|e| unreadable("ERROR_RECORD", e.to_string()))?;
                        p.error.get_or_insert(e);
                    }
                    MessageType::WARNING_RECORD => {
                        if let Ok(w) = messages::parse_informational_record(&text) {
                            tracing::warn!(cmdlet = %p.cmdlet, cas = %cas, "Exchange warns: {w}");
                        }
                    }
                    MessageType::PIPELINE_STATE => {
                        ended = Some(
                            messages::parse_pipeline_state(&text)
                                .map_err(|e| unreadable("PIPELINE_STATE", e.to_string()))?,
                        );
                    }
                    _ => {}
                }
            }
        }
        Ok(ended)
    }

    /// The last page when the pipeline completed, else what its error record (or the lack of
    /// one) means.
    fn pipeline_ended(
        &self,
        cmdlet: &str,
        cas: &str,
        state: PipelineState,
        error: Option<ErrorRecord>,
        page: Page,
    ) -> Result<Vec<u8>, Attempt> {
        match (state, error) {
            (PipelineState::Completed, None) => Ok(page.finish()),
            (_, Some(e)) => Err(self.refusal(cmdlet, cas, &e)),
            (state, None) => Err(Attempt::Error(self.endpoint_error(
                cmdlet,
                cas,
                format!("the pipeline ended {state:?} without an error record"),
            ))),
        }
    }

    /// An error record as what it means: throttling or a refusal of the cmdlet.
    fn refusal(&self, cmdlet: &str, cas: &str, e: &ErrorRecord) -> Attempt {
        if convert::refuses_select_object(e)
            && !self.selection_refused.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                cas,
                refusal = net::first_line(&e.message),
                "this endpoint's session refuses `Select-Object -Property`: listings ask for \
                 every property from now on, which costs Exchange and easgate more"
            );
        }
        if convert::record_is_throttling(e) {
            return Attempt::Throttled {
                retry_after: convert::wait_hint(&e.message),
                message: net::first_line(&e.message),
            };
        }
        Attempt::Error(ExchangeError::Cmdlet(Box::new(convert::failure(
            cmdlet, cas, e,
        ))))
    }
}

/// A page of listed objects as the JSON the REST transport answers: `{"value":[…]}`.
struct Page {
    json: Vec<u8>,
    count: usize,
}

impl Page {
    fn new() -> Self {
        let mut json = Vec::with_capacity(4096);
        json.extend_from_slice(br#"{"value":["#);
        Page { json, count: 0 }
    }

    fn finish(mut self) -> Vec<u8> {
        self.json.extend_from_slice(b"]}");
        self.json
    }
}

/// An answer's body as text. A CAS answers in UTF-8: checked in one pass and kept where it
/// is (reqwest's `text()` walks it byte by byte and copies it, for every answer); other bytes
/// are replaced, so that an error can still quote the answer.
fn answer_text(body: hyper::body::Bytes) -> String {
    String::from_utf8(Vec::from(body))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The shell the request named is no longer on the server.
fn shell_gone(f: &Fault) -> bool {
    // 2150858843: ERROR_WSMAN_INVALID_SELECTORS-like "shell was not found".
    f.code == "2150858843" || {
        let m = f.message.to_ascii_lowercase();
        m.contains("shell was not found") || m.contains("shell not found")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_text_as_sent_and_bytes_that_are_not_utf8_are_replaced() {
        let envelope = "<s:Envelope>Gerät</s:Envelope>";
        assert_eq!(answer_text(envelope.as_bytes().to_vec().into()), envelope);
        let garbled = hyper::body::Bytes::from_static(b"HTTP 500: \xff\xfe broken");
        assert_eq!(answer_text(garbled), "HTTP 500: \u{fffd}\u{fffd} broken");
    }
}
