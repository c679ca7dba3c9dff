//! The Kerberos client of remote PowerShell: a security context for one HTTP connection,
//! established with the service account's password or its key from a keytab
//! ([`super::keytab`]) (AS and TGS exchanges with the realm's KDC, then the AP-REQ for the
//! CAS's `HTTP/<host>` and its AP-REP: mutual authentication), then used to seal and unseal that
//! connection's envelopes ([`super::sealed`] frames them).
//!
//! The protocol is Devolutions' `sspi`; it hands the KDC messages it needs sent to us, and we
//! carry them over TCP (or UDP) to the configured KDC. The handshake runs on a thread of its
//! own (its state machines need a deep stack), so the runtime's workers never block on it.

use std::path::PathBuf;
use std::time::Duration;

use picky_krb::crypto::CipherSuite;

use sspi::generator::GeneratorState;
use sspi::{
    AuthIdentityBuffers, BufferType, ClientRequestFlags, CredentialsBuffers, DataRepresentation,
    EncryptionFlags, ErrorKind, Kerberos, KerberosConfig, NetworkProtocol, NetworkRequest,
    SecurityBuffer, SecurityBufferRef, SecurityStatus, Sspi, SspiImpl,
};

/// Who signs in and where the tickets come from (from `exchange.auth`, kind `kerberos`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The account name without its realm (`svc-easgate`).
    pub account: String,
    pub credential: Credential,
    /// Upper-case realm (`CONTOSO.COM`).
    pub realm: String,
    /// Where the KDC is (`tcp://host:port`), or `None`: found at each sign-in ([`discover`]).
    pub kdc: Option<url::Url>,
    /// A fixed SPN (`HTTP/cas01.contoso.com`) instead of `HTTP/<the CAS URL's host>`.
    pub spn: Option<String>,
    /// How long one exchange with the KDC may take.
    pub kdc_timeout: Duration,
}

/// What the account's ticket is acquired with.
#[derive(Debug, Clone)]
pub enum Credential {
    Password(crate::config::Secret),
    /// A keytab, read at each sign-in: a keytab exported again after a password change is used
    /// by the next connection, without a restart.
    Keytab(PathBuf),
}

impl Settings {
    /// The KDC to ask: `explicit` (`host[:port]`, as in `kdc = "dc01.contoso.com:88"`), or
    /// `None` to find it at sign-in ([`discover`]).
    pub fn kdc_url(explicit: Option<&str>) -> Result<Option<url::Url>, String> {
        let Some(k) = explicit else {
            return Ok(None);
        };
        let with_port = if k
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            k.to_owned()
        } else {
            format!("{k}:88")
        };
        url::Url::parse(&format!("tcp://{with_port}"))
            .map(Some)
            .map_err(|e| format!("`{k}` is not a host[:port]: {e}"))
    }

    fn kdc_shown(&self) -> String {
        match &self.kdc {
            Some(u) => u.to_string(),
            None => "(found through SSPI_KDC_URL, krb5.conf, DNS SRV or the realm's name)".into(),
        }
    }

    /// The SPN for a CAS URL: the override, or `HTTP/<host>`.
    pub fn spn_for(&self, cas: &str) -> String {
        if let Some(spn) = &self.spn {
            return spn.clone();
        }
        let host = url::Url::parse(cas)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        format!(
            "HTTP/{}",
            host.trim_start_matches('[').trim_end_matches(']')
        )
    }
}

/// Why no context could be established; [`Failure::explain`] says it for an admin.
#[derive(Debug)]
pub enum Failure {
    /// The KDC could not be reached (or did not answer).
    KdcUnreachable(String),
    /// The KDC refused the password, or the keytab's key (KDC_ERR_PREAUTH_FAILED).
    Password(String),
    /// The keytab gave no key to sign in with.
    Keytab(super::keytab::KeytabError),
    /// The KDC does not know the account (KDC_ERR_C_PRINCIPAL_UNKNOWN).
    UnknownAccount(String),
    /// The KDC has no such service principal (KDC_ERR_S_PRINCIPAL_UNKNOWN).
    UnknownSpn(String),
    /// The clocks differ by more than the realm allows (KDC_ERR_SKEW / KRB_AP_ERR_SKEW).
    Skew(String),
    /// The realm is not the KDC's (KDC_ERR_WRONG_REALM).
    WrongRealm(String),
    /// Anything else the Kerberos exchange refused.
    Other(String),
}

impl Failure {
    fn from_sspi(e: sspi::Error) -> Failure {
        // The KDC's e-data (padata, in hex) says nothing to an admin.
        let text = e
            .description
            .split(". Additional error data")
            .next()
            .unwrap_or_default();
        let d = format!("{:?}: {text}", e.error_type);
        let lower = e.description.to_ascii_lowercase();
        if lower.contains("pre-authentication information was invalid") {
            Failure::Password(d)
        } else if lower.contains("client not found in kerberos database") {
            Failure::UnknownAccount(d)
        } else if lower.contains("server not found in kerberos database") {
            Failure::UnknownSpn(d)
        } else if e.error_type == ErrorKind::TimeSkew || lower.contains("clock skew") {
            Failure::Skew(d)
        } else if lower.contains("wrong realm") {
            Failure::WrongRealm(d)
        } else if e.error_type == ErrorKind::NoAuthenticatingAuthority {
            Failure::KdcUnreachable(d)
        } else {
            Failure::Other(d)
        }
    }

    /// What went wrong for `cas` and how to fix it.
    pub fn explain(&self, cas: &str, s: &Settings, spn: &str) -> String {
        let who = format!("{}@{}", s.account, s.realm);
        match self {
            Failure::KdcUnreachable(why) => format!(
                "Kerberos sign-in for {cas}: the KDC of realm {} at {} did not answer ({why}): \
                 check exchange.auth.realm and exchange.auth.kdc (\"dc01.contoso.com:88\"), and \
                 that TCP port 88 of a domain controller is reachable",
                s.realm,
                s.kdc_shown()
            ),
            Failure::Password(why) => match &s.credential {
                Credential::Password(_) => format!(
                    "Kerberos sign-in for {cas}: the KDC refused the password of `{who}` \
                     (KDC_ERR_PREAUTH_FAILED: {why}): check exchange.auth.password"
                ),
                Credential::Keytab(path) => format!(
                    "Kerberos sign-in for {cas}: the KDC refused the key of `{who}` from the \
                     keytab {} (KDC_ERR_PREAUTH_FAILED: {why}): the keytab is stale, the \
                     account's password (and key version) changed since it was exported: export \
                     it again (Windows: ktpass /princ {who} /mapuser <DOMAIN>\\{} /crypto \
                     AES256-SHA1 /ptype KRB5_NT_PRINCIPAL /pass * /out <file>; \
                     MIT: kadmin.local -q \"ktadd -k <file> -norandkey {who}\"), or check \
                     exchange.auth.keytab",
                    path.display(),
                    s.account
                ),
            },
            Failure::Keytab(e) => format!("Kerberos sign-in for {cas} as `{who}`: {e}"),
            Failure::UnknownAccount(why) => format!(
                "Kerberos sign-in for {cas}: the KDC of realm {} does not know `{who}` \
                 (KDC_ERR_C_PRINCIPAL_UNKNOWN: {why}): check exchange.auth.username and \
                 exchange.auth.realm",
                s.realm
            ),
            Failure::UnknownSpn(why) => format!(
                "Kerberos sign-in for {cas}: the KDC of realm {} has no service principal \
                 `{spn}` (KDC_ERR_S_PRINCIPAL_UNKNOWN: {why}): register it on the CAS's \
                 computer account (setspn -S {spn} <CAS>), or name the registered one with \
                 exchange.auth.spn, or use the CAS's host name in exchange.cas_urls",
                s.realm
            ),
            Failure::Skew(why) => format!(
                "Kerberos sign-in for {cas}: this machine's clock differs from the KDC's or the \
                 CAS's by more than the realm allows ({why}): synchronise it (NTP, the domain's \
                 time source)"
            ),
            Failure::WrongRealm(why) => format!(
                "Kerberos sign-in for {cas}: the KDC at {} is not the KDC of realm {} ({why}): \
                 check exchange.auth.realm and exchange.auth.kdc",
                s.kdc_shown(),
                s.realm
            ),
            Failure::Other(why) => format!("Kerberos sign-in for {cas} as `{who}` failed: {why}"),
        }
    }
}

/// A Kerberos security context, from its first token to the sealing of envelopes.
pub struct Context {
    krb: Kerberos,
    creds: Option<CredentialsBuffers>,
    spn: String,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("spn", &self.spn).finish()
    }
}

/// What the client asks of the context: the server proves itself (the AP-REP), and envelopes
/// are sealed (confidentiality, integrity, in order).
fn requirements() -> ClientRequestFlags {
    ClientRequestFlags::MUTUAL_AUTH
        | ClientRequestFlags::CONFIDENTIALITY
        | ClientRequestFlags::INTEGRITY
        | ClientRequestFlags::SEQUENCE_DETECT
        | ClientRequestFlags::REPLAY_DETECT
}

/// The stack of the thread `sspi`'s handshake runs on: its state machines are deep (and much
/// deeper unoptimized) and overflow a tokio worker's 2 MiB stack.
const HANDSHAKE_STACK: usize = 16 << 20;

/// Runs `f` on a thread of its own with [`HANDSHAKE_STACK`], without blocking the runtime.
async fn on_own_stack<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("easgate-kerberos".into())
        .stack_size(HANDSHAKE_STACK)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Failure::Other(format!("starting the Kerberos thread: {e}")))?;
    rx.await
        .unwrap_or_else(|_| Err(Failure::Other("the Kerberos thread ended early".into())))
}

impl Context {
    /// Gets the tickets for `spn` from the KDC and returns the context with its AP-REQ (the
    /// token of the `Authorization` header).
    pub async fn start(s: &Settings, spn: String) -> Result<(Context, Vec<u8>), Failure> {
        let s = s.clone();
        on_own_stack(move || Context::start_blocking(&s, spn)).await
    }

    fn start_blocking(s: &Settings, spn: String) -> Result<(Context, Vec<u8>), Failure> {
        let kdc = match &s.kdc {
            Some(u) => u.clone(),
            None => discover(&s.realm, s.kdc_timeout),
        };
        let config = KerberosConfig {
            kdc_resolution: sspi::KdcResolution::KdcUrl(Some(kdc)),
            client_computer_name: "easgate".into(),
        };
        let krb = Kerberos::new_client_from_config(config).map_err(Failure::from_sspi)?;
        let (creds, key) = credentials(s)?;
        let mut ctx = Context {
            krb,
            creds: Some(creds),
            spn,
        };
        let (status, token) = ctx.step(&[], Some(s)).map_err(|f| match (f, key) {
            // Which key the KDC refused: an admin compares it with the account's.
            (Failure::Password(why), Some((key, _))) => {
                Failure::Password(format!("{why}; the keytab's key: {key}"))
            }
            // sspi asks for AES256 first; a KDC holding that key answers with it, which an
            // AES128 key cannot read (sspi then says no more than a slice's length is wrong).
            (Failure::Other(why), Some((key, CipherSuite::Aes128CtsHmacSha196))) => {
                Failure::Other(format!(
                    "{why}; the keytab holds an AES128 key only ({key}), and the KDC most \
                     likely answered with the account's AES256 key, which easgate asks for \
                     first: export the AES256 key too (ktpass /crypto AES256-SHA1, or kadmin \
                     ktadd -e aes256-cts-hmac-sha1-96:normal)"
                ))
            }
            (f, _) => f,
        })?;
        if status != SecurityStatus::ContinueNeeded || token.is_empty() {
            return Err(Failure::Other(format!(
                "the Kerberos client produced no AP-REQ ({status:?})"
            )));
        }
        Ok((ctx, token))
    }

    /// Checks the server's AP-REP (mutual authentication): after it, the context seals.
    pub async fn finish(self, ap_rep: Vec<u8>) -> Result<Context, Failure> {
        on_own_stack(move || {
            let mut ctx = self;
            let (status, _) = ctx.step(&ap_rep, None)?;
            if status != SecurityStatus::Ok {
                return Err(Failure::Other(format!(
                    "the CAS's AP-REP did not complete the context ({status:?})"
                )));
            }
            Ok(ctx)
        })
        .await
    }

    /// One `InitializeSecurityContext`, answering the KDC requests it makes (only the first
    /// step makes any; `kdc` is `None` for the others). Blocking: it runs on its own thread.
    fn step(
        &mut self,
        input: &[u8],
        kdc: Option<&Settings>,
    ) -> Result<(SecurityStatus, Vec<u8>), Failure> {
        let mut input = vec![SecurityBuffer::new(input.to_vec(), BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let spn = self.spn.clone();
        let result = {
            let mut builder = self
                .krb
                .initialize_security_context()
                .with_credentials_handle(&mut self.creds)
                .with_context_requirements(requirements())
                .with_target_data_representation(DataRepresentation::Native)
                .with_target_name(&spn)
                .with_input(&mut input)
                .with_output(&mut output);
            let mut generator = self
                .krb
                .initialize_security_context_impl(&mut builder)
                .map_err(Failure::from_sspi)?;
            let mut state = generator.start();
            loop {
                match state {
                    GeneratorState::Completed(r) => break r,
                    GeneratorState::Suspended(request) => {
                        let Some(s) = kdc else {
                            return Err(Failure::Other(
                                "the Kerberos client asked for the KDC after the AP-REQ".into(),
                            ));
                        };
                        let answer =
                            exchange(&request, s.kdc_timeout).map_err(Failure::KdcUnreachable)?;
                        state = generator.resume(Ok(answer));
                    }
                }
            }
        };
        let result = result.map_err(Failure::from_sspi)?;
        let token = output.pop().map(|b| b.buffer).unwrap_or_default();
        Ok((result.status, token))
    }

    /// Seals an envelope: the wrap token's header and the sealed data (as long as `plain`).
    pub fn seal(&mut self, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let trailer = self
            .krb
            .query_context_sizes()
            .map_err(|e| format!("sealing: {e:?}"))?
            .security_trailer as usize;
        let mut header = vec![0u8; trailer];
        let mut data = plain.to_vec();
        let header_len = {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut header),
                SecurityBufferRef::data_buf(&mut data),
            ];
            self.krb
                .encrypt_message(EncryptionFlags::empty(), &mut buffers)
                .map_err(|e| format!("sealing: {}", e.description))?;
            buffers[0].data().len()
        };
        header.truncate(header_len);
        Ok((header, data))
    }

    /// Unseals an answer sealed by the server into `header` and `data`.
    pub fn unseal(&mut self, header: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        let mut header = header.to_vec();
        let mut data = data.to_vec();
        let mut buffers = [
            SecurityBufferRef::token_buf(&mut header),
            SecurityBufferRef::data_buf(&mut data),
        ];
        self.krb
            .decrypt_message(&mut buffers)
            .map_err(|e| format!("unsealing: {}", e.description))?;
        Ok(buffers[1].data().to_vec())
    }
}

/// The credentials of `s` for `sspi`, and for a keytab which of its keys (`kvno 3, aes256…`)
/// and its type.
fn credentials(
    s: &Settings,
) -> Result<(CredentialsBuffers, Option<(String, CipherSuite)>), Failure> {
    match &s.credential {
        Credential::Password(p) => Ok((
            CredentialsBuffers::AuthIdentity(AuthIdentityBuffers::from_utf8(
                &s.account,
                &s.realm,
                p.expose(),
            )),
            None,
        )),
        Credential::Keytab(path) => {
            let key = super::keytab::load(path, &s.account, &s.realm).map_err(Failure::Keytab)?;
            // The same client name as with a password: `account`, NT-PRINCIPAL, in `realm`.
            let principal = sspi::Username::new_down_level_logon_name(&s.account, &s.realm)
                .map_err(|e| Failure::Other(format!("the account `{}`: {e}", s.account)))?;
            let described = (key.describe(), key.enctype.clone());
            Ok((
                CredentialsBuffers::Keytab(sspi::KeytabIdentity {
                    principal,
                    key: key.key,
                    key_enctype: key.enctype,
                }),
                Some(described),
            ))
        }
    }
}

/// The KDC of `realm` when none is configured: `SSPI_KDC_URL` or the realm's `kdc` in
/// `KRB5_CONFIG`/`/etc/krb5.conf` (what `sspi` reads), else the best of the DNS SRV records
/// `_kerberos._tcp.<realm>`, else the realm's own domain name on port 88 (an Active Directory
/// domain's name resolves to its domain controllers, which are its KDCs).
fn discover(realm: &str, timeout: Duration) -> url::Url {
    if let Some(u) = sspi::detect_kdc_url(realm) {
        return u;
    }
    let by_dns = super::srv::kdcs(realm, timeout).unwrap_or_else(|e| {
        tracing::debug!(realm, "no KDC from DNS SRV records: {e}");
        Vec::new()
    });
    let host = by_dns
        .into_iter()
        .next()
        .unwrap_or_else(|| format!("{}:88", realm.to_ascii_lowercase()));
    url::Url::parse(&format!("tcp://{host}"))
        .unwrap_or_else(|_| url::Url::parse("tcp://localhost:88").expect("a valid URL"))
}

/// Carries one KDC message (RFC 4120 7.2): over TCP with its 4-byte length, which the answer
/// has too; over UDP without it (and we add it to the answer, as `sspi` expects). Each step
/// (connect, send, receive) may take `timeout`.
fn exchange(request: &NetworkRequest, timeout: Duration) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;

    let host = request.url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = request.url.port().unwrap_or(88);
    let at = format!("{host}:{port}");
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {at}: {e}"))?
        .collect();
    match request.protocol {
        NetworkProtocol::Tcp => {
            let mut last = format!("{at} has no address");
            let mut stream = None;
            for addr in &addrs {
                match std::net::TcpStream::connect_timeout(addr, timeout) {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = format!("connecting to {at}: {e}"),
                }
            }
            let mut stream = stream.ok_or(last)?;
            let io = |e: std::io::Error| format!("talking to {at}: {e}");
            stream.set_read_timeout(Some(timeout)).map_err(io)?;
            stream.set_write_timeout(Some(timeout)).map_err(io)?;
            stream.write_all(&request.data).map_err(io)?;
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).map_err(io)?;
            let n = u32::from_be_bytes(len) as usize;
            if n > 1 << 20 {
                return Err(format!("{at} announced a {n}-byte answer"));
            }
            let mut answer = Vec::with_capacity(4 + n);
            answer.extend_from_slice(&len);
            answer.resize(4 + n, 0);
            stream.read_exact(&mut answer[4..]).map_err(io)?;
            Ok(answer)
        }
        NetworkProtocol::Udp => {
            let addr = addrs.first().ok_or(format!("{at} has no address"))?;
            let any: std::net::SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let io = |e: std::io::Error| format!("talking to {at} over UDP: {e}");
            let socket = std::net::UdpSocket::bind(any).map_err(io)?;
            socket.set_read_timeout(Some(timeout)).map_err(io)?;
            socket.connect(addr).map_err(io)?;
            socket.send(&request.data).map_err(io)?;
            let mut buf = vec![0u8; 65536];
            let n = socket.recv(&mut buf).map_err(io)?;
            let mut answer = Vec::with_capacity(4 + n);
            answer.extend_from_slice(&(n as u32).to_be_bytes());
            answer.extend_from_slice(&buf[..n]);
            Ok(answer)
        }
        other => Err(format!(
            "KDC at {}: {other:?} (a KDC proxy) is not supported; give the KDC as host:port",
            request.url
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kdc_is_the_given_address_with_port_88_by_default() {
        let u = Settings::kdc_url(Some("dc01.contoso.com"))
            .unwrap()
            .unwrap();
        assert_eq!(u.as_str(), "tcp://dc01.contoso.com:88");
        let u = Settings::kdc_url(Some("127.0.0.1:6088")).unwrap().unwrap();
        assert_eq!(u.as_str(), "tcp://127.0.0.1:6088");
        assert_eq!(Settings::kdc_url(None).unwrap(), None, "found at sign-in");
    }

    #[test]
    fn each_kerberos_refusal_is_explained_with_its_fix() {
        let s = Settings {
            account: "svc".into(),
            credential: Credential::Password(crate::config::Secret::new("x")),
            realm: "CONTOSO.COM".into(),
            kdc: None,
            spn: None,
            kdc_timeout: Duration::from_secs(1),
        };
        let cas = "http://cas01.contoso.com/PowerShell/";
        let explain = |kind, text: &str| {
            Failure::from_sspi(sspi::Error::new(kind, text.to_owned())).explain(
                cas,
                &s,
                "HTTP/cas01.contoso.com",
            )
        };
        // As sspi words the KDC's errors (KRB_AP_ERR_SKEW, KDC_ERR_WRONG_REALM, …).
        let cases = [
            (
                ErrorKind::TimeSkew,
                "clock skew too great",
                "synchronise it",
            ),
            (
                ErrorKind::NoAuthenticatingAuthority,
                "wrong Realm",
                "is not the KDC of realm CONTOSO.COM",
            ),
            (
                ErrorKind::KdcInvalidRequest,
                "pre-authentication information was invalid",
                "check exchange.auth.password",
            ),
            (
                ErrorKind::UnknownCredentials,
                "server not found in Kerberos database",
                "setspn -S HTTP/cas01.contoso.com",
            ),
            (
                ErrorKind::UnknownCredentials,
                "client not found in Kerberos database",
                "does not know `svc@CONTOSO.COM`",
            ),
            (
                ErrorKind::NoAuthenticatingAuthority,
                "No KDC server found",
                "did not answer",
            ),
        ];
        for (kind, text, fix) in cases {
            let e = explain(kind, text);
            assert!(e.contains(cas) && e.contains(fix), "{fix:?} in {e}");
        }
    }

    #[test]
    fn a_refused_keytab_key_is_called_stale_with_how_to_export_it_again() {
        let s = Settings {
            account: "svc-easgate".into(),
            credential: Credential::Keytab("/etc/easgate/svc-easgate.keytab".into()),
            realm: "CONTOSO.COM".into(),
            kdc: None,
            spn: None,
            kdc_timeout: Duration::from_secs(1),
        };
        let e = Failure::from_sspi(sspi::Error::new(
            ErrorKind::KdcInvalidRequest,
            "pre-authentication information was invalid".to_owned(),
        ))
        .explain("http://cas01/PowerShell/", &s, "HTTP/cas01");
        for words in [
            "refused the key of `svc-easgate@CONTOSO.COM`",
            "keytab /etc/easgate/svc-easgate.keytab",
            "KDC_ERR_PREAUTH_FAILED",
            "the keytab is stale",
            r"ktpass /princ svc-easgate@CONTOSO.COM /mapuser <DOMAIN>\svc-easgate",
            "ktadd -k <file> -norandkey svc-easgate@CONTOSO.COM",
        ] {
            assert!(e.contains(words), "{words:?} in {e}");
        }
        assert!(!e.contains("exchange.auth.password"), "{e}");
    }

    #[test]
    fn the_spn_is_http_and_the_cas_host_unless_overridden() {
        let mut s = Settings {
            account: "svc".into(),
            credential: Credential::Password(crate::config::Secret::new("x")),
            realm: "CONTOSO.COM".into(),
            kdc: Settings::kdc_url(Some("dc01")).unwrap(),
            spn: None,
            kdc_timeout: Duration::from_secs(1),
        };
        assert_eq!(
            s.spn_for("https://cas01.contoso.com/PowerShell/"),
            "HTTP/cas01.contoso.com"
        );
        assert_eq!(
            s.spn_for("http://localhost:8080/PowerShell/"),
            "HTTP/localhost"
        );
        s.spn = Some("HTTP/exchange.contoso.com".into());
        assert_eq!(
            s.spn_for("https://cas01.contoso.com/PowerShell/"),
            "HTTP/exchange.contoso.com"
        );
    }
}
