//! Channel binding for Windows sign-in over `https://` (what IIS calls Extended Protection, on
//! by default since Exchange 2019 CU14): the RFC 5929 `tls-server-end-point` binding of the TLS
//! connection the sign-in goes over, a hash of the CAS's own certificate. The NTLM client puts
//! its MD5 (of the SEC_CHANNEL_BINDINGS structure around it) into its AUTHENTICATE message, so
//! that a sign-in relayed through another TLS connection (a man in the middle with another
//! certificate) no longer matches what the CAS sees on its own end. (Kerberos could carry it
//! in its authenticator's checksum, but see `connection` for why it does not yet.)
//!
//! A TLS-terminating proxy or load balancer in front of the CAS shows the client its own
//! certificate: the binding then names that one, and a CAS that checks it refuses the sign-in.

use sha2::Digest;

/// The prefix RFC 5929 §4 puts before the certificate's hash.
const PREFIX: &[u8] = b"tls-server-end-point:";

/// The channel binding's application data for a TLS connection whose server certificate (the
/// leaf, DER) is `cert`: `tls-server-end-point:` and the certificate's hash. The hash function
/// is the one of the certificate's signature algorithm, except that MD5 and SHA-1 become
/// SHA-256 (RFC 5929 §4.1). `Err` says why no binding can be made (a certificate that does not
/// parse, or a signature without a single hash function, such as Ed25519, for which RFC 5929
/// defines no binding).
pub fn tls_server_end_point(cert: &[u8]) -> Result<Vec<u8>, String> {
    let hash = match signature_hash(cert)? {
        Hash::Sha256 => sha2::Sha256::digest(cert).to_vec(),
        Hash::Sha224 => sha2::Sha224::digest(cert).to_vec(),
        Hash::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(cert).to_vec(),
    };
    let mut data = PREFIX.to_vec();
    data.extend_from_slice(&hash);
    Ok(data)
}

/// The hash a `tls-server-end-point` binding uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The object identifiers of the signature algorithms (their DER content bytes).
mod oid {
    pub const MD5_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
    pub const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    pub const RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    pub const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    pub const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    pub const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    pub const SHA224_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e];
    pub const SHA1_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    pub const SHA224_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01];
    pub const SHA256_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    pub const SHA384_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    pub const SHA512_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    pub const SHA1_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03];
    pub const SHA224_DSA: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x01];
    pub const SHA256_DSA: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x02];
    /// The hash functions, as RSASSA-PSS parameters name them.
    pub const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    pub const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    pub const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    pub const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
    pub const SHA224: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04];
}

/// The hash of the binding for `cert`, from its `signatureAlgorithm` (RFC 5280: `Certificate ::=
/// SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, signatureValue }`). A
/// handful of DER reads rather than a certificate parser: only this one field is needed, and
/// rustls has already verified the certificate.
fn signature_hash(cert: &[u8]) -> Result<Hash, String> {
    let bad = |what: &str| format!("the CAS's certificate does not parse ({what})");
    let (certificate, _) = tlv(cert, SEQUENCE).ok_or_else(|| bad("Certificate"))?;
    let (_, rest) = tlv(certificate, SEQUENCE).ok_or_else(|| bad("tbsCertificate"))?;
    let (algorithm, _) = tlv(rest, SEQUENCE).ok_or_else(|| bad("signatureAlgorithm"))?;
    let (id, params) = tlv(algorithm, OID).ok_or_else(|| bad("the algorithm's identifier"))?;
    let hash = match id {
        oid::MD5_RSA | oid::SHA1_RSA | oid::SHA1_ECDSA | oid::SHA1_DSA => Hash::Sha256,
        oid::SHA256_RSA | oid::SHA256_ECDSA | oid::SHA256_DSA => Hash::Sha256,
        oid::SHA224_RSA | oid::SHA224_ECDSA | oid::SHA224_DSA => Hash::Sha224,
        oid::SHA384_RSA | oid::SHA384_ECDSA => Hash::Sha384,
        oid::SHA512_RSA | oid::SHA512_ECDSA => Hash::Sha512,
        oid::RSA_PSS => pss_hash(params).ok_or_else(|| bad("the RSASSA-PSS parameters"))?,
        other => {
            return Err(format!(
                "the CAS's certificate is signed with algorithm {}, which has no single hash \
                 function to bind the channel with (RFC 5929)",
                dotted(other)
            ));
        }
    };
    Ok(hash)
}

/// The hash of RSASSA-PSS parameters (RFC 4055: `SEQUENCE { hashAlgorithm [0] DEFAULT sha1,
/// … }`); SHA-1 (the default) binds with SHA-256.
fn pss_hash(params: &[u8]) -> Option<Hash> {
    let (fields, _) = tlv(params, SEQUENCE)?;
    let Some((hash_algorithm, _)) = tlv(fields, 0xa0) else {
        return Some(Hash::Sha256);
    };
    let (identifier, _) = tlv(hash_algorithm, SEQUENCE)?;
    let (id, _) = tlv(identifier, OID)?;
    match id {
        oid::SHA1 | oid::SHA256 => Some(Hash::Sha256),
        oid::SHA224 => Some(Hash::Sha224),
        oid::SHA384 => Some(Hash::Sha384),
        oid::SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;

/// The content of the DER element of tag `tag` at the start of `der`, and what follows it.
fn tlv(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// An object identifier's dotted form, for messages.
fn dotted(id: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut value: u64 = 0;
    for &b in id {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (value / 40).min(2);
                parts.push(first);
                parts.push(value - first * 40);
            } else {
                parts.push(value);
            }
            value = 0;
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Certificates made with `openssl req -x509` for each signature algorithm; the expected
    /// hashes are `openssl dgst -sha256|-sha384|-sha512` of the same files, so that the choice
    /// of function (not our hashing) is what this checks.
    #[test]
    fn the_binding_hashes_the_certificate_with_its_signature_hash() {
        let cases: [(&str, &[u8], &str); 6] = [
            (
                "ecdsa-with-SHA256",
                include_bytes!("testdata/ecdsa-sha256.der"),
                "90dfe91d3996d8faddbf4eaecc6af31b0a5cb2654f1eaeb7a1bcca3d9a754136",
            ),
            (
                "ecdsa-with-SHA384",
                include_bytes!("testdata/ecdsa-sha384.der"),
                "f6d3990296b636810777daf3d101f0dc8ba36d8484248e8a1e544593db114138ea2d304186c78ae5d260bc0c44b812b4",
            ),
            (
                "md5WithRSAEncryption: SHA-256",
                include_bytes!("testdata/rsa-md5.der"),
                "183bf605d1d5b583453032a23afcc99488b83492c0fb193373dababe589217fd",
            ),
            (
                "sha1WithRSAEncryption: SHA-256",
                include_bytes!("testdata/rsa-sha1.der"),
                "3f37b93f926f00291c4d8ae3e143c65f886b59725366decab18a56b1ab2f09a1",
            ),
            (
                "sha512WithRSAEncryption",
                include_bytes!("testdata/rsa-sha512.der"),
                "a4f1f07eb2f79c9b79f6e0d5c17790d6ece6e59122b4cd527c15d7103959cb7ee0745f25816869bcaace17ec5d88f559500b0ed446c82f1e54735740f9f1abff",
            ),
            (
                "RSASSA-PSS with SHA-384",
                include_bytes!("testdata/rsa-pss-sha384.der"),
                "5de606cc0ef6547a9959881a584a07a9f2e3bd772317d262ea60b32eaa30d2a286217270e47dbaa55bc762f2c11ec779",
            ),
        ];
        for (name, cert, hex) in cases {
            let binding = tls_server_end_point(cert).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (prefix, hash) = binding.split_at(PREFIX.len());
            assert_eq!(prefix, b"tls-server-end-point:", "{name}");
            let shown: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(shown, hex, "{name}");
        }
    }

    #[test]
    fn ed25519_has_no_binding_and_says_why() {
        let e = tls_server_end_point(include_bytes!("testdata/ed25519.der")).unwrap_err();
        assert!(e.contains("1.3.101.112") && e.contains("RFC 5929"), "{e}");
    }

    #[test]
    fn what_is_not_a_certificate_is_refused_without_panicking() {
        let cert = include_bytes!("testdata/ecdsa-sha256.der");
        for cut in [0, 1, 2, 5, 40, cert.len() - 1] {
            // A truncated outer length no longer covers its content.
            assert!(tls_server_end_point(&cert[..cut]).is_err(), "cut at {cut}");
        }
        assert!(tls_server_end_point(b"not DER at all").is_err());
    }
}
