//! Extended Protection on the https `/PowerShell/` face, as IIS's `extendedProtection
//! tokenChecking` does it for Windows authentication: the client's NTLM or Kerberos sign-in
//! carries the hash of its TLS connection's channel binding, which the face compares with the
//! binding of its own end (RFC 5929 `tls-server-end-point` of the lab's certificate,
//! [`crate::tls::LabTls::end_point_binding`]). Basic is not affected, as in IIS.

/// The `tokenChecking` of the face's Windows authentication (over https; plain http has no
/// channel to bind, and IIS checks nothing there either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExtendedProtection {
    /// No check (`None`): bindings are ignored.
    #[default]
    None,
    /// A sign-in that carries a binding must carry the right one; one without is accepted.
    Allow,
    /// Every sign-in must carry the right binding (Exchange 2019 CU14's default for its
    /// virtual directories).
    Require,
}

/// What a connection's Windows sign-in is checked against.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// `Allow` or `Require`.
    pub check: ExtendedProtection,
    /// The channel binding's application data: `tls-server-end-point:` and the hash.
    pub application_data: Vec<u8>,
}

impl Expected {
    /// The check for a face served over TLS with `binding`, or `None` when nothing is checked.
    pub fn new(check: ExtendedProtection, binding: Option<&[u8]>) -> Option<Expected> {
        match (check, binding) {
            (ExtendedProtection::None, _) | (_, None) => None,
            (check, Some(b)) => Some(Expected {
                check,
                application_data: b.to_vec(),
            }),
        }
    }

    /// Whether a sign-in without a binding is refused.
    pub fn required(&self) -> bool {
        self.check == ExtendedProtection::Require
    }

    /// The SEC_CHANNEL_BINDINGS structure around the application data (addresses empty), as
    /// an SSPI acceptor takes it and as the client hashed it.
    pub fn sec_channel_bindings(&self) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        let len = u32::try_from(self.application_data.len()).expect("a short binding");
        out[24..28].copy_from_slice(&len.to_le_bytes());
        out[28..32].copy_from_slice(&32u32.to_le_bytes());
        out.extend_from_slice(&self.application_data);
        out
    }
}
