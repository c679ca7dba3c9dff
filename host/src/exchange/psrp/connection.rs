//! The HTTP connections of remote PowerShell under Kerberos or NTLM. WS-Management binds the
//! security context to the connection: a client authenticates once on a connection (an empty
//! POST with `Authorization: Negotiate <AP-REQ>`, answered with the CAS's AP-REP, which is
//! checked; or NTLM's two round trips, NEGOTIATE → 401 with the CHALLENGE → AUTHENTICATE → 200),
//! then seals every envelope on that same connection and sends no more `Authorization`. reqwest
//! hides its connections, so this transport holds its own (hyper's HTTP/1.1 client
//! connections over tokio, with rustls on HTTPS), each with its context.
//!
//! Per CAS, idle authenticated connections wait in a small stack; a request takes one (or
//! opens and authenticates a new one), so there are as many as requests run at once (the
//! client's `parallel_commands` bounds them). A connection the CAS closed while idle is
//! dropped and the request goes on another; one that fails during a request fails that
//! request, as a dropped connection does under Basic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::sealed;
use super::{binding, kerberos, ntlm};

/// The scheme of `Authorization`/`WWW-Authenticate`. IIS's Windows authentication (the
/// Exchange PowerShell virtual directory) offers `Negotiate`, which takes a bare Kerberos
/// token or a bare NTLM message as well as SPNEGO; the sealed bodies then name the SPNEGO
/// protocol, as WinRM clients do for both.
const SCHEME: &str = "Negotiate";
const PROTOCOL: &str = "application/HTTP-SPNEGO-session-encrypted";

/// An answer, unsealed.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum Trouble {
    /// No connection to the CAS: nothing was sent.
    Connect(String),
    /// The connection failed during the request: it may have been applied.
    Broken(String),
    /// Sign-in failed, explained for the admin (the KDC, the password, the SPN…).
    SignIn(String),
}

/// How the connections sign in.
#[derive(Debug)]
pub enum SignIn {
    Kerberos(kerberos::Settings),
    Ntlm(ntlm::Settings),
}

impl SignIn {
    /// The mechanism's name, for messages.
    pub fn mechanism(&self) -> &'static str {
        match self {
            SignIn::Kerberos(_) => "Kerberos",
            SignIn::Ntlm(_) => "NTLM",
        }
    }
}

/// A connection's established context, boxed: sspi's states are large (NTLM's about 1 KiB,
/// Kerberos' about half) and unequal, and a connection holds one for its whole life.
enum Context {
    Kerberos(Box<kerberos::Context>),
    Ntlm(Box<ntlm::Context>),
}

impl Context {
    fn seal(&mut self, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        match self {
            Context::Kerberos(c) => c.seal(plain),
            Context::Ntlm(c) => c.seal(plain),
        }
    }

    fn unseal(&mut self, header: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Context::Kerberos(c) => c.unseal(header, data),
            Context::Ntlm(c) => c.unseal(header, data),
        }
    }
}

/// One authenticated connection.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    ctx: Context,
}

/// The authenticated connections of one organization's remote PowerShell.
pub struct Connections {
    sign_in: SignIn,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_idle: usize,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("sign_in", &self.sign_in)
            .finish_non_exhaustive()
    }
}

/// A CAS URL's parts.
struct Target {
    https: bool,
    host: String,
    port: u16,
    /// `host[:port]` for the `Host` header.
    authority: String,
    path: String,
}

fn target(cas: &str) -> Result<Target, String> {
    let u = url::Url::parse(cas).map_err(|e| format!("`{cas}` is not a URL: {e}"))?;
    let https = match u.scheme() {
        "https" => true,
        "http" => false,
        s => return Err(format!("`{cas}`: scheme {s} is not http(s)")),
    };
    let host = u
        .host_str()
        .ok_or(format!("`{cas}` has no host"))?
        .to_owned();
    let port = u
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut path = u.path().to_owned();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(Target {
        https,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        authority,
        path,
    })
}

impl Connections {
    pub fn new(sign_in: SignIn, http: &crate::net::HttpSettings, max_idle: usize) -> Connections {
        Connections {
            sign_in,
            connect_timeout: http.connect_timeout,
            request_timeout: http.request_timeout,
            max_idle,
            tls: http.tls_config(),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// POSTs `envelope` to `cas`, sealed, on an authenticated connection; the answer unsealed.
    pub async fn post(&self, cas: &str, envelope: &str) -> Result<Reply, Trouble> {
        loop {
            let idle = self
                .idle
                .lock()
                .expect("not poisoned")
                .get_mut(cas)
                .and_then(Vec::pop);
            let (mut conn, reused) = match idle {
                Some(c) if !c.sender.is_closed() => (c, true),
                Some(_) => continue,
                None => match Box::pin(self.open(cas)).await? {
                    Ok(c) => (c, false),
                    // The CAS answered the sign-in with something to report (a 404…).
                    Err(reply) => return Ok(reply),
                },
            };
            match self.exchange(&mut conn, cas, envelope).await {
                // A context the CAS no longer knows (it restarted): sign in again.
                Ok(reply) if reply.status == 401 && reused => continue,
                Ok(reply) => {
                    if !conn.sender.is_closed() {
                        let mut idle = self.idle.lock().expect("not poisoned");
                        let stack = idle.entry(cas.to_owned()).or_default();
                        if stack.len() < self.max_idle {
                            stack.push(conn);
                        }
                    }
                    return Ok(reply);
                }
                // The CAS closed the idle connection as the request went out: another one.
                Err((e, true)) if reused => {
                    tracing::debug!(cas, "an idle authenticated connection was closed: {e}");
                    continue;
                }
                Err((e, _)) => return Err(Trouble::Broken(e)),
            }
        }
    }

    /// The mechanism's name, for messages.
    pub fn mechanism(&self) -> &'static str {
        self.sign_in.mechanism()
    }

    /// Drops the idle connections (on shutdown).
    pub fn clear(&self) {
        self.idle.lock().expect("not poisoned").clear();
    }

    /// Opens a connection to `cas` and authenticates on it; the CAS's answer instead when it
    /// was neither a success nor a refusal of the credentials.
    async fn open(&self, cas: &str) -> Result<Result<Conn, Reply>, Trouble> {
        let t = target(cas).map_err(Trouble::Connect)?;
        let (mut sender, binding) = self.connect(cas, &t).await?;
        let binding = binding.as_deref();
        let ctx = match &self.sign_in {
            // Kerberos goes unbound: with a binding, sspi 0.23.1 adds the AP-options flag
            // KERB_AP_OPTIONS_CBT to the authenticator as 2 bytes where MS-KILE, MIT and Heimdal
            // use a 32-bit little-endian value, and MIT's acceptor refuses such a ticket outright
            // (KRB5KRB_AP_ERR_MSG_TYPE), Extended Protection or not: binding would break
            // Kerberos over https where it works today. See `extended_protection_hint`.
            SignIn::Kerberos(s) => self.kerberos(&mut sender, &t, cas, s).await?,
            SignIn::Ntlm(s) => self.ntlm(&mut sender, &t, cas, s, binding).await?,
        };
        Ok(ctx.map(|ctx| Conn { sender, ctx }))
    }

    /// An empty POST carrying `token` in `Authorization`.
    async fn authorize(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        t: &Target,
        token: &[u8],
    ) -> Result<(u16, hyper::HeaderMap, Bytes), Trouble> {
        let token = base64::engine::general_purpose::STANDARD.encode(token);
        let request = hyper::Request::post(&t.path)
            .header(header::HOST, &t.authority)
            .header(header::AUTHORIZATION, format!("{SCHEME} {token}"))
            .header(header::CONTENT_LENGTH, "0")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        self.send(sender, request)
            .await
            .map_err(|(e, _)| Trouble::Broken(e))
    }

    /// Kerberos on a new connection: the AP-REQ, then the CAS's AP-REP checked.
    async fn kerberos(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        t: &Target,
        cas: &str,
        s: &kerberos::Settings,
    ) -> Result<Result<Context, Reply>, Trouble> {
        let spn = s.spn_for(cas);
        let (ctx, ap_req) = kerberos::Context::start(s, spn.clone())
            .await
            .map_err(|f| Trouble::SignIn(f.explain(cas, s, &spn)))?;
        let (status, headers, body) = self.authorize(sender, t, &ap_req).await?;
        match status {
            200 => {}
            401 if !offers_windows(&offered(&headers)) => {
                return Err(Trouble::SignIn(format!(
                    "{cas} does not offer Kerberos (its 401 offers: {}): turn on Windows \
                     authentication on the CAS's PowerShell virtual directory \
                     (Set-PowerShellVirtualDirectory -WindowsAuthentication $true), or change \
                     exchange.auth to a kind the CAS offers",
                    shown(&offered(&headers))
                )));
            }
            401 => {
                return Err(Trouble::SignIn(format!(
                    "{cas} refused the Kerberos ticket of `{}@{}` for `{spn}`: check that the \
                     CAS's PowerShell virtual directory has Windows authentication (Kerberos) \
                     on, that `{spn}` is the CAS's SPN (exchange.auth.spn), and that the \
                     account may use remote PowerShell{}",
                    s.account,
                    s.realm,
                    unbound_kerberos_hint(cas)
                )));
            }
            _ => return Ok(Err(unexpected(status, &headers, &body))),
        }
        let reply = server_token(&headers, cas)?;
        let ctx = ctx
            .finish(reply)
            .await
            .map_err(|f| Trouble::SignIn(f.explain(cas, s, &spn)))?;
        tracing::debug!(cas, %spn, "Kerberos connection authenticated");
        Ok(Ok(Context::Kerberos(Box::new(ctx))))
    }

    /// NTLM on a new connection: NEGOTIATE, the CAS's CHALLENGE in its 401, AUTHENTICATE (bound
    /// to the TLS channel, over https), 200.
    async fn ntlm(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        t: &Target,
        cas: &str,
        s: &ntlm::Settings,
        binding: Option<&[u8]>,
    ) -> Result<Result<Context, Reply>, Trouble> {
        let failed = |e: String| Trouble::SignIn(format!("NTLM sign-in for {cas}: {e}"));
        let (mut ctx, negotiate) = ntlm::Context::start(s, binding).map_err(failed)?;
        let (status, headers, body) = self.authorize(sender, t, &negotiate).await?;
        match status {
            401 => {}
            200 => {
                return Err(failed(
                    "the CAS accepted the NTLM negotiation without a challenge, so no key \
                     was agreed to seal the envelopes with"
                        .into(),
                ));
            }
            _ => return Ok(Err(unexpected(status, &headers, &body))),
        }
        let Some(challenge) = ntlm_challenge(&headers) else {
            return Err(Trouble::SignIn(ntlm::not_offered(cas, &offered(&headers))));
        };
        let authenticate = ctx.respond(&challenge).map_err(failed)?;
        let (status, headers, body) = self.authorize(sender, t, &authenticate).await?;
        match status {
            200 => {
                tracing::debug!(cas, "NTLM connection authenticated");
                Ok(Ok(Context::Ntlm(Box::new(ctx))))
            }
            401 => Err(Trouble::SignIn(ntlm::refused(cas, &s.username))),
            _ => Ok(Err(unexpected(status, &headers, &body))),
        }
    }

    /// A TCP connection to the CAS (under TLS for https://), ready for HTTP/1.1, and over TLS
    /// the connection's channel binding ([`binding::tls_server_end_point`] of the certificate
    /// the CAS showed on this very connection: the sign-in goes over it, and IIS checks the
    /// binding against its own end of it).
    async fn connect(
        &self,
        cas: &str,
        t: &Target,
    ) -> Result<(http1::SendRequest<Full<Bytes>>, Option<Vec<u8>>), Trouble> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| {
            Trouble::Connect(format!(
                "connecting to {}:{} timed out ({:?}, network.connect_timeout)",
                t.host, t.port, self.connect_timeout
            ))
        })?
        .map_err(|e| Trouble::Connect(format!("connecting to {}:{}: {e}", t.host, t.port)))?;
        let _ = tcp.set_nodelay(true);
        let sender = if t.https {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| Trouble::Connect(format!("`{}` is not a TLS name: {e}", t.host)))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| tls_problem(cas, &t.host, &e))?;
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first());
            let binding = match leaf.map(|c| binding::tls_server_end_point(c)) {
                Some(Ok(b)) => Some(b),
                // Signing in unbound still works where Extended Protection is off or `Allow`.
                Some(Err(e)) => {
                    tracing::warn!(cas, "signing in without channel binding: {e}");
                    None
                }
                None => None,
            };
            (handshake(tls).await?, binding)
        } else {
            (handshake(tcp).await?, None)
        };
        Ok(sender)
    }

    /// One sealed request on an authenticated connection. On failure, whether the connection
    /// was found closed (so that another may be tried).
    async fn exchange(
        &self,
        conn: &mut Conn,
        cas: &str,
        envelope: &str,
    ) -> Result<Reply, (String, bool)> {
        let t = target(cas).map_err(|e| (e, false))?;
        let (head, data) = conn.ctx.seal(envelope.as_bytes()).map_err(|e| (e, false))?;
        let body = sealed::frame(PROTOCOL, envelope.len(), &head, &data);
        let request = hyper::Request::post(&t.path)
            .header(header::HOST, &t.authority)
            .header(header::CONTENT_TYPE, sealed::content_type(PROTOCOL))
            .header(header::CONTENT_LENGTH, body.len())
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let (status, headers, body) = self.send(&mut conn.sender, request).await?;
        let retry_after = crate::net::retry_after(&headers);
        let sealed_answer = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(sealed::is_sealed);
        let body = if sealed_answer {
            let f = sealed::unframe(&body)
                .map_err(|e| (format!("{cas} sent a malformed sealed answer: {e}"), false))?;
            let plain = conn
                .ctx
                .unseal(f.header, f.data)
                .map_err(|e| (format!("{cas}'s sealed answer: {e}"), false))?;
            if plain.len() != f.plain_len {
                return Err((
                    format!(
                        "{cas}'s sealed answer is {} bytes, it announced {}",
                        plain.len(),
                        f.plain_len
                    ),
                    false,
                ));
            }
            String::from_utf8(plain)
                .map_err(|_| (format!("{cas}'s sealed answer is not UTF-8"), false))?
        } else {
            super::answer_text(body)
        };
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    async fn send(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), (String, bool)> {
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| (format!("the connection closed: {e}"), true))?;
            let response = sender.send_request(request).await.map_err(|e| {
                let closed = e.is_closed() || e.is_incomplete_message() || e.is_canceled();
                (format!("{e}"), closed)
            })?;
            let status = response.status().as_u16();
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| (format!("reading the answer: {e}"), false))?
                .to_bytes();
            Ok::<_, (String, bool)>((status, parts.headers, body))
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| {
                (
                    format!(
                        "no answer within {:?} (network.request_timeout)",
                        self.request_timeout
                    ),
                    false,
                )
            })?
    }
}

/// An answer to a sign-in that is neither a success nor a refusal (a 404, a 503…), to report.
fn unexpected(status: u16, headers: &hyper::HeaderMap, body: &Bytes) -> Reply {
    Reply {
        status,
        retry_after: crate::net::retry_after(headers),
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

/// For an NTLM sign-in an `https://` CAS refused after a complete handshake. The sign-in
/// carries the channel binding of the TLS connection (Extended Protection, on by default since
/// Exchange 2019 CU14), so a CAS that checks it accepts it when it sees the same TLS session;
/// what remains is a TLS-terminating load balancer or proxy in front of it (SSL offloading,
/// which Microsoft does not support with Extended Protection): the binding then names the
/// proxy's certificate. Over `http://` there is no TLS channel to bind, so nothing is added.
pub(super) fn extended_protection_hint(cas: &str) -> &'static str {
    if cas.starts_with("https://") {
        "; over HTTPS the sign-in is bound to the TLS connection (Extended Protection), so if a \
         load balancer or proxy terminates TLS in front of the CAS, the binding names its \
         certificate instead of the CAS's and a CAS with Extended Protection refuses it: point \
         exchange.cas_urls at the CAS itself, or pass TLS through to it (or bridge it with the \
         CAS's own certificate), or use an http:// CAS URL, where every envelope is sealed"
    } else {
        ""
    }
}

/// For a Kerberos sign-in an `https://` CAS refused: the Kerberos sign-in carries no channel
/// binding (see [`Connections::open`]), so a virtual directory whose Extended Protection is
/// `Require` refuses it.
fn unbound_kerberos_hint(cas: &str) -> &'static str {
    if cas.starts_with("https://") {
        "; over HTTPS, a PowerShell virtual directory whose Extended Protection is `Require` \
         refuses it too (easgate's Kerberos sign-in carries no channel binding yet): use an \
         http:// CAS URL, where every envelope is sealed, or kind = \"ntlm\" in exchange.auth \
         (NTLM binds the channel), or set the directory's Extended Protection to `Allow`"
    } else {
        ""
    }
}

/// The schemes a 401 offers (`Negotiate`, `Basic realm=""`…), for messages.
/// Whether a 401's schemes include Windows authentication (`Negotiate`, `Kerberos`, `NTLM`).
pub(super) fn offers_windows(offered: &[String]) -> bool {
    offered.iter().any(|s| {
        ["negotiate", "kerberos", "ntlm"]
            .iter()
            .any(|w| s.eq_ignore_ascii_case(w))
    })
}

/// A 401's schemes for a message: `Negotiate, Basic`, or `none`.
pub(super) fn shown(offered: &[String]) -> String {
    if offered.is_empty() {
        "none".to_owned()
    } else {
        offered.join(", ")
    }
}

fn offered(headers: &hyper::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// The NTLM CHALLENGE_MESSAGE in a 401's `WWW-Authenticate: Negotiate <token>` (or `NTLM`).
fn ntlm_challenge(headers: &hyper::HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, token) = v.split_once(' ')?;
            if !(scheme.eq_ignore_ascii_case(SCHEME) || scheme.eq_ignore_ascii_case("NTLM")) {
                return None;
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .ok()?;
            raw.starts_with(ntlm::SIGNATURE).then_some(raw)
        })
}

/// The CAS's own Kerberos token (mutual authentication) from its 200's `WWW-Authenticate`.
fn server_token(headers: &hyper::HeaderMap, cas: &str) -> Result<Vec<u8>, Trouble> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, token) = v.split_once(' ')?;
            (scheme.eq_ignore_ascii_case(SCHEME) || scheme.eq_ignore_ascii_case("Kerberos")).then(
                || {
                    base64::engine::general_purpose::STANDARD
                        .decode(token.trim())
                        .ok()
                },
            )?
        })
        .ok_or_else(|| {
            Trouble::SignIn(format!(
                "{cas} accepted the Kerberos ticket but did not prove its own identity (no \
                     {SCHEME} token in WWW-Authenticate): mutual authentication is required"
            ))
        })
}

/// An HTTP/1.1 client connection over `io`, driven by a task of its own.
async fn handshake<T>(io: T) -> Result<http1::SendRequest<Full<Bytes>>, Trouble>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Trouble::Connect(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("an authenticated connection ended: {e}");
        }
    });
    Ok(sender)
}

/// A TLS failure, with the fix when it is the certificate's name. A certificate this host does
/// not accept is a setting to fix, not a CAS that is down: it fails the sign-in (reported at
/// once) instead of the connection (retried until the CAS counts as unavailable).
fn tls_problem(cas: &str, host: &str, e: &std::io::Error) -> Trouble {
    let text = e.to_string();
    if text.contains("NotValidForName") || text.contains("not valid for name") {
        Trouble::SignIn(format!(
            "the TLS certificate of {cas} is not valid for `{host}` ({text}): write the name \
             the certificate is issued to in exchange.cas_urls"
        ))
    } else if text.contains("invalid peer certificate") {
        Trouble::SignIn(format!(
            "the TLS certificate of {cas} is not trusted ({text}): if a private CA issued it, \
             name its PEM file in network.ca_file"
        ))
    } else {
        Trouble::Connect(format!("TLS with {host}: {text}"))
    }
}
