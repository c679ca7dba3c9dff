//! NTLM on the `/PowerShell/` face, as IIS's Windows authentication does it under `Negotiate`:
//! the client's NEGOTIATE_MESSAGE is answered 401 with `WWW-Authenticate: Negotiate
//! <CHALLENGE_MESSAGE>`, its AUTHENTICATE_MESSAGE on the same connection is checked against the
//! lab account's password (NTLMv2: the MIC only matches with the session key that password
//! gives), and the context then seals that connection's envelopes, as Kerberos's does.
//!
//! The acceptor is Devolutions' `sspi` (pure Rust, so NTLM needs no feature): its `Ntlm`
//! accepts with the candidate password, hashing it with the user and domain the client sent.
//!
//! Under Extended Protection ([`Expected`]) the AUTHENTICATE_MESSAGE's MsvAvChannelBindings
//! (the MD5 of the client's SEC_CHANNEL_BINDINGS) must match the face's own binding: `sspi`
//! compares it when it is given the expected bindings and the pair is present, and the face
//! itself refuses a message without the pair (or with the all-zero one of a client that has
//! no binding) when the check is `Require`, which `sspi` alone would let through.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sspi::{
    AuthIdentityBuffers, BufferType, DataRepresentation, EncryptionFlags, Ntlm, SecurityBuffer,
    SecurityBufferRef, ServerRequestFlags, Sspi, SspiImpl,
};

use super::ConnectionAuth;
use super::kerberos::Sealing;
use super::protection::Expected;

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

/// One acceptor step, checking the client's channel binding against `bindings` (a
/// SEC_CHANNEL_BINDINGS) when given; the token to send back.
fn accept(
    ntlm: &mut Ntlm,
    creds: &mut Option<AuthIdentityBuffers>,
    token: Vec<u8>,
    bindings: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut input = vec![SecurityBuffer::new(token, BufferType::Token)];
    if let Some(b) = bindings {
        input.push(SecurityBuffer::new(b, BufferType::ChannelBindings));
    }
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
    match accept(&mut ntlm, &mut creds, raw, None) {
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
/// `password`, bound to the connection's TLS channel as `expected` asks. On success the
/// connection's context seals from now on.
pub(crate) fn authenticate(
    raw: &[u8],
    (user, password): (&str, &str),
    conn: &ConnectionAuth,
    expected: Option<&Expected>,
) -> bool {
    if kind(raw) != Some(3) {
        return false;
    }
    let Some(pairs) = av_pairs(raw) else {
        tracing::info!("/PowerShell/ NTLM AUTHENTICATE that is not NTLMv2 with AV pairs");
        return false;
    };
    if !has_mic(&pairs) {
        tracing::info!("/PowerShell/ NTLM AUTHENTICATE without a MIC (NTLMv2 with MsvAvFlags MIC)");
        return false;
    }
    // The pairs are covered by the MIC, which the acceptor checks below.
    let bound = pairs
        .iter()
        .any(|&(id, value)| id == CHANNEL_BINDINGS && value.iter().any(|&b| b != 0));
    let bindings = match expected {
        // `sspi` compares the pair with these (a wrong one is refused).
        Some(e) if bound => Some(e.sec_channel_bindings()),
        Some(e) if e.required() => {
            tracing::info!(
                "/PowerShell/ NTLM AUTHENTICATE without a channel binding, which Extended \
                 Protection requires"
            );
            return false;
        }
        // `Allow`: an unbound sign-in passes, as with IIS.
        _ => None,
    };
    let Some(mut ntlm) = conn.take_ntlm_pending() else {
        tracing::info!("/PowerShell/ NTLM AUTHENTICATE without a NEGOTIATE on this connection");
        return false;
    };
    // The candidate's user and domain are not used: the acceptor hashes the password with the
    // names the client sent, as a domain controller does.
    let mut creds = Some(AuthIdentityBuffers::from_utf8(user, "", password));
    let checked = accept(&mut ntlm, &mut creds, raw.to_vec(), bindings)
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

/// The MsvAvChannelBindings AV pair's id (MS-NLMP 2.2.2.1).
const CHANNEL_BINDINGS: u16 = 10;

/// Whether an AUTHENTICATE_MESSAGE's AV pairs say it carries a MIC (MS-NLMP 2.2.2.1,
/// `MsvAvFlags` bit 0x2). `sspi`'s acceptor proves the password only through the MIC (it
/// checks the MIC, keyed by the session key the password gives, and not the response's
/// NTProofStr), so a message without one would be accepted with any password: the face
/// refuses it. Windows, sspi's and pyspnego's clients all send a MIC when the CHALLENGE
/// carries a timestamp, which sspi's does.
fn has_mic(pairs: &[(u16, &[u8])]) -> bool {
    pairs.iter().any(|&(id, value)| {
        id == 6
            && value
                .try_into()
                .is_ok_and(|f: [u8; 4]| u32::from_le_bytes(f) & 0x2 != 0)
    })
}

/// The AV pairs of an AUTHENTICATE_MESSAGE's NTLMv2 response (id and value, up to MsvAvEOL),
/// or `None` when it is not NTLMv2 with target information.
fn av_pairs(raw: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    const TARGET_INFO: u32 = 0x0080_0000;
    let (len, offset, flags) = (u16_at(raw, 20)?, u32_at(raw, 24)?, u32_at(raw, 60)?);
    if flags & TARGET_INFO == 0 {
        return None;
    }
    let response = raw.get(offset as usize..offset as usize + usize::from(len))?;
    // NTProofStr (16), then the blob's fixed part (28): the AV pairs follow.
    let mut at = 44;
    let mut pairs = Vec::new();
    while let (Some(id), Some(n)) = (u16_at(response, at), u16_at(response, at + 2)) {
        if id == 0 {
            return Some(pairs);
        }
        pairs.push((id, response.get(at + 4..at + 4 + usize::from(n))?));
        at += 4 + usize::from(n);
    }
    None
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

#[cfg(test)]
mod tests {
    use super::super::protection::ExtendedProtection;
    use super::*;
    use sspi::{ClientRequestFlags, SecurityStatus};

    const USER: &str = "svc-easgate@contoso.com";
    const PASSWORD: &str = "Lab-password!";
    const OURS: &[u8] = b"tls-server-end-point:the lab's certificate hash";
    const A_PROXYS: &[u8] = b"tls-server-end-point:a TLS-terminating proxy's hash";

    /// One client step of `sspi`'s NTLM initiator (the connector's, independent of the face).
    fn initiate(ntlm: &mut Ntlm, creds: &mut Option<AuthIdentityBuffers>, input: &[u8]) -> Vec<u8> {
        let mut input = vec![SecurityBuffer::new(input.to_vec(), BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut builder = ntlm
            .initialize_security_context()
            .with_credentials_handle(creds)
            .with_context_requirements(
                ClientRequestFlags::CONFIDENTIALITY | ClientRequestFlags::INTEGRITY,
            )
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut input)
            .with_output(&mut output);
        let r = <Ntlm as SspiImpl>::initialize_security_context_impl(ntlm, &mut builder)
            .and_then(|mut g| g.resolve_to_result())
            .unwrap();
        assert!(matches!(
            r.status,
            SecurityStatus::ContinueNeeded | SecurityStatus::Ok
        ));
        output.pop().unwrap().buffer
    }

    /// Whether the face accepts a sign-in whose client bound `sent` to its channel, with the
    /// face's Extended Protection at `check` (its own binding [`OURS`]).
    fn signs_in(sent: Option<&[u8]>, check: ExtendedProtection) -> bool {
        let mut client = Ntlm::new();
        if let Some(b) = sent {
            client.set_channel_bindings(b);
        }
        let mut creds = Some(AuthIdentityBuffers::from_utf8(
            "svc-easgate",
            "CONTOSO",
            PASSWORD,
        ));
        let negotiate = initiate(&mut client, &mut creds, &[]);
        let conn = ConnectionAuth::default();
        let mut headers = HeaderMap::new();
        let value = format!(
            "Negotiate {}",
            easgate_psrp::clixml::base64_encode(&negotiate)
        );
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        let r = challenge(&headers, &conn).expect("a NEGOTIATE is answered");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let offered = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        let challenge =
            easgate_psrp::clixml::base64_decode(offered.split_once(' ').unwrap().1).unwrap();
        let message = initiate(&mut client, &mut creds, &challenge);
        let expected = Expected::new(check, Some(OURS));
        authenticate(&message, (USER, PASSWORD), &conn, expected.as_ref()) && conn.established()
    }

    #[test]
    fn require_accepts_only_the_faces_own_binding() {
        assert!(signs_in(Some(OURS), ExtendedProtection::Require));
        // A sign-in relayed from (or offloaded by) another TLS connection.
        assert!(!signs_in(Some(A_PROXYS), ExtendedProtection::Require));
        // No MsvAvChannelBindings at all: sspi's acceptor alone would let this through.
        assert!(!signs_in(None, ExtendedProtection::Require));
    }

    #[test]
    fn allow_lets_an_unbound_sign_in_through_but_not_a_wrong_binding() {
        assert!(signs_in(Some(OURS), ExtendedProtection::Allow));
        assert!(signs_in(None, ExtendedProtection::Allow));
        assert!(!signs_in(Some(A_PROXYS), ExtendedProtection::Allow));
    }

    #[test]
    fn without_extended_protection_no_binding_is_checked() {
        assert!(signs_in(None, ExtendedProtection::None));
        assert!(signs_in(Some(A_PROXYS), ExtendedProtection::None));
    }
}
