//! TLS for the Graph + login listener (`LabOptions::tls`, `easgate sim --tls-ca`) and the CAS
//! listeners (`LabOptions::cas_tls`, the REST and PowerShell faces): clients that
//! insist on an `https` authority, as Microsoft's own (azure-identity, MSAL) do, sign in to the
//! lab unmodified, trusting the lab's certificate authority through their usual CA bundle
//! setting (`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`).
//!
//! Each lab generates its own authority and one server certificate it signs for the listen
//! address and `localhost` (or the names given): a client is given the authority's PEM, never a key, and nothing
//! outlives the lab. A separate authority rather than one self-signed server certificate: an
//! authority and the certificate it signed is the shape every verifier accepts, while a server
//! certificate trusted as its own issuer is accepted by some and refused by others.

use std::sync::Arc;

use sha2::Digest;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A lab's TLS: the authority clients trust and the acceptor its listener serves with.
#[derive(Clone)]
pub(crate) struct LabTls {
    /// The authority's certificate, PEM.
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
    /// The channel binding of every connection the acceptor serves (RFC 5929
    /// `tls-server-end-point`: the prefix and the SHA-256 of the server certificate), what the
    /// `/PowerShell/` face checks a Windows sign-in against under Extended Protection.
    pub end_point_binding: Vec<u8>,
}

impl std::fmt::Debug for LabTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabTls").finish_non_exhaustive()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the lab's TLS certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the lab's generated TLS certificate was refused: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

impl LabTls {
    /// A new authority and a server certificate for `names` (IP addresses or host names).
    pub fn generate(names: Vec<String>) -> Result<Self, TlsError> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "easgate lab certificate authority");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // The authority's key signs the server certificate, so its algorithm is that
        // certificate's signature algorithm, whose hash (SHA-256) the channel binding uses.
        let ca = CertifiedIssuer::self_signed(
            ca,
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        )?;

        let mut server = CertificateParams::new(names)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "easgate lab");
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = server.signed_by(&key, &ca)?;
        let mut end_point_binding = b"tls-server-end-point:".to_vec();
        end_point_binding.extend_from_slice(&sha2::Sha256::digest(cert.der()));

        let config = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
        Ok(Self {
            ca_pem: ca.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            end_point_binding,
        })
    }
}
