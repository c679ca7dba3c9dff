//! Kerberos on the `/PowerShell/` face, as IIS's Windows authentication does it: the client
//! sends `Authorization: Negotiate <SPNEGO token>` or `Kerberos <AP-REQ>`, MIT's GSS-API acceptor
//! checks it against the keytab of `HTTP/localhost`, and the reply token (mutual
//! authentication, the AP-REP) goes back in `WWW-Authenticate` under the same scheme.
//!
//! Each request is authenticated on its own (the context is not kept per connection), so a
//! client must send a fresh token on every request; message encryption, which needs the
//! context kept per connection, is not implemented yet.

use std::path::Path;
use std::sync::Mutex;

use libgssapi::context::{SecurityContext, ServerCtx};
use libgssapi::credential::{Cred, CredUsage};

/// The acceptor's long-lived credential: the keys of the keytab it was made from.
pub(crate) struct Acceptor {
    cred: Cred,
}

/// Serializes the moment `KRB5_KTNAME` is set and read: MIT resolves the default keytab when
/// the credential is acquired, from that process-wide variable.
static KEYTAB_ENV: Mutex<()> = Mutex::new(());

/// What a successful acceptance yields.
pub(crate) struct Accepted {
    /// The client's principal, `user@REALM`.
    pub principal: String,
    /// The token for `WWW-Authenticate` (mutual authentication), if the mechanism sent one.
    pub reply: Option<Vec<u8>>,
}

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

    /// Accepts one client token (Kerberos completes in one round trip).
    pub fn accept(&self, token: &[u8]) -> Result<Accepted, String> {
        let mut ctx = ServerCtx::new(Some(self.cred.clone()));
        let reply = ctx
            .step(token, None)
            .map_err(|e| format!("rejected token: {e}"))?;
        if !ctx.is_complete() {
            return Err("the token needs another round trip, which Kerberos never does".into());
        }
        let principal = ctx
            .source_name()
            .map_err(|e| format!("no client name: {e}"))?
            .to_string();
        Ok(Accepted {
            principal,
            reply: reply.map(|b| b.to_vec()),
        })
    }
}
