//! NTLM on the `/PowerShell/` face, as IIS's Windows authentication does it under `Negotiate`:
//! the client's NEGOTIATE_MESSAGE is answered 401 with `WWW-Authenticate: Negotiate
//! <CHALLENGE_MESSAGE>`, its AUTHENTICATE_MESSAGE on the same connection is checked against the
//! lab account's password (NTLMv2: the MIC only matches with the session key that password
//! gives), and the context then seals that connection's envelopes, as Kerberos's does.
//!
//! The acceptor is Devolutions' `sspi` (pure Rust, so NTLM needs no feature): its `Ntlm`
//! accepts with the candidate password, hashing it with the user and domain the client sent.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sspi::{
    AuthIdentityBuffers, BufferType, DataRepresentation, EncryptionFlags, Ntlm, SecurityBuffer,
    SecurityBufferRef, ServerRequestFlags, Sspi, SspiImpl,
};

use super::ConnectionAuth;
use super::kerberos::Sealing;

/// The first bytes of every NTLM message.
pub(crate) const SIGNATURE: &[u8] = b"NTLMSSP\0";

/// The NTLM message in an `Authorization: Negotiate|NTLM <b64>` header, with its scheme.
fn message(headers: &HeaderMap) -> Option<(&str, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !(scheme.eq_ignore_ascii_case("negotiate") || scheme.eq_ignore_ascii_case("ntlm")) {
        return None;
    }
    let raw = easgate_psrp::clixml::base64_decode(b64.trim())?;
    raw.starts_with(SIGNATURE).then_some((scheme, raw))
}

/// The message type (1 NEGOTIATE, 2 CHALLENGE, 3 AUTHENTICATE) after the signature.
fn kind(raw: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(raw.get(8..12)?.try_into().ok()?))
}

/// One acceptor step; the token to send back.
fn accept(
    ntlm: &mut Ntlm,
    creds: &mut Option<AuthIdentityBuffers>,
    token: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut input = vec![SecurityBuffer::new(token, BufferType::Token)];
    let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
    let builder = ntlm
        .accept_security_context()
        .with_credentials_handle(creds)
        .with_context_requirements(ServerRequestFlags::empty())
        .with_target_data_representation(DataRepresentation::Native)
        .with_input(&mut input)
        .with_output(&mut output);
    <Ntlm as SspiImpl>::accept_security_context_impl(ntlm, builder)
        .and_then(|mut g| g.resolve_to_result())
        .map_err(|e| e.description)?;
    Ok(output.pop().map(|b| b.buffer).unwrap_or_default())
}

/// When the request carries an NTLM NEGOTIATE_MESSAGE: the 401 with the CHALLENGE (the
/// handshake kept on the connection for the AUTHENTICATE that follows), or a plain 401 when the
/// message is not one the acceptor takes. `None` for any other request.
pub(crate) fn challenge(headers: &HeaderMap, conn: &ConnectionAuth) -> Option<Response> {
    let (scheme, raw) = message(headers)?;
    if kind(&raw) != Some(1) {
        return None;
    }
    let mut ntlm = Box::new(Ntlm::new());
    let mut creds = None;
    let mut r = StatusCode::UNAUTHORIZED.into_response();
    match accept(&mut ntlm, &mut creds, raw) {
        Ok(challenge) => {
            conn.put(Sealing::NtlmPending(ntlm));
            let value = format!(
                "{scheme} {}",
                easgate_psrp::clixml::base64_encode(&challenge)
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&value).expect("base64 is a valid header value"),
            );
        }
        Err(e) => tracing::info!("/PowerShell/ NTLM negotiation refused: {e}"),
    }
    Some(r)
}

/// Whether `raw` is the AUTHENTICATE_MESSAGE of the handshake pending on `conn`, for `user`
/// (`svc-easgate@{domain}`: sent as that UPN, or as `svc-easgate` with any domain) with
/// `password`. On success the connection's context seals from now on.
pub(crate) fn authenticate(
    raw: &[u8],
    (user, password): (&str, &str),
    conn: &ConnectionAuth,
) -> bool {
    if kind(raw) != Some(3) {
        return false;
    }
    if !has_mic(raw) {
        tracing::info!("/PowerShell/ NTLM AUTHENTICATE without a MIC (NTLMv2 with MsvAvFlags MIC)");
        return false;
    }
    let Some(mut ntlm) = conn.take_ntlm_pending() else {
        tracing::info!("/PowerShell/ NTLM AUTHENTICATE without a NEGOTIATE on this connection");
        return false;
    };
    // The candidate's user and domain are not used: the acceptor hashes the password with the
    // names the client sent, as a domain controller does.
    let mut creds = Some(AuthIdentityBuffers::from_utf8(user, "", password));
    let checked = accept(&mut ntlm, &mut creds, raw.to_vec())
        .and_then(|_| ntlm.complete_auth_token(&mut []).map_err(|e| e.description));
    if let Err(e) = checked {
        tracing::info!("/PowerShell/ NTLM refused: {e}");
        return false;
    }
    let sent = ntlm
        .query_context_names()
        .map(|n| n.username.account_name().to_owned())
        .unwrap_or_default();
    let local = user.split('@').next().unwrap_or_default();
    let named = sent.eq_ignore_ascii_case(user) || sent.eq_ignore_ascii_case(local);
    if !named {
        tracing::info!("/PowerShell/ NTLM user {sent} is not the service account");
        return false;
    }
    conn.put(Sealing::Ntlm(ntlm));
    true
}

/// Whether an AUTHENTICATE_MESSAGE is NTLMv2 and says it carries a MIC (MS-NLMP 2.2.2.1,
/// `MsvAvFlags` bit 0x2 among the AV pairs of its NTLMv2 response). `sspi`'s acceptor proves
/// the password only through the MIC (it checks the MIC, keyed by the session key the
/// password gives, and not the response's NTProofStr), so a message without one would be
/// accepted with any password: the face refuses it. Windows, sspi's and pyspnego's clients all
/// send a MIC when the CHALLENGE carries a timestamp, which sspi's does.
fn has_mic(raw: &[u8]) -> bool {
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    const TARGET_INFO: u32 = 0x0080_0000;
    let (Some(len), Some(offset), Some(flags)) =
        (u16_at(raw, 20), u32_at(raw, 24), u32_at(raw, 60))
    else {
        return false;
    };
    if flags & TARGET_INFO == 0 {
        return false;
    }
    let Some(response) = raw.get(offset as usize..offset as usize + usize::from(len)) else {
        return false;
    };
    // NTProofStr (16), then the blob's fixed part (28): the AV pairs follow.
    let mut at = 44;
    while let (Some(id), Some(n)) = (u16_at(response, at), u16_at(response, at + 2)) {
        match id {
            0 => return false,
            6 if n == 4 => return u32_at(response, at + 4).is_some_and(|f| f & 0x2 != 0),
            _ => at += 4 + usize::from(n),
        }
    }
    false
}

/// Seals an answer: the 16-byte signature and the sealed data.
pub(crate) fn seal(ntlm: &mut Ntlm, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut signature = vec![0u8; 16];
    let mut data = plain.to_vec();
    let mut buffers = [
        SecurityBufferRef::token_buf(&mut signature),
        SecurityBufferRef::data_buf(&mut data),
    ];
    ntlm.encrypt_message(EncryptionFlags::empty(), &mut buffers)
        .map_err(|e| format!("sealing the envelope: {}", e.description))?;
    Ok((signature, data))
}

/// Unseals a request sealed into its signature and data.
pub(crate) fn unseal(ntlm: &mut Ntlm, signature: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    let mut signature = signature.to_vec();
    let mut data = data.to_vec();
    let mut buffers = [
        SecurityBufferRef::token_buf(&mut signature),
        SecurityBufferRef::data_buf(&mut data),
    ];
    ntlm.decrypt_message(&mut buffers)
        .map_err(|e| format!("unsealing the envelope: {}", e.description))?;
    Ok(buffers[1].data().to_vec())
}
