//! The CAS's remote PowerShell face: `POST /PowerShell/` (WS-Management, `application/soap+xml`)
//! with the session configuration `Microsoft.Exchange`, over the same organization as the REST
//! face, served by the same listener.
//!
//! A client creates a shell whose `creationXml` carries SESSION_CAPABILITY and
//! INIT_RUNSPACEPOOL; the shell (its id is the runspace pool id) answers on `Receive` with its
//! own capability, APPLICATION_PRIVATE_DATA and RUNSPACEPOOL_STATE Opened. Each `Command`
//! carries a CREATE_PIPELINE (continued by `Send` when fragmented): one role cmdlet with named
//! parameters, run by the lab's cmdlets a page at a time, its objects streamed as PIPELINE_OUTPUT
//! through a bounded queue that `Receive` drains (so a listing of 100 000 devices is never held
//! whole), then warnings, errors and PIPELINE_STATE. `Receive` long-polls until
//! `OperationTimeout` and then answers the `w:TimedOut` fault. `Signal` stops a pipeline,
//! `Delete` closes the shell.
//!
//! Authentication is Basic with the lab's service account (loopback HTTP), and, once
//! `Lab::enable_powershell_kerberos` gave it a keytab, Kerberos (`Negotiate`/`Kerberos`, see
//! `kerberos`): the context is bound to the connection and every envelope after it is sealed
//! (WS-Management message encryption over HTTP); plain envelopes under Kerberos are refused.
//! Over https, `LabOptions::extended_protection` checks the Windows sign-in's channel binding
//! as IIS's Extended Protection does (see `protection`).
//! Exchange's throttling: at most `max_shells_per_user` open shells (`PowerShellMaxConcurrency`,
//! 18), and optionally the user load quota (`PowerShellMaxCmdlets` per period), set through the
//! control API.

mod kerberos;
mod ntlm;
mod protection;

pub(crate) use kerberos::ConnectionAuth;
pub(crate) use protection::Expected;
pub use protection::ExtendedProtection;
mod render;
pub(crate) mod wsman;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use easgate_psrp::messages::{self, PipelineState, RunspacePoolState};
use easgate_psrp::{
    CreatePipeline, Destination, ErrorRecord, Guid, Message, MessageType, Reassembler,
    SessionCapability, Writer,
};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use tokio::sync::mpsc;

use super::{Cas, cmdlets, params};
use crate::paging::Position;
use crate::server::{CasMode, Shared};
use crate::utc::Utc;
use wsman::{Action, Fault, Request};

/// Exchange's remote PowerShell throttling, as the control API sets it (`PUT /_lab/powershell`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerShellLimits {
    /// Open shells per user (`PowerShellMaxConcurrency`); one more is refused.
    pub max_shells_per_user: usize,
    /// When set, commands per user are limited to `requests` per `seconds`
    /// (`PowerShellMaxCmdlets` / `PowerShellMaxCmdletsTimePeriod`).
    pub user_load_quota: Option<UserLoadQuota>,
}

/// `PowerShellMaxCmdlets` per `PowerShellMaxCmdletsTimePeriod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLoadQuota {
    pub requests: u32,
    pub seconds: u32,
}

/// What the `/PowerShell/` virtual directory's Windows authentication offers (IIS's
/// `windowsAuthentication` and its providers), to see a client that needs one it lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowsAuth {
    /// `Negotiate` (Kerberos or NTLM) and `Kerberos`, as Exchange sets it up.
    #[default]
    Negotiate,
    /// `Negotiate` limited to Kerberos (an NTLM-blocking policy): an NTLM NEGOTIATE_MESSAGE is
    /// answered with a plain 401, no challenge.
    KerberosOnly,
    /// Windows authentication off: the 401 offers Basic only.
    Off,
}

/// What the session offers of `Select-Object`, which clients end a listing in to ask for fewer
/// properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectObject {
    /// The command itself, any property (Exchange's session offers it beside the role's
    /// cmdlets, as implicit remoting needs it).
    #[default]
    Offered,
    /// The proxy a restricted endpoint (`RestrictedRemoteServer`) offers: `-Property` takes
    /// only `Get-Command`'s properties, others fail its ValidateSet.
    CommandPropertiesOnly,
    /// Not in the session: naming it fails as a command not found.
    Absent,
}

/// The properties the restricted proxy of `Select-Object` takes (those of `Get-Command`'s
/// output, what implicit remoting selects).
const COMMAND_PROPERTIES: [&str; 11] = [
    "ModuleName",
    "Namespace",
    "OutputType",
    "Count",
    "HelpUri",
    "Name",
    "CommandType",
    "ResolvedCommandName",
    "DefaultParameterSet",
    "CmdletBinding",
    "Parameters",
];

/// Exchange's default `PowerShellMaxConcurrency`.
pub const DEFAULT_MAX_SHELLS: usize = 18;

impl Default for PowerShellLimits {
    fn default() -> Self {
        PowerShellLimits {
            max_shells_per_user: DEFAULT_MAX_SHELLS,
            user_load_quota: None,
        }
    }
}

/// Fragments waiting for `Receive`, fed by a producer through a bounded channel.
struct Outbox {
    rx: mpsc::Receiver<Vec<u8>>,
    leftover: Option<Vec<u8>>,
}

/// Bytes of one `<rsp:Stream Name="stdout" CommandId="…">…</rsp:Stream>` around its base64.
const STREAM_ELEMENT: usize = 96;

/// Fragments a producer may queue ahead of the client (back-pressure for long listings).
const QUEUE: usize = 1024;

struct Pipeline {
    out: Arc<tokio::sync::Mutex<Outbox>>,
    /// Until the CREATE_PIPELINE is complete: its fragments so far, and the sender the producer
    /// will take.
    pending: Option<(Reassembler, mpsc::Sender<Vec<u8>>)>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Shell {
    id: String,
    cas: usize,
    user: String,
    runspace_pool: Guid,
    max_fragment: usize,
    next_object: AtomicU64,
    /// When a request last named this shell (idle shells are closed, as IIS/WinRM do).
    last_used: Mutex<Instant>,
    pool_out: Arc<tokio::sync::Mutex<Outbox>>,
    /// Keeps the pool's stream open for the shell's life.
    _pool_tx: mpsc::Sender<Vec<u8>>,
    pipelines: Mutex<HashMap<String, Pipeline>>,
}

impl Shell {
    /// The fragments of one message to the client.
    fn fragments(&self, message_type: MessageType, pipeline: Guid, body: &str) -> Vec<Vec<u8>> {
        let msg = Message::new(
            Destination::Client,
            message_type,
            self.runspace_pool,
            pipeline,
            body.as_bytes(),
        );
        let id = self.next_object.fetch_add(1, Ordering::Relaxed);
        easgate_psrp::fragment::fragment(id, &msg.encode(), self.max_fragment)
    }
}

impl Shell {
    /// Stops every pipeline: their tasks hold the shell, so a closed shell must end them.
    fn abort_pipelines(&self) {
        for (_, p) in self.pipelines.lock().expect("pipelines").drain() {
            if let Some(t) = p.task {
                t.abort();
            }
        }
    }
}

/// How long a shell may go unused before the server closes it (Exchange's `IdleTimeOut`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(900);

/// The remote PowerShell state of the whole lab: its account, limits and open shells.
pub(crate) struct PowerShellState {
    user: String,
    password: String,
    limits: Mutex<PowerShellLimits>,
    shells: Mutex<HashMap<String, Arc<Shell>>>,
    loads: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// The Kerberos acceptor once `Lab::enable_powershell_kerberos` made one.
    kerberos: Mutex<Option<Arc<kerberos::Acceptor>>>,
    /// The channel binding a Windows sign-in must carry, under Extended Protection over https.
    expected: Option<Expected>,
    windows_auth: Mutex<WindowsAuth>,
    /// What the session offers of `Select-Object`.
    select_object: Mutex<SelectObject>,
    /// Role cmdlets the account's management roles leave out (lower case): not in its session.
    role_lacks: Mutex<Vec<String>>,
}

impl PowerShellState {
    /// The service account `svc-easgate@{domain}` with a password derived from the seed, its
    /// Windows sign-in checked against `expected` (Extended Protection) when given.
    pub fn new(domain: &str, seed: u64, expected: Option<Expected>) -> Self {
        let a = crate::random::mix(seed ^ 0x5053_5250);
        let b = crate::random::mix(a);
        PowerShellState {
            user: format!("svc-easgate@{domain}"),
            password: format!("Lab-{a:016x}{b:08x}!"),
            limits: Mutex::new(PowerShellLimits::default()),
            shells: Mutex::new(HashMap::new()),
            loads: Mutex::new(HashMap::new()),
            kerberos: Mutex::new(None),
            expected,
            windows_auth: Mutex::new(WindowsAuth::default()),
            select_object: Mutex::new(SelectObject::default()),
            role_lacks: Mutex::new(Vec::new()),
        }
    }

    pub fn windows_auth(&self) -> WindowsAuth {
        *self.windows_auth.lock().expect("windows auth")
    }

    pub fn set_windows_auth(&self, offered: WindowsAuth) {
        *self.windows_auth.lock().expect("windows auth") = offered;
    }

    pub fn select_object(&self) -> SelectObject {
        *self.select_object.lock().expect("select object")
    }

    pub fn set_select_object(&self, offered: SelectObject) {
        *self.select_object.lock().expect("select object") = offered;
    }

    pub fn set_role_lacks(&self, cmdlets: &[&str]) {
        *self.role_lacks.lock().expect("role") =
            cmdlets.iter().map(|c| c.to_ascii_lowercase()).collect();
    }

    /// The role cmdlet `name`, when the account's session has it.
    fn in_role(&self, name: &str) -> Option<&'static params::Spec> {
        let lacks = self.role_lacks.lock().expect("role");
        role_spec(name).filter(|spec| !lacks.contains(&spec.name.to_ascii_lowercase()))
    }

    /// Accepts Kerberos (`Negotiate`/`Kerberos`) from now on, with the service keys of `keytab`.
    pub fn enable_kerberos(&self, keytab: &std::path::Path) -> Result<(), String> {
        let acceptor = kerberos::Acceptor::from_keytab(keytab)?;
        *self.kerberos.lock().expect("kerberos") = Some(Arc::new(acceptor));
        Ok(())
    }

    pub fn account(&self) -> (&str, &str) {
        (&self.user, &self.password)
    }

    pub fn limits(&self) -> PowerShellLimits {
        self.limits.lock().expect("limits").clone()
    }

    pub fn set_limits(&self, limits: PowerShellLimits) {
        *self.limits.lock().expect("limits") = limits;
        self.loads.lock().expect("loads").clear();
    }

    /// Open shells, over all CAS.
    pub fn open_shells(&self) -> usize {
        self.shells.lock().expect("shells").len()
    }

    /// A stopped CAS loses its shells, as a crashed server does.
    pub fn drop_cas(&self, cas: usize) {
        self.close_where(|s| s.cas == cas);
    }

    /// Closes the shells `pred` picks.
    fn close_where(&self, pred: impl Fn(&Shell) -> bool) {
        let closed: Vec<Arc<Shell>> = {
            let mut shells = self.shells.lock().expect("shells");
            let ids: Vec<String> = shells
                .values()
                .filter(|s| pred(s))
                .map(|s| s.id.clone())
                .collect();
            ids.iter().filter_map(|id| shells.remove(id)).collect()
        };
        for s in closed {
            s.abort_pipelines();
        }
    }

    fn shell(&self, id: &str, cas: usize) -> Option<Arc<Shell>> {
        let shell = self
            .shells
            .lock()
            .expect("shells")
            .get(&id.to_ascii_uppercase())
            .filter(|s| s.cas == cas)
            .cloned()?;
        *shell.last_used.lock().expect("last used") = Instant::now();
        Some(shell)
    }

    /// Counts a command of `user` against the load quota; the fault when it is exceeded.
    fn take_load(&self, user: &str) -> Result<(), Fault> {
        let Some(q) = self.limits().user_load_quota else {
            return Ok(());
        };
        let period = Duration::from_secs(u64::from(q.seconds));
        let now = Instant::now();
        let mut loads = self.loads.lock().expect("loads");
        let times = loads.entry(user.to_ascii_lowercase()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= period)
        {
            times.pop_front();
        }
        if times.len() >= q.requests as usize {
            let wait = times
                .front()
                .map_or(period, |t| period.saturating_sub(now.duration_since(*t)));
            return Err(Fault::user_load_quota(
                q.requests,
                q.seconds,
                wait.as_millis() as u64,
            ));
        }
        times.push_back(now);
        Ok(())
    }
}

fn soap(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/soap+xml;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn fault_response(f: &Fault, relates_to: &str, machine: &str) -> Response {
    soap(
        StatusCode::INTERNAL_SERVER_ERROR,
        f.to_envelope(relates_to, machine),
    )
}

/// IIS's answer to a request without valid credentials: the schemes the directory offers.
fn unauthorized(windows: WindowsAuth) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><head><title>401 - Unauthorized: Access is denied due to invalid credentials.</title></head><body><h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2></body></html>",
    )
        .into_response();
    let h = r.headers_mut();
    // IIS's Windows authentication offers both packages, Negotiate first.
    if windows != WindowsAuth::Off {
        for scheme in ["Negotiate", "Kerberos"] {
            h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        }
    }
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"\""),
    );
    r
}

/// Who sent a request: the user the cmdlets run as, and the mutual-authentication header for
/// the response when the client used Kerberos.
struct Authenticated<'a> {
    user: &'a str,
    reply: Option<HeaderValue>,
    /// Kerberos (the context now on the connection), not Basic.
    kerberos: bool,
}

/// The service account when the credentials are its own: Basic with its password, or a Kerberos
/// ticket (`Negotiate`/`Kerberos`) for a principal whose name is the account's local part
/// (`svc-easgate@REALM` is `svc-easgate@{domain}`, as an AD account's UPN and its Kerberos
/// principal are the same account).
fn authenticate<'a>(
    state: &'a PowerShellState,
    headers: &HeaderMap,
    conn: &ConnectionAuth,
) -> Option<Authenticated<'a>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    let raw = easgate_psrp::clixml::base64_decode(b64.trim())?;
    let windows = state.windows_auth();
    if windows == WindowsAuth::Off && !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    if raw.starts_with(ntlm::SIGNATURE) {
        if windows != WindowsAuth::Negotiate {
            return None;
        }
        let expected = state.expected.as_ref();
        return ntlm::authenticate(&raw, state.account(), conn, expected).then_some(
            Authenticated {
                user: &state.user,
                reply: None,
                kerberos: true,
            },
        );
    }
    if scheme.eq_ignore_ascii_case("negotiate") || scheme.eq_ignore_ascii_case("kerberos") {
        let acceptor = state.kerberos.lock().expect("kerberos").clone()?;
        let mut accepted = match acceptor.accept(&raw, state.expected.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                tracing::info!("/PowerShell/ Kerberos refused: {e}");
                return None;
            }
        };
        let local = state.user.split('@').next().unwrap_or_default();
        let (name, _realm) = accepted.principal.rsplit_once('@')?;
        if !name.eq_ignore_ascii_case(local) {
            tracing::info!(
                "/PowerShell/ Kerberos principal {} is not the service account",
                accepted.principal
            );
            return None;
        }
        conn.set(accepted.ctx);
        let reply = accepted.reply.take().map(|t| {
            HeaderValue::from_str(&format!(
                "{scheme} {}",
                easgate_psrp::clixml::base64_encode(&t)
            ))
            .expect("base64 is a valid header value")
        });
        return Some(Authenticated {
            user: &state.user,
            reply,
            kerberos: true,
        });
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    (user.eq_ignore_ascii_case(&state.user) && password == state.password).then_some(
        Authenticated {
            user: state.user.as_str(),
            reply: None,
            kerberos: false,
        },
    )
}

/// `POST /PowerShell/`.
pub(super) async fn handle(
    State(cas): State<Cas>,
    Extension(conn): Extension<ConnectionAuth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = cas.shared.clone();
    let mode = shared.cas_mode(cas.index);
    if let CasMode::Failing { status } = mode {
        shared.counters.exchange_faulted();
        return iis_error(status);
    }
    if let CasMode::Flaky {
        status,
        fail_per_mille,
        seed,
        ..
    } = mode
    {
        let n = shared.cas[cas.index]
            .flaky_draws
            .fetch_add(1, Ordering::Relaxed);
        if crate::random::mix(seed ^ crate::random::mix(n)) % 1000 < u64::from(fail_per_mille) {
            shared.counters.exchange_faulted();
            return iis_error(status);
        }
    }
    if let CasMode::Slow { extra_ms } = mode {
        tokio::time::sleep(Duration::from_millis(extra_ms)).await;
    }
    let state = &shared.powershell;
    let windows = state.windows_auth();
    if windows == WindowsAuth::Negotiate
        && let Some(challenge) = ntlm::challenge(&headers, &conn)
    {
        return challenge;
    }
    let auth = if headers.contains_key(header::AUTHORIZATION) {
        authenticate(state, &headers, &conn)
    } else if conn.established() {
        // The connection authenticated with Kerberos earlier; its sealed envelopes say who.
        Some(Authenticated {
            user: &state.user,
            reply: None,
            kerberos: true,
        })
    } else {
        None
    };
    let Some(auth) = auth else {
        shared.counters.exchange_rejected();
        return unauthorized(windows);
    };
    let mut response = if !auth.kerberos {
        respond(&shared, &cas, auth.user, &body).await
    } else if body.is_empty() {
        // An encrypting client's first request: only the authentication, no envelope yet.
        StatusCode::OK.into_response()
    } else {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/encrypted")
        {
            // WinRM with AllowUnencrypted=false (Exchange's default): over HTTP, a Kerberos
            // client must seal its envelopes.
            tracing::info!("/PowerShell/ refused a plain envelope under Kerberos over HTTP");
            shared.counters.exchange_rejected();
            return unauthorized(windows);
        }
        match conn.open(content_type, &body) {
            Ok((plain, protocol)) => {
                let r = respond(&shared, &cas, auth.user, &plain).await;
                match seal_response(&conn, &protocol, r).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("/PowerShell/ cannot seal its answer: {e}");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }
            Err(e) => {
                tracing::info!("/PowerShell/ refused a sealed envelope: {e}");
                shared.counters.exchange_rejected();
                return unauthorized(windows);
            }
        }
    };
    if let Some(reply) = auth.reply {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, reply);
    }
    response
}

/// `response` with its body sealed for the connection's client, status and headers kept.
async fn seal_response(
    conn: &ConnectionAuth,
    protocol: &str,
    response: Response,
) -> Result<Response, String> {
    let (mut parts, body) = response.into_parts();
    let plain = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let sealed = conn.seal(protocol, &plain)?;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&kerberos::encrypted_content_type(protocol))
            .map_err(|e| format!("content type: {e}"))?,
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, axum::body::Body::from(sealed)))
}

/// The WS-Management exchange of one authenticated request.
async fn respond(shared: &Arc<Shared>, cas: &Cas, user: &str, body: &[u8]) -> Response {
    let server = &shared.servers[cas.index];
    let machine = server.fqdn.clone();
    let text = String::from_utf8_lossy(body);
    let req = match wsman::parse_request(&text) {
        Ok(r) => r,
        Err(e) => return fault_response(&Fault::bad_request(e), "", &machine),
    };
    if !req.resource_uri.eq_ignore_ascii_case(wsman::RESOURCE_URI) {
        return fault_response(
            &Fault::unknown_resource(&req.resource_uri),
            &req.message_id,
            &machine,
        );
    }
    let result = match req.action {
        Action::Create => create(shared, cas, user, &req),
        Action::Receive => receive(shared, cas.index, &req).await,
        Action::Command => command(shared, cas.index, user, &req),
        Action::Send => send(shared, cas.index, &req),
        Action::Signal => signal(shared, cas.index, &req),
        Action::Delete => delete(shared, cas.index, &req),
        Action::Other => Err(Fault::action_not_supported(&req.action_uri)),
    };
    match result {
        Ok(body) => soap(
            StatusCode::OK,
            wsman::envelope(&req.action.response_uri(), &req.message_id, &body),
        ),
        Err(f) => fault_response(&f, &req.message_id, &machine),
    }
}

/// What IIS answers for a failing application pool.
fn iis_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let text = format!(
        "<html><head><title>{0} {1}</title></head><body><h1>{0} {1}</h1></body></html>",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    (status, [(header::CONTENT_TYPE, "text/html")], text).into_response()
}

fn shell_of(shared: &Shared, cas: usize, req: &Request) -> Result<Arc<Shell>, Fault> {
    let id = req.shell_id.as_deref().unwrap_or_default();
    shared
        .powershell
        .shell(id, cas)
        .ok_or_else(|| Fault::shell_not_found(id))
}

/// The largest fragment a response within `max_envelope` can carry (base64 grows it by 4/3).
fn fragment_room(max_envelope: usize) -> usize {
    (max_envelope.saturating_sub(wsman::ENVELOPE_OVERHEAD) / 4 * 3).max(1024)
}

fn create(shared: &Shared, cas: &Cas, user: &str, req: &Request) -> Result<String, Fault> {
    let shell_el = req
        .body
        .child("Shell")
        .ok_or_else(|| Fault::bad_request("the Create body has no Shell"))?;
    let creation = shell_el
        .find("creationXml")
        .ok_or_else(|| Fault::bad_request("the Shell has no creationXml"))?;
    let bytes = easgate_psrp::clixml::base64_decode(&creation.text)
        .ok_or_else(|| Fault::bad_request("creationXml is not base64"))?;
    let mut inbox = Reassembler::new(16 << 20);
    let msgs = inbox.feed(&bytes).map_err(Fault::bad_request)?;
    let mut runspace_pool = None;
    let mut got = (false, false);
    for m in msgs {
        let m = Message::decode(&m).map_err(Fault::bad_request)?;
        match m.message_type {
            MessageType::SESSION_CAPABILITY => {
                SessionCapability::parse(&m.text()).map_err(Fault::bad_request)?;
                got.0 = true;
            }
            MessageType::INIT_RUNSPACEPOOL => {
                messages::InitRunspacePool::parse(&m.text()).map_err(Fault::bad_request)?;
                got.1 = true;
            }
            _ => {}
        }
        runspace_pool = Some(m.runspace_pool_id);
    }
    let (Some(runspace_pool), (true, true)) = (runspace_pool, got) else {
        return Err(Fault::bad_request(
            "creationXml must carry SESSION_CAPABILITY and INIT_RUNSPACEPOOL",
        ));
    };
    let id = shell_el
        .attr("ShellId")
        .map(str::to_owned)
        .unwrap_or_else(|| runspace_pool.to_string())
        .to_ascii_uppercase();

    let (tx, rx) = mpsc::channel(QUEUE);
    let shell = Arc::new(Shell {
        id: id.clone(),
        cas: cas.index,
        user: user.to_owned(),
        runspace_pool,
        max_fragment: fragment_room(req.max_envelope),
        next_object: AtomicU64::new(1),
        last_used: Mutex::new(Instant::now()),
        pool_out: Arc::new(tokio::sync::Mutex::new(Outbox { rx, leftover: None })),
        _pool_tx: tx.clone(),
        pipelines: Mutex::new(HashMap::new()),
    });
    let opening = [
        (
            MessageType::SESSION_CAPABILITY,
            SessionCapability::windows_powershell().to_clixml(),
        ),
        (
            MessageType::APPLICATION_PRIVATE_DATA,
            messages::application_private_data(&[]),
        ),
        (
            MessageType::RUNSPACEPOOL_STATE,
            messages::runspace_pool_state(RunspacePoolState::Opened, None),
        ),
    ];
    for (t, body) in opening {
        for f in shell.fragments(t, Guid::NIL, &body) {
            tx.try_send(f).expect("the opening messages fit the queue");
        }
    }
    drop(tx);
    // Shells their clients abandoned no longer count.
    shared
        .powershell
        .close_where(|s| s.last_used.lock().expect("last used").elapsed() > IDLE_TIMEOUT);
    {
        let limit = shared.powershell.limits().max_shells_per_user;
        let mut shells = shared.powershell.shells.lock().expect("shells");
        let mine = shells
            .values()
            .filter(|s| s.user.eq_ignore_ascii_case(user))
            .count();
        if mine >= limit {
            return Err(Fault::max_shells(limit));
        }
        shells.insert(id.clone(), shell);
    }
    let server = &shared.servers[cas.index];
    let mut body = String::with_capacity(1024);
    body.push_str("<x:ResourceCreated><a:Address>");
    body.push_str(&server.base_url);
    body.push_str("/PowerShell/</a:Address><a:ReferenceParameters><w:ResourceURI>");
    body.push_str(wsman::RESOURCE_URI);
    body.push_str("</w:ResourceURI><w:SelectorSet><w:Selector Name=\"ShellId\">");
    body.push_str(&id);
    body.push_str("</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated><rsp:Shell><rsp:ShellId>");
    body.push_str(&id);
    body.push_str("</rsp:ShellId><rsp:ResourceUri>");
    body.push_str(wsman::RESOURCE_URI);
    body.push_str("</rsp:ResourceUri><rsp:Owner>");
    easgate_psrp::xml::escape_into(&mut body, user);
    body.push_str("</rsp:Owner><rsp:ClientIP>127.0.0.1</rsp:ClientIP><rsp:IdleTimeOut>PT900.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>");
    Ok(body)
}

async fn receive(shared: &Shared, cas: usize, req: &Request) -> Result<String, Fault> {
    let shell = shell_of(shared, cas, req)?;
    let command = req
        .body
        .find("DesiredStream")
        .and_then(|d| d.attr("CommandId"))
        .map(str::to_ascii_uppercase);
    let outbox = match &command {
        None => shell.pool_out.clone(),
        Some(c) => {
            let pipelines = shell.pipelines.lock().expect("pipelines");
            pipelines
                .get(c)
                .map(|p| p.out.clone())
                .ok_or_else(|| Fault::shell_not_found(&shell.id))?
        }
    };
    // What the envelope may spend on streams: each fragment costs its base64 and its element.
    let budget = req.max_envelope.saturating_sub(wsman::ENVELOPE_OVERHEAD);
    let cost = |f: &Vec<u8>| f.len().div_ceil(3) * 4 + STREAM_ELEMENT;
    let mut out = outbox.lock().await;
    let mut frags: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    let mut done = false;
    match out.leftover.take() {
        Some(f) => {
            size += cost(&f);
            frags.push(f);
        }
        None => match tokio::time::timeout(req.operation_timeout, out.rx.recv()).await {
            Err(_) => return Err(Fault::timed_out()),
            Ok(None) => done = true,
            Ok(Some(f)) => {
                size += cost(&f);
                frags.push(f);
            }
        },
    }
    while !done {
        match out.rx.try_recv() {
            Ok(f) if size + cost(&f) > budget => {
                out.leftover = Some(f);
                break;
            }
            Ok(f) => {
                size += cost(&f);
                frags.push(f);
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => done = true,
        }
    }
    drop(out);
    if done && let Some(c) = &command {
        // Delivered to the end: the pipeline is over (a later Signal for it is answered as done).
        shell.pipelines.lock().expect("pipelines").remove(c);
    }
    drop(shell);
    let mut body = String::with_capacity(size + 512);
    body.push_str("<rsp:ReceiveResponse>");
    for f in &frags {
        body.push_str("<rsp:Stream Name=\"stdout\"");
        if let Some(c) = &command {
            body.push_str(" CommandId=\"");
            body.push_str(c);
            body.push('"');
        }
        body.push('>');
        easgate_psrp::clixml::base64_into(&mut body, f);
        body.push_str("</rsp:Stream>");
    }
    if let Some(c) = &command {
        let state = if done { "Done" } else { "Running" };
        body.push_str("<rsp:CommandState CommandId=\"");
        body.push_str(c);
        body.push_str(
            "\" State=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/",
        );
        body.push_str(state);
        body.push_str("\"/>");
    }
    body.push_str("</rsp:ReceiveResponse>");
    Ok(body)
}

fn command(shared: &Arc<Shared>, cas: usize, user: &str, req: &Request) -> Result<String, Fault> {
    let shell = shell_of(shared, cas, req)?;
    shared.powershell.take_load(user)?;
    let line = req
        .body
        .child("CommandLine")
        .ok_or_else(|| Fault::bad_request("the Command body has no CommandLine"))?;
    let id = line
        .attr("CommandId")
        .map(str::to_owned)
        .unwrap_or_else(|| Guid::new_v4().to_string())
        .to_ascii_uppercase();
    let (tx, rx) = mpsc::channel(QUEUE);
    shell.pipelines.lock().expect("pipelines").insert(
        id.clone(),
        Pipeline {
            out: Arc::new(tokio::sync::Mutex::new(Outbox { rx, leftover: None })),
            pending: Some((Reassembler::new(16 << 20), tx)),
            task: None,
        },
    );
    if let Some(args) = line.child("Arguments") {
        feed_pipeline(shared, &shell, &id, &args.text)?;
    }
    Ok(format!(
        "<rsp:CommandResponse><rsp:CommandId>{id}</rsp:CommandId></rsp:CommandResponse>"
    ))
}

fn send(shared: &Arc<Shared>, cas: usize, req: &Request) -> Result<String, Fault> {
    let shell = shell_of(shared, cas, req)?;
    for stream in req
        .body
        .child("Send")
        .into_iter()
        .flat_map(|s| s.children_named("Stream"))
    {
        // Input for the pool itself (host responses, key exchange) is not modelled.
        if let Some(id) = stream.attr("CommandId") {
            feed_pipeline(shared, &shell, &id.to_ascii_uppercase(), &stream.text)?;
        }
    }
    Ok("<rsp:SendResponse/>".to_owned())
}

/// Adds base64 fragments to a pipeline still being created; starts it once its CREATE_PIPELINE
/// is whole.
fn feed_pipeline(
    shared: &Arc<Shared>,
    shell: &Arc<Shell>,
    id: &str,
    b64: &str,
) -> Result<(), Fault> {
    let bytes = easgate_psrp::clixml::base64_decode(b64)
        .ok_or_else(|| Fault::bad_request("a stream is not base64"))?;
    let mut pipelines = shell.pipelines.lock().expect("pipelines");
    let p = pipelines
        .get_mut(id)
        .ok_or_else(|| Fault::shell_not_found(&shell.id))?;
    let Some((inbox, _)) = p.pending.as_mut() else {
        // Pipeline input after the start: the role's cmdlets take none.
        return Ok(());
    };
    let msgs = inbox.feed(&bytes).map_err(Fault::bad_request)?;
    for m in msgs {
        let m = Message::decode(&m).map_err(Fault::bad_request)?;
        if m.message_type != MessageType::CREATE_PIPELINE {
            continue;
        }
        let create = CreatePipeline::parse(&m.text()).map_err(Fault::bad_request)?;
        let (_, tx) = p.pending.take().expect("pending");
        let job = Job {
            shared: shared.clone(),
            shell: shell.clone(),
            pipeline: m.pipeline_id,
            tx,
        };
        p.task = Some(tokio::spawn(job.run(create)));
        break;
    }
    Ok(())
}

fn signal(shared: &Shared, cas: usize, req: &Request) -> Result<String, Fault> {
    let shell = shell_of(shared, cas, req)?;
    let sig = req
        .body
        .child("Signal")
        .ok_or_else(|| Fault::bad_request("the Signal body has no Signal"))?;
    let code = sig
        .child("Code")
        .map(|c| c.text.trim().to_owned())
        .unwrap_or_default();
    let Some(id) = sig.attr("CommandId").map(str::to_ascii_uppercase) else {
        return Ok("<rsp:SignalResponse/>".to_owned());
    };
    let mut pipelines = shell.pipelines.lock().expect("pipelines");
    if code.ends_with("/terminate") {
        if let Some(p) = pipelines.remove(&id)
            && let Some(t) = p.task
        {
            t.abort();
        }
    } else if code.ends_with("ctrl_c") || code.ends_with("crtl_c") {
        // Stop it; the client then receives the Stopped state.
        if let Some(p) = pipelines.get_mut(&id) {
            let pid = id.parse().unwrap_or(Guid::NIL);
            if let Some(t) = p.task.take() {
                t.abort();
            }
            p.pending = None;
            let (tx, rx) = mpsc::channel(QUEUE);
            for f in shell.fragments(
                MessageType::PIPELINE_STATE,
                pid,
                &messages::pipeline_state(PipelineState::Stopped, None),
            ) {
                let _ = tx.try_send(f);
            }
            p.out = Arc::new(tokio::sync::Mutex::new(Outbox { rx, leftover: None }));
        }
    }
    Ok("<rsp:SignalResponse/>".to_owned())
}

fn delete(shared: &Shared, cas: usize, req: &Request) -> Result<String, Fault> {
    let shell = shell_of(shared, cas, req)?;
    shared.powershell.close_where(|s| s.id == shell.id);
    Ok(String::new())
}

/// `Set-ADServerSettings`: on-premises only (Exchange Online has no such cmdlet, so the REST face
/// does not know it); clients send `-ViewEntireForest $true` first in a session.
static AD_SERVER_SETTINGS: params::Spec = params::Spec {
    name: "Set-ADServerSettings",
    params: &[
        "ViewEntireForest",
        "RecipientViewRoot",
        "PreferredServer",
        "PreferredGlobalCatalog",
        "ConfigurationDomainController",
    ],
    mandatory: &[],
};

/// A cmdlet of the role this face serves: the lab's cmdlets and the on-premises session ones.
fn role_spec(name: &str) -> Option<&'static params::Spec> {
    cmdlets::spec(name).or_else(|| {
        AD_SERVER_SETTINGS
            .name
            .eq_ignore_ascii_case(name)
            .then_some(&AD_SERVER_SETTINGS)
    })
}

fn is_select_object(name: &str) -> bool {
    name.eq_ignore_ascii_case("Select-Object")
}

fn is_get_command(name: &str) -> bool {
    name.eq_ignore_ascii_case("Get-Command")
}

/// A pipeline's role cmdlet, and the properties of a trailing `Select-Object -Property a, b`
/// (the one other cmdlet this lab runs in a pipeline, as clients ask Exchange for fewer
/// properties); any other shape is refused as Exchange's no-language runspace refuses a script.
fn split_selection<'a>(
    commands: &[&'a easgate_psrp::Command],
) -> Result<(&'a easgate_psrp::Command, Option<Vec<String>>), Box<ErrorRecord>> {
    let refused = || {
        let text = commands
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" | ");
        Box::new(render::script_refused(&text))
    };
    match commands {
        [one] if !is_select_object(&one.name) => Ok((one, None)),
        [cmdlet, select] if !is_select_object(&cmdlet.name) && is_select_object(&select.name) => {
            let bad = |name: &str| {
                let e = super::error::CmdletError::unknown_parameter(name);
                Box::new(render::error_record(&e, "Select-Object", "", None))
            };
            let mut names = Vec::new();
            for p in &select.parameters {
                match p.name.as_deref().map(|n| n.trim_start_matches('-')) {
                    Some(n) if n.eq_ignore_ascii_case("Property") => {}
                    other => return Err(bad(other.unwrap_or("(by position)"))),
                }
                // A list's object has a `ToString` too: look for the list first.
                match (p.value.as_list(), p.value.as_str()) {
                    (None, Some(one)) => names.push(one.to_owned()),
                    (Some(items), _) => {
                        for item in items {
                            let name = item.as_str().ok_or_else(|| bad("Property"))?;
                            names.push(name.to_owned());
                        }
                    }
                    _ => return Err(bad("Property")),
                }
            }
            Ok((cmdlet, Some(names)))
        }
        _ => Err(refused()),
    }
}

/// Rows of a listing rendered per step.
const PAGE: usize = 1000;

/// One running pipeline: runs the cmdlet a page at a time and queues its messages.
struct Job {
    shared: Arc<Shared>,
    shell: Arc<Shell>,
    pipeline: Guid,
    tx: mpsc::Sender<Vec<u8>>,
}

/// What one step of a pipeline produced.
struct Step {
    fragments: Vec<Vec<u8>>,
    objects: usize,
    next: Option<Position>,
    warnings: Vec<String>,
}

impl Job {
    async fn send(&self, frags: Vec<Vec<u8>>) -> bool {
        for f in frags {
            if self.tx.send(f).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn finish(&self, state: PipelineState, error: Option<&ErrorRecord>) {
        let body = messages::pipeline_state(state, error);
        self.send(
            self.shell
                .fragments(MessageType::PIPELINE_STATE, self.pipeline, &body),
        )
        .await;
    }

    async fn run(self, create: CreatePipeline) {
        let commands: Vec<_> = create.commands().collect();
        if let Some(script) = commands.iter().find(|c| c.is_script) {
            return self
                .finish(
                    PipelineState::Failed,
                    Some(&render::script_refused(&script.name)),
                )
                .await;
        }
        let powershell = &self.shared.powershell;
        let select_object = powershell.select_object();
        let offered = select_object != SelectObject::Absent;
        if let [one] = commands.as_slice()
            && is_get_command(&one.name)
        {
            return self.get_command(one).await;
        }
        if let Some(unknown) = commands.iter().find(|c| {
            powershell.in_role(&c.name).is_none() && !(offered && is_select_object(&c.name))
        }) {
            self.shared
                .counters
                .command(self.shell.cas, &unknown.name, 0, Duration::ZERO, true);
            return self
                .finish(
                    PipelineState::Failed,
                    Some(&render::command_not_found(&unknown.name)),
                )
                .await;
        }
        let server = &self.shared.servers[self.shell.cas];
        let (command, selection) = match split_selection(&commands) {
            Ok(split) => split,
            Err(record) => return self.finish(PipelineState::Failed, Some(&record)).await,
        };
        let spec = role_spec(&command.name).expect("checked");
        if let (SelectObject::CommandPropertiesOnly, Some(names)) = (select_object, &selection)
            && let Some(other) = names
                .iter()
                .find(|n| !COMMAND_PROPERTIES.iter().any(|p| p.eq_ignore_ascii_case(n)))
        {
            self.shared
                .counters
                .command(self.shell.cas, "Select-Object", 0, Duration::ZERO, true);
            let e = super::error::CmdletError::not_in_set("Property", other, &COMMAND_PROPERTIES);
            let r = render::error_record(&e, "Select-Object", "", None);
            return self.finish(PipelineState::Failed, Some(&r)).await;
        }
        let mut raw = Map::new();
        let mut positional = 0;
        for p in &command.parameters {
            let name = match &p.name {
                Some(n) => n.trim_start_matches('-').to_owned(),
                // The role's cmdlets take `Identity` first by position.
                None if positional == 0 => {
                    positional += 1;
                    "Identity".to_owned()
                }
                None => {
                    let e = super::error::CmdletError::unknown_parameter(
                        &render::to_json(&p.value).to_string(),
                    );
                    let r = render::error_record(&e, spec.name, &server.name, None);
                    return self.finish(PipelineState::Failed, Some(&r)).await;
                }
            };
            raw.insert(name, render::to_json(&p.value));
        }
        let args = match params::bind(spec, Some(&raw)) {
            Ok(a) => a,
            Err(e) => {
                let r = render::error_record(&e, spec.name, &server.name, None);
                self.shared
                    .counters
                    .command(self.shell.cas, spec.name, 0, Duration::ZERO, true);
                return self.finish(PipelineState::Failed, Some(&r)).await;
            }
        };
        if spec.name == AD_SERVER_SETTINGS.name {
            // The session's AD scope: the lab has one forest, so accepting the switch is all.
            if let Err(e) = args.boolean("ViewEntireForest") {
                let r = render::error_record(&e, spec.name, &server.name, None);
                return self.finish(PipelineState::Failed, Some(&r)).await;
            }
            let cost = self.shared.latency().cost(spec.name, 0);
            self.shared.timer.sleep_until(Instant::now() + cost).await;
            self.shared
                .counters
                .command(self.shell.cas, spec.name, 0, cost, false);
            return self.finish(PipelineState::Completed, None).await;
        }
        let args = Arc::new(args);
        if selection.is_some() {
            self.shared.counters.selected(spec.name);
        }
        let view = Arc::new(View::new(spec.name, selection));
        let admitted = Instant::now();
        let latency = self.shared.latency();
        let mut position = Position::default();
        let mut objects = 0;
        let mut warnings = Vec::new();
        let mut failure = None;
        loop {
            let (shared, shell, args, view) = (
                self.shared.clone(),
                self.shell.clone(),
                args.clone(),
                view.clone(),
            );
            let pipeline = self.pipeline;
            let step = if spec.name.starts_with("Get-") {
                // A listing's page renders up to `PAGE` objects: off the I/O threads.
                tokio::task::spawn_blocking(move || {
                    render_step(&shared, &shell, spec, &args, &view, pipeline, position)
                })
                .await
            } else {
                // Any other cmdlet returns an object or none: a trip to the blocking pool (two
                // thread wake-ups) cost more than the cmdlet, as the REST face runs it inline.
                Ok(render_step(
                    &shared, &shell, spec, &args, &view, pipeline, position,
                ))
            };
            let step = match step {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                Err(_) => return,
            };
            objects += step.objects;
            // The model's latency runs while the objects stream: each page is due when the model
            // says the objects so far are.
            self.shared
                .timer
                .sleep_until(admitted + latency.cost(spec.name, objects))
                .await;
            if !self.send(step.fragments).await {
                return;
            }
            warnings.extend(step.warnings);
            match step.next {
                Some(p) => position = p,
                None => break,
            }
        }
        self.shared
            .timer
            .sleep_until(admitted + latency.cost(spec.name, objects))
            .await;
        self.shared.counters.command(
            self.shell.cas,
            spec.name,
            objects,
            latency.cost(spec.name, objects),
            failure.is_some(),
        );
        for w in &warnings {
            let frags = self.shell.fragments(
                MessageType::WARNING_RECORD,
                self.pipeline,
                &messages::warning_record(w),
            );
            if !self.send(frags).await {
                return;
            }
        }
        match failure {
            None => self.finish(PipelineState::Completed, None).await,
            Some(e) => {
                let target = command.get("Identity").and_then(|v| v.as_str());
                let record = render::error_record(&e, spec.name, &server.name, target);
                if render::is_terminating(&e) {
                    self.finish(PipelineState::Failed, Some(&record)).await;
                } else {
                    // Exchange's task errors are written, and the pipeline completes.
                    let frags = self.shell.fragments(
                        MessageType::ERROR_RECORD,
                        self.pipeline,
                        &record.to_clixml(),
                    );
                    if self.send(frags).await {
                        self.finish(PipelineState::Completed, None).await;
                    }
                }
            }
        }
    }
}

impl Job {
    /// `Get-Command -Name a, b [-ErrorAction SilentlyContinue]`, which the session offers beside
    /// the role's cmdlets (implicit remoting lists the commands with it): the named commands the
    /// account's session has, and a CommandNotFoundException written for each other one unless
    /// `-ErrorAction SilentlyContinue`.
    async fn get_command(&self, command: &easgate_psrp::Command) {
        let refuse = |name: &str| {
            let e = super::error::CmdletError::unknown_parameter(name);
            render::error_record(&e, "Get-Command", "", None)
        };
        let mut names = Vec::new();
        let mut quiet = false;
        for p in &command.parameters {
            match p.name.as_deref().map(|n| n.trim_start_matches('-')) {
                Some(n) if n.eq_ignore_ascii_case("Name") => {
                    match (p.value.as_list(), p.value.as_str()) {
                        (None, Some(one)) => names.push(one.to_owned()),
                        (Some(items), _) => {
                            names.extend(items.iter().filter_map(|i| i.as_str().map(str::to_owned)))
                        }
                        _ => {}
                    }
                }
                Some(n) if n.eq_ignore_ascii_case("ErrorAction") => {
                    quiet = p
                        .value
                        .as_str()
                        .is_some_and(|v| v.eq_ignore_ascii_case("SilentlyContinue"));
                }
                other => {
                    let r = refuse(other.unwrap_or("(by position)"));
                    return self.finish(PipelineState::Failed, Some(&r)).await;
                }
            }
        }
        let powershell = &self.shared.powershell;
        // Each name as the session spells the command, or missing.
        let mut infos = Vec::new();
        let mut missing = Vec::new();
        for n in &names {
            match powershell.in_role(n) {
                Some(spec) => infos.push(spec.name),
                None if is_select_object(n) || is_get_command(n) => infos.push(n.as_str()),
                None => missing.push(n.as_str()),
            }
        }
        let found = infos.len();
        let infos: Vec<serde_json::Value> = infos
            .into_iter()
            .map(|name| serde_json::json!({"Name": name, "CommandType": "Cmdlet"}))
            .collect();
        let mut frags = Vec::new();
        let mut w = Writer::with_capacity(1024);
        render::objects(
            &serde_json::to_vec(&infos).expect("JSON"),
            &[
                "System.Management.Automation.CmdletInfo",
                "System.Management.Automation.CommandInfo",
                "System.Object",
            ],
            None,
            &mut w,
            &mut |clixml| {
                frags.extend(self.shell.fragments(
                    MessageType::PIPELINE_OUTPUT,
                    self.pipeline,
                    clixml,
                ))
            },
        )
        .expect("JSON objects");
        if !quiet {
            for name in missing {
                let record = render::command_not_found_by_get_command(name);
                frags.extend(self.shell.fragments(
                    MessageType::ERROR_RECORD,
                    self.pipeline,
                    &record.to_clixml(),
                ));
            }
        }
        self.shared
            .counters
            .command(self.shell.cas, "Get-Command", found, Duration::ZERO, false);
        if self.send(frags).await {
            self.finish(PipelineState::Completed, None).await;
        }
    }
}

/// How a pipeline's objects go out: their type names, and the properties a trailing
/// `Select-Object -Property` keeps (all when `None`).
struct View {
    types: Vec<Cow<'static, str>>,
    selection: Option<Vec<String>>,
}

impl View {
    fn new(cmdlet: &str, selection: Option<Vec<String>>) -> Self {
        let types = match selection {
            Some(_) => render::selected_type_names(cmdlet)
                .into_iter()
                .map(Cow::Owned)
                .collect(),
            None => render::type_names(cmdlet)
                .into_iter()
                .map(Cow::Borrowed)
                .collect(),
        };
        View { types, selection }
    }
}

/// Runs one page of the cmdlet and renders its objects as PIPELINE_OUTPUT fragments.
fn render_step(
    shared: &Shared,
    shell: &Shell,
    spec: &'static params::Spec,
    args: &params::Args,
    view: &View,
    pipeline: Guid,
    position: Position,
) -> Result<Step, super::error::CmdletError> {
    let env = cmdlets::Env {
        servers: &shared.servers,
        server: &shared.servers[shell.cas].fqdn,
        now: Utc::now(),
        position,
        page_size: PAGE,
        settings_guid: shared.settings_guid,
    };
    let out = cmdlets::run(&shared.org, spec, args, &env)?;
    let mut fragments = Vec::with_capacity(out.count);
    let mut w = Writer::with_capacity(4096);
    let types: Vec<&str> = view.types.iter().map(|t| t.as_ref()).collect();
    let selection = view.selection.as_deref();
    render::objects(&out.value, &types, selection, &mut w, &mut |clixml| {
        fragments.extend(shell.fragments(MessageType::PIPELINE_OUTPUT, pipeline, clixml));
    })
    .expect("the lab's views are JSON arrays of objects");
    Ok(Step {
        fragments,
        objects: out.count,
        next: out.next,
        warnings: out.warnings,
    })
}
