//! Kerberos on the `/PowerShell/` face, as IIS's Windows authentication does it: the client
//! sends `Authorization: Negotiate <SPNEGO token>` or `Kerberos <AP-REQ>`, MIT's GSS-API acceptor
//! checks it against the keytab of `HTTP/localhost`, and the reply token (mutual
//! authentication, the AP-REP) goes back in `WWW-Authenticate` under the same scheme.
//!
//! Under Extended Protection ([`Expected`]) the acceptor is given the face's own channel
//! binding: MIT refuses a ticket whose authenticator checksum carries another binding
//! (GSS_S_BAD_BINDINGS), and reports GSS_C_CHANNEL_BOUND_FLAG (MIT 1.19+) when it carried the
//! right one; under `Require` a context without that flag (a client that sent no binding, which
//! MIT lets through) is refused.
//!
//! The context is kept per connection ([`ConnectionAuth`]): after it, the client seals every
//! envelope with it (WS-Management message encryption over HTTP, MS-WSMV 2.2.9.1), and the face
//! refuses plain envelopes as WinRM does with `AllowUnencrypted=false`, Exchange's default.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::protection::Expected;

#[cfg(feature = "kerberos")]
use libgssapi::context::{SecurityContext, ServerCtx};
#[cfg(feature = "kerberos")]
use libgssapi::credential::{Cred, CredUsage};
#[cfg(feature = "kerberos")]
use libgssapi::util::{GssIov, GssIovType};

/// Without the `kerberos` feature (which needs MIT's libraries to build) no context can exist:
/// [`Acceptor::from_keytab`] says how to get one, and nothing else is reachable.
#[cfg(not(feature = "kerberos"))]
type ServerCtx = std::convert::Infallible;

/// The acceptor's long-lived credential: the keys of the keytab it was made from.
pub(crate) struct Acceptor {
    #[cfg(feature = "kerberos")]
    cred: Cred,
    #[cfg(not(feature = "kerberos"))]
    never: std::convert::Infallible,
}

/// Serializes the moment `KRB5_KTNAME` is set and read: MIT resolves the default keytab when
/// the credential is acquired, from that process-wide variable.
#[cfg(feature = "kerberos")]
static KEYTAB_ENV: Mutex<()> = Mutex::new(());

/// What a successful acceptance yields.
pub(crate) struct Accepted {
    /// The client's principal, `user@REALM`.
    pub principal: String,
    /// The token for `WWW-Authenticate` (mutual authentication), if the mechanism sent one.
    pub reply: Option<Vec<u8>>,
    /// The established context, for [`ConnectionAuth::set`] once the principal is accepted.
    pub ctx: ServerCtx,
}

#[cfg(not(feature = "kerberos"))]
impl Acceptor {
    pub fn from_keytab(_keytab: &Path) -> Result<Acceptor, String> {
        Err(
            "this lab was built without Kerberos: build it with the `kerberos` feature of \
             easgate-lab (it needs libkrb5-dev and libclang-dev: .ci/install-kerberos)"
                .into(),
        )
    }

    pub fn accept(&self, _token: &[u8], _expected: Option<&Expected>) -> Result<Accepted, String> {
        match self.never {}
    }
}

#[cfg(feature = "kerberos")]
impl Acceptor {
    /// An acceptor for the service keys in `keytab` (e.g. `easgate_lab::kdc::TestKdc::keytab`).
    pub fn from_keytab(keytab: &Path) -> Result<Acceptor, String> {
        let _guard = KEYTAB_ENV.lock().expect("keytab env");
        // SAFETY: the variable is only written here, under a lock, and read by libkrb5 during
        // `Cred::acquire` below (the lab reads no other variable concurrently that this could
        // race with; std's own readers are serialized by std).
        unsafe { std::env::set_var("KRB5_KTNAME", format!("FILE:{}", keytab.display())) };
        let cred = Cred::acquire(None, None, CredUsage::Accept, None).map_err(|e| {
            format!(
                "acquiring acceptor credentials from {}: {e}",
                keytab.display()
            )
        })?;
        Ok(Acceptor { cred })
    }

    /// Accepts one client token (Kerberos completes in one round trip), bound to the
    /// connection's TLS channel as `expected` asks.
    pub fn accept(&self, token: &[u8], expected: Option<&Expected>) -> Result<Accepted, String> {
        /// `GSS_C_CHANNEL_BOUND_FLAG` (MIT's gssapi_ext.h), which libgssapi has no name for.
        const CHANNEL_BOUND: u32 = 0x800;
        let mut ctx = ServerCtx::new(Some(self.cred.clone()));
        // libgssapi passes these as the application data of gss_channel_bindings_struct,
        // addresses empty: the SEC_CHANNEL_BINDINGS a Windows client hashes.
        let bindings = expected.map(|e| e.application_data.as_slice());
        let reply = ctx
            .step(token, bindings)
            .map_err(|e| format!("rejected token: {e}"))?;
        if !ctx.is_complete() {
            return Err("the token needs another round trip, which Kerberos never does".into());
        }
        if expected.is_some_and(Expected::required) {
            let flags = ctx.flags().map_err(|e| format!("no context flags: {e}"))?;
            if flags.bits() & CHANNEL_BOUND == 0 {
                return Err(
                    "the ticket carries no channel binding, which Extended Protection requires"
                        .into(),
                );
            }
        }
        let principal = ctx
            .source_name()
            .map_err(|e| format!("no client name: {e}"))?
            .to_string();
        Ok(Accepted {
            principal,
            reply: reply.map(|b| b.to_vec()),
            ctx,
        })
    }
}

/// A connection's security context: Kerberos (MIT's acceptor) or NTLM (see `super::ntlm`),
/// or an NTLM handshake between its CHALLENGE and the client's AUTHENTICATE.
pub(crate) enum Sealing {
    Kerberos(ServerCtx),
    NtlmPending(Box<sspi::Ntlm>),
    Ntlm(Box<sspi::Ntlm>),
}

/// The security context a client established on one HTTP connection. WinRM binds the context
/// (Kerberos or NTLM) to the connection: after the authenticating request(s), the client sends
/// no more `Authorization` and seals every envelope with that context's keys.
#[derive(Clone, Default)]
pub(crate) struct ConnectionAuth(Arc<Mutex<Option<Sealing>>>);

impl ConnectionAuth {
    /// Keeps `ctx` as this connection's context, replacing any earlier one.
    pub fn set(&self, ctx: ServerCtx) {
        self.put(Sealing::Kerberos(ctx));
    }

    /// Keeps `sealing` as this connection's state, replacing any earlier one.
    pub fn put(&self, sealing: Sealing) {
        *self.0.lock().expect("connection context") = Some(sealing);
    }

    /// The NTLM handshake waiting for its AUTHENTICATE message, taken off the connection.
    pub fn take_ntlm_pending(&self) -> Option<Box<sspi::Ntlm>> {
        let mut guard = self.0.lock().expect("connection context");
        match guard.take() {
            Some(Sealing::NtlmPending(n)) => Some(n),
            other => {
                *guard = other;
                None
            }
        }
    }

    /// Whether a context that seals was established on this connection.
    pub fn established(&self) -> bool {
        matches!(
            *self.0.lock().expect("connection context"),
            Some(Sealing::Kerberos(_) | Sealing::Ntlm(_))
        )
    }

    /// Opens a sealed request body (see [`seal`] for the framing); the envelope and the
    /// `protocol` the client used, to answer with the same.
    pub fn open(&self, content_type: &str, body: &[u8]) -> Result<(Vec<u8>, String), String> {
        let protocol = multipart_protocol(content_type)
            .ok_or_else(|| format!("not a WS-Management encrypted body: {content_type:?}"))?;
        let (length, header, data) = parse_encrypted(body)?;
        let mut guard = self.0.lock().expect("connection context");
        let plain = match guard.as_mut() {
            Some(Sealing::Kerberos(ctx)) => {
                let mut token = Vec::with_capacity(header.len() + data.len());
                token.extend_from_slice(header);
                token.extend_from_slice(data);
                // The header and the data are one wrap token cut in two (the header holds the
                // token header, the rotated trailer and the confounder), so gss_unwrap takes
                // them joined.
                unseal(ctx, &token)?
            }
            Some(Sealing::Ntlm(ntlm)) => super::ntlm::unseal(ntlm, header, data)?,
            _ => return Err("no security context on this connection".into()),
        };
        if plain.len() != length {
            return Err(format!(
                "the envelope is {} bytes, OriginalContent said {length}",
                plain.len()
            ));
        }
        Ok((plain, protocol))
    }

    /// Seals a response envelope for this connection's client (see [`seal`]).
    pub fn seal(&self, protocol: &str, envelope: &[u8]) -> Result<Vec<u8>, String> {
        let mut guard = self.0.lock().expect("connection context");
        match guard.as_mut() {
            Some(Sealing::Kerberos(ctx)) => seal(ctx, protocol, envelope),
            Some(Sealing::Ntlm(ntlm)) => {
                let (signature, data) = super::ntlm::seal(ntlm, envelope)?;
                Ok(frame(protocol, envelope.len(), &signature, &data, &[]))
            }
            _ => Err("no security context on this connection".into()),
        }
    }
}

/// The boundary WinRM uses, quotes and all in the Content-Type.
pub(crate) const BOUNDARY: &str = "Encrypted Boundary";

/// The `Content-Type` of a sealed body.
pub(crate) fn encrypted_content_type(protocol: &str) -> String {
    format!("multipart/encrypted;protocol=\"{protocol}\";boundary=\"{BOUNDARY}\"")
}

/// `application/HTTP-Kerberos-session-encrypted` (or the SPNEGO one) from a
/// `multipart/encrypted` Content-Type.
fn multipart_protocol(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("multipart/encrypted") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("protocol")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// MS-WSMV 2.2.9.1.1's framing: a first part naming the protocol and the plain envelope's type
/// and length, then an octet-stream part of `u32` LE header length, wrap-token header, sealed
/// data; the closing boundary right after the data.
#[cfg(not(feature = "kerberos"))]
fn seal(ctx: &mut ServerCtx, _protocol: &str, _envelope: &[u8]) -> Result<Vec<u8>, String> {
    match *ctx {}
}

#[cfg(not(feature = "kerberos"))]
fn unseal(ctx: &mut ServerCtx, _token: &[u8]) -> Result<Vec<u8>, String> {
    match *ctx {}
}

#[cfg(feature = "kerberos")]
fn unseal(ctx: &mut ServerCtx, token: &[u8]) -> Result<Vec<u8>, String> {
    Ok(ctx
        .unwrap(token)
        .map_err(|e| format!("unsealing the envelope: {e}"))?
        .to_vec())
}

#[cfg(feature = "kerberos")]
fn seal(ctx: &mut ServerCtx, protocol: &str, envelope: &[u8]) -> Result<Vec<u8>, String> {
    let mut data = envelope.to_vec();
    let (header, padding) = {
        let mut iov = [
            GssIov::new_alloc(GssIovType::Header),
            GssIov::new(GssIovType::Data, &mut data),
            GssIov::new_alloc(GssIovType::Padding),
        ];
        // The IOV form puts the token's trailer into the header (RRC), as Windows' SSPI does,
        // so that the data part is exactly as long as the envelope: what WinRM clients expect.
        ctx.wrap_iov(true, &mut iov)
            .map_err(|e| format!("sealing the envelope: {e}"))?;
        (iov[0].to_vec(), iov[2].to_vec())
    };
    Ok(frame(protocol, envelope.len(), &header, &data, &padding))
}

/// The framed body of an envelope of `plain_len` bytes sealed into `header`, `data` and
/// `padding` (see [`seal`]).
fn frame(protocol: &str, plain_len: usize, header: &[u8], data: &[u8], padding: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + header.len() + 256);
    out.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\n\tContent-Type: {protocol}\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={plain_len}\r\n--{BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out.extend_from_slice(padding);
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// The plain length, the wrap-token header and the sealed data of a framed body.
fn parse_encrypted(body: &[u8]) -> Result<(usize, &[u8], &[u8]), String> {
    let open = format!("--{BOUNDARY}\r\n");
    let close = format!("--{BOUNDARY}--");
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let first = find(body, open.as_bytes(), 0).ok_or("no opening boundary")?;
    let second = find(body, open.as_bytes(), first + open.len()).ok_or("no second part")?;
    let headers = String::from_utf8_lossy(&body[first + open.len()..second]);
    let length = headers
        .split(';')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .ok_or("no Length in OriginalContent")?;
    let octets = b"application/octet-stream\r\n";
    let start = find(body, octets, second).ok_or("no octet-stream part")? + octets.len();
    let end = body
        .windows(close.len())
        .rposition(|w| w == close.as_bytes())
        .filter(|&e| e >= start)
        .ok_or("no closing boundary")?;
    let payload = &body[start..end];
    let len_bytes: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("no header length")?;
    let hlen = u32::from_le_bytes(len_bytes) as usize;
    let header = payload
        .get(4..4 + hlen)
        .ok_or("header longer than the part")?;
    Ok((length, header, &payload[4 + hlen..]))
}
