//! The NTLM client of remote PowerShell: a security context for one HTTP connection, made in
//! two round trips on it (our NEGOTIATE_MESSAGE, the CAS's CHALLENGE_MESSAGE in a 401, our
//! AUTHENTICATE_MESSAGE, answered 200 when the password is right), then used to seal and unseal
//! that connection's envelopes ([`super::sealed`] frames them) exactly as under Kerberos.
//!
//! The protocol is Devolutions' `sspi` (NTLMv2 with a MIC, sealing with the negotiated keys);
//! unlike Kerberos it needs no KDC and no deep stack, so it runs inline.

use sspi::ntlm::NtlmConfig;
use sspi::{
    AuthIdentityBuffers, BufferType, ClientRequestFlags, DataRepresentation, EncryptionFlags, Ntlm,
    SecurityBuffer, SecurityBufferRef, SecurityStatus, Sspi, SspiImpl,
};

/// Who signs in (from `exchange.auth`, kind `ntlm`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// As configured: `CONTOSO\svc-easgate` or `svc-easgate@contoso.com`.
    pub username: String,
    pub password: crate::config::Secret,
}

impl Settings {
    /// The user and domain NTLM hashes: `DOMAIN\user` is the pair; a UPN goes whole as the user
    /// with an empty domain, as Windows' own clients send it (the domain controller resolves it).
    fn user_and_domain(&self) -> (&str, &str) {
        match self.username.split_once('\\') {
            Some((domain, user)) => (user, domain),
            None => (self.username.as_str(), ""),
        }
    }
}

/// An NTLM security context, from its first message to the sealing of envelopes.
pub struct Context {
    ntlm: Ntlm,
    creds: Option<AuthIdentityBuffers>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ntlm::Context").finish_non_exhaustive()
    }
}

/// The first bytes of every NTLM message: what tells it from a Kerberos or SPNEGO token under
/// the same `Negotiate` scheme.
pub const SIGNATURE: &[u8] = b"NTLMSSP\0";

impl Context {
    /// A context for `s` and its NEGOTIATE_MESSAGE (the first `Authorization` token). With
    /// `binding` (the connection's `tls-server-end-point` channel binding, over https), the
    /// AUTHENTICATE_MESSAGE carries its hash (the MsvAvChannelBindings AV pair), which an IIS
    /// with Extended Protection checks against its own end of the TLS connection.
    pub fn start(s: &Settings, binding: Option<&[u8]>) -> Result<(Context, Vec<u8>), String> {
        let (user, domain) = s.user_and_domain();
        let creds = Some(AuthIdentityBuffers::from_utf8(
            user,
            domain,
            s.password.expose(),
        ));
        let mut ntlm = Ntlm::with_config(NtlmConfig::new("easgate".into()));
        if let Some(b) = binding {
            ntlm.set_channel_bindings(b);
        }
        let mut ctx = Context { ntlm, creds };
        let (status, token) = ctx.step(&[])?;
        if status != SecurityStatus::ContinueNeeded || !token.starts_with(SIGNATURE) {
            return Err(format!(
                "the NTLM client made no NEGOTIATE message ({status:?})"
            ));
        }
        Ok((ctx, token))
    }

    /// The AUTHENTICATE_MESSAGE answering the CAS's CHALLENGE_MESSAGE; after it the context
    /// seals (whether the password was right, only the CAS's next answer says).
    pub fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        if !challenge.starts_with(SIGNATURE) {
            return Err("the CAS's challenge is not an NTLM message".into());
        }
        let (status, token) = self.step(challenge)?;
        if status != SecurityStatus::Ok || token.is_empty() {
            return Err(format!(
                "the NTLM client made no AUTHENTICATE message ({status:?})"
            ));
        }
        Ok(token)
    }

    fn step(&mut self, input: &[u8]) -> Result<(SecurityStatus, Vec<u8>), String> {
        let mut input = vec![SecurityBuffer::new(input.to_vec(), BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut builder = self
            .ntlm
            .initialize_security_context()
            .with_credentials_handle(&mut self.creds)
            // Sealing asks for the keys WS-Management message encryption needs.
            .with_context_requirements(
                ClientRequestFlags::CONFIDENTIALITY | ClientRequestFlags::INTEGRITY,
            )
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut input)
            .with_output(&mut output);
        let result =
            <Ntlm as SspiImpl>::initialize_security_context_impl(&mut self.ntlm, &mut builder)
                .and_then(|mut g| g.resolve_to_result())
                .map_err(|e| format!("NTLM: {}", e.description))?;
        let token = output.pop().map(|b| b.buffer).unwrap_or_default();
        Ok((result.status, token))
    }

    /// Seals an envelope: the 16-byte signature (the wrap "header") and the sealed data.
    pub fn seal(&mut self, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut signature = vec![0u8; 16];
        let mut data = plain.to_vec();
        let mut buffers = [
            SecurityBufferRef::token_buf(&mut signature),
            SecurityBufferRef::data_buf(&mut data),
        ];
        self.ntlm
            .encrypt_message(EncryptionFlags::empty(), &mut buffers)
            .map_err(|e| format!("sealing: {}", e.description))?;
        Ok((signature, data))
    }

    /// Unseals an answer sealed by the CAS into its signature and data.
    pub fn unseal(&mut self, signature: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        let mut signature = signature.to_vec();
        let mut data = data.to_vec();
        let mut buffers = [
            SecurityBufferRef::token_buf(&mut signature),
            SecurityBufferRef::data_buf(&mut data),
        ];
        self.ntlm
            .decrypt_message(&mut buffers)
            .map_err(|e| format!("unsealing: {}", e.description))?;
        Ok(buffers[1].data().to_vec())
    }
}

/// Why the CAS gave no challenge to our NEGOTIATE message, from the schemes its 401 offered.
pub fn not_offered(cas: &str, offered: &[String]) -> String {
    let shown = super::connection::shown(offered);
    if super::connection::offers_windows(offered) {
        format!(
            "{cas} offers Windows authentication ({shown}) but did not answer the NTLM \
             negotiation with a challenge: NTLM is likely disabled for it (Negotiate limited to \
             Kerberos, or an NTLM-blocking policy); allow NTLM on the CAS's PowerShell virtual \
             directory or use kind = \"kerberos\" in exchange.auth"
        )
    } else {
        format!(
            "{cas} does not offer NTLM (its 401 offers: {shown}): turn on Windows \
             authentication (Negotiate/NTLM) on the CAS's PowerShell virtual directory \
             (Set-PowerShellVirtualDirectory -WindowsAuthentication $true), or change \
             exchange.auth to a kind the CAS offers"
        )
    }
}

/// The CAS refused the AUTHENTICATE message: a wrong password, an unknown or locked account,
/// or (over HTTPS) a channel binding that does not match the CAS's end of the connection.
pub fn refused(cas: &str, username: &str) -> String {
    format!(
        "{cas} refused the NTLM sign-in of `{username}`: wrong password or unknown user (or a \
         locked or disabled account): check exchange.auth.username (CONTOSO\\svc-easgate or \
         svc-easgate@contoso.com) and exchange.auth.password{}",
        super::connection::extended_protection_hint(cas)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(username: &str, password: &str) -> Settings {
        Settings {
            username: username.into(),
            password: crate::config::Secret::new(password),
        }
    }

    #[test]
    fn a_down_level_name_splits_and_a_upn_goes_whole() {
        assert_eq!(
            settings(r"CONTOSO\svc-easgate", "p").user_and_domain(),
            ("svc-easgate", "CONTOSO")
        );
        assert_eq!(
            settings("svc-easgate@contoso.com", "p").user_and_domain(),
            ("svc-easgate@contoso.com", "")
        );
    }

    /// Our context against `sspi`'s acceptor: sealed both ways, and a wrong password is
    /// refused at the acceptor.
    fn handshake(client_pw: &str, server_pw: &str) -> Result<(Context, Ntlm), String> {
        bound_handshake(client_pw, server_pw, None, None)
    }

    /// The same with the client's channel binding and the one the acceptor expects.
    fn bound_handshake(
        client_pw: &str,
        server_pw: &str,
        client_binding: Option<&[u8]>,
        server_binding: Option<&[u8]>,
    ) -> Result<(Context, Ntlm), String> {
        use sspi::ServerRequestFlags;
        let s = settings(r"LAB\svc-easgate", client_pw);
        let (mut client, negotiate) = Context::start(&s, client_binding)?;
        let mut server = Ntlm::new();
        let mut server_creds = Some(AuthIdentityBuffers::from_utf8(
            "svc-easgate",
            "LAB",
            server_pw,
        ));
        let mut accept = |server: &mut Ntlm, token: Vec<u8>| {
            let mut input = vec![SecurityBuffer::new(token, BufferType::Token)];
            if let Some(b) = server_binding {
                // SEC_CHANNEL_BINDINGS: no addresses, the application data after the header.
                let mut bindings = vec![0u8; 32];
                bindings[24..28].copy_from_slice(&(b.len() as u32).to_le_bytes());
                bindings[28..32].copy_from_slice(&32u32.to_le_bytes());
                bindings.extend_from_slice(b);
                input.push(SecurityBuffer::new(bindings, BufferType::ChannelBindings));
            }
            let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
            let builder = server
                .accept_security_context()
                .with_credentials_handle(&mut server_creds)
                .with_context_requirements(ServerRequestFlags::empty())
                .with_target_data_representation(DataRepresentation::Native)
                .with_input(&mut input)
                .with_output(&mut output);
            <Ntlm as SspiImpl>::accept_security_context_impl(server, builder)
                .and_then(|mut g| g.resolve_to_result())
                .map_err(|e| e.description)?;
            Ok::<_, String>(output.pop().map(|b| b.buffer).unwrap_or_default())
        };
        let challenge = accept(&mut server, negotiate)?;
        let authenticate = client.respond(&challenge)?;
        accept(&mut server, authenticate)?;
        server
            .complete_auth_token(&mut [])
            .map_err(|e| e.description)?;
        Ok((client, server))
    }

    #[test]
    fn envelopes_seal_and_unseal_both_ways_after_the_handshake() {
        let (mut client, mut server) = handshake("right", "right").unwrap();
        for round in 0..3 {
            let envelope = format!("<s:Envelope>request {round}</s:Envelope>");
            let (sig, data) = client.seal(envelope.as_bytes()).unwrap();
            assert_eq!(sig.len(), 16);
            assert_eq!(data.len(), envelope.len());
            assert_ne!(data, envelope.as_bytes());
            let (mut s, mut d) = (sig.clone(), data.clone());
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut s),
                SecurityBufferRef::data_buf(&mut d),
            ];
            server.decrypt_message(&mut buffers).unwrap();
            assert_eq!(buffers[1].data(), envelope.as_bytes());

            let answer = format!("<s:Envelope>answer {round}</s:Envelope>").into_bytes();
            let mut s = vec![0u8; 16];
            let mut d = answer.clone();
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut s),
                SecurityBufferRef::data_buf(&mut d),
            ];
            server
                .encrypt_message(EncryptionFlags::empty(), &mut buffers)
                .unwrap();
            assert_eq!(client.unseal(&s, &d).unwrap(), answer);
        }
    }

    #[test]
    fn a_wrong_password_is_refused_by_the_acceptor() {
        let e = handshake("wrong", "right").unwrap_err();
        assert!(e.contains("no candidate credential matched"), "{e}");
    }

    #[test]
    fn a_bound_authenticate_is_accepted_on_its_channel_and_refused_on_another() {
        let ours = b"tls-server-end-point:our CAS's certificate hash".as_slice();
        let theirs = b"tls-server-end-point:a proxy's certificate hash".as_slice();
        bound_handshake("right", "right", Some(ours), Some(ours)).unwrap();
        let e = bound_handshake("right", "right", Some(theirs), Some(ours)).unwrap_err();
        assert!(e.contains("Channel bindings hash mismatch"), "{e}");
    }

    #[test]
    fn the_messages_name_the_cas_and_the_fix() {
        let cas = "https://cas01.contoso.com/PowerShell/";
        let basic_only = not_offered(cas, &["Basic realm=\"\"".into()]);
        assert!(basic_only.contains(cas) && basic_only.contains("-WindowsAuthentication $true"));
        let kerberos_only = not_offered(cas, &["Negotiate".into()]);
        assert!(kerberos_only.contains("NTLM is likely disabled"));
        assert!(kerberos_only.contains("kind = \"kerberos\""));
        let wrong = refused(cas, r"CONTOSO\svc-easgate");
        assert!(wrong.contains(cas) && wrong.contains("wrong password or unknown user"));
        assert!(wrong.contains("exchange.auth.password"));
        // Over HTTPS the same refusal may be a binding that names a TLS-terminating proxy's
        // certificate; over HTTP nothing is bound.
        assert!(wrong.contains("Extended Protection") && wrong.contains("terminates TLS"));
        let plain = refused("http://cas01.contoso.com/PowerShell/", "svc@contoso.com");
        assert!(!plain.contains("Extended Protection"), "{plain}");
    }
}
