//! Keytabs: the service account's long-term Kerberos keys in a file, so that [`super::kerberos`]
//! signs in without the account's password on disk. The file is MIT's keytab format, version
//! 0x0502, as `ktpass` (Windows), `ktutil`, `msktutil` and `kadmin ktadd` write it.
//!
//! [`load`] reads a keytab and picks the key to sign in with: an entry of the account's
//! principal (its realm compared without regard to case, as Active Directory's are written
//! either way), of the highest key version (kvno) the keytab holds for it, AES256 before
//! AES128: the only encryption types `sspi`'s Kerberos client asks the KDC for. Everything that
//! can be wrong with the file is a [`KeytabError`] naming it: unreadable, truncated or not a
//! keytab (with the byte offset), no entry for the account (with the principals it does hold),
//! or only keys of types easgate cannot use (RC4, DES).
//!
//! The parser checks every length against the bytes left in its entry and in the file: a
//! damaged or hostile file is an error, never a panic or an allocation of its choosing.

use std::fmt;
use std::path::{Path, PathBuf};

use picky_krb::crypto::CipherSuite;

/// The keytab format version MIT Kerberos has written since 1.0 (big-endian throughout).
const VERSION_2: u16 = 0x0502;
/// The first version: written in the writing host's byte order, which the file does not record.
const VERSION_1: u16 = 0x0501;

/// RFC 3961/3962 encryption type numbers of the keys easgate can sign in with.
const AES128_CTS_HMAC_SHA1_96: u16 = 17;
const AES256_CTS_HMAC_SHA1_96: u16 = 18;

/// One keytab entry: a key of a principal.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The principal's name components (`svc-easgate`, or `HTTP` and `cas01.contoso.com`).
    pub components: Vec<String>,
    pub realm: String,
    /// The key version number: the 32-bit one when the entry has it, else the 8-bit one.
    pub kvno: u32,
    pub enctype: u16,
    pub key: Vec<u8>,
}

impl Entry {
    /// The principal as Kerberos writes it: `svc-easgate@CONTOSO.COM`.
    pub fn principal(&self) -> String {
        format!("{}@{}", self.components.join("/"), self.realm)
    }
}

// Keys stay out of logs and panics.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("principal", &self.principal())
            .field("kvno", &self.kvno)
            .field("enctype", &enctype_name(self.enctype))
            .finish_non_exhaustive()
    }
}

/// The key picked for a sign-in.
pub struct Key {
    /// The principal as the keytab writes it.
    pub principal: String,
    pub kvno: u32,
    pub enctype: CipherSuite,
    pub key: sspi::Secret<Vec<u8>>,
}

impl Key {
    /// `kvno 3, aes256-cts-hmac-sha1-96`, for messages.
    pub fn describe(&self) -> String {
        let name = match self.enctype {
            CipherSuite::Aes128CtsHmacSha196 => enctype_name(AES128_CTS_HMAC_SHA1_96),
            _ => enctype_name(AES256_CTS_HMAC_SHA1_96),
        };
        format!("kvno {}, {name}", self.kvno)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("principal", &self.principal)
            .field("kvno", &self.kvno)
            .field("enctype", &self.enctype)
            .finish_non_exhaustive()
    }
}

/// Why a keytab gives no key to sign in with.
#[derive(Debug, thiserror::Error)]
pub enum KeytabError {
    #[error("cannot read the keytab {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a keytab easgate can read: at byte {offset}, {what}")]
    Format {
        path: PathBuf,
        offset: usize,
        what: String,
    },
    #[error(
        "the keytab {path} holds no key for `{wanted}` (exchange.auth.username and realm); it \
         holds {}: export the account's keys into it, or name its principal in \
         exchange.auth.username",
        list(held, "no entry at all")
    )]
    NoEntry {
        path: PathBuf,
        wanted: String,
        held: Vec<String>,
    },
    #[error(
        "the keytab {path} holds only {} keys for `{principal}` (kvno {kvno}), and easgate signs \
         in with AES keys only: export it again with an AES key (Windows: ktpass … -crypto \
         AES256-SHA1, after allowing AES for the account: Set-ADUser <account> \
         -KerberosEncryptionType AES128,AES256; MIT: kadmin ktadd -e \
         aes256-cts-hmac-sha1-96:normal)",
        list(enctypes, "")
    )]
    NoAesKey {
        path: PathBuf,
        principal: String,
        kvno: u32,
        enctypes: Vec<String>,
    },
}

fn list(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

/// Where reading a keytab's bytes stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub offset: usize,
    pub what: String,
}

/// Reads the keytab at `path` and picks the key of `account@realm`.
pub fn load(path: &Path, account: &str, realm: &str) -> Result<Key, KeytabError> {
    let bytes = std::fs::read(path).map_err(|source| KeytabError::Read {
        path: path.to_owned(),
        source,
    })?;
    let entries = parse(&bytes).map_err(|e| KeytabError::Format {
        path: path.to_owned(),
        offset: e.offset,
        what: e.what,
    })?;
    pick(&entries, account, realm).map_err(|e| e.at(path))
}

/// Why [`pick`] found no key; [`Unpicked::at`] names the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Unpicked {
    NoEntry {
        wanted: String,
        held: Vec<String>,
    },
    NoAesKey {
        principal: String,
        kvno: u32,
        enctypes: Vec<String>,
    },
}

impl Unpicked {
    fn at(self, path: &Path) -> KeytabError {
        let path = path.to_owned();
        match self {
            Unpicked::NoEntry { wanted, held } => KeytabError::NoEntry { path, wanted, held },
            Unpicked::NoAesKey {
                principal,
                kvno,
                enctypes,
            } => KeytabError::NoAesKey {
                path,
                principal,
                kvno,
                enctypes,
            },
        }
    }
}

/// The key of `account@realm` among `entries`: of its highest kvno (older ones are keys of
/// passwords the account no longer has), AES256 before AES128.
pub fn pick(entries: &[Entry], account: &str, realm: &str) -> Result<Key, Unpicked> {
    let wanted = format!("{account}@{}", realm.to_ascii_uppercase());
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            // Realms are upper-case by convention and Active Directory's account names are
            // case-insensitive; a keytab written with `contoso.com` is still CONTOSO.COM's.
            e.realm.eq_ignore_ascii_case(realm)
                && e.components.join("/").eq_ignore_ascii_case(account)
        })
        .collect();
    let Some(kvno) = mine.iter().map(|e| e.kvno).max() else {
        let mut held: Vec<String> = entries.iter().map(Entry::principal).collect();
        held.sort();
        held.dedup();
        return Err(Unpicked::NoEntry { wanted, held });
    };
    let current: Vec<&Entry> = mine.into_iter().filter(|e| e.kvno == kvno).collect();
    let best = [AES256_CTS_HMAC_SHA1_96, AES128_CTS_HMAC_SHA1_96]
        .into_iter()
        .find_map(|t| current.iter().find(|e| e.enctype == t));
    let Some(best) = best else {
        let mut enctypes: Vec<String> = current.iter().map(|e| enctype_name(e.enctype)).collect();
        enctypes.dedup();
        return Err(Unpicked::NoAesKey {
            principal: current[0].principal(),
            kvno,
            enctypes,
        });
    };
    let enctype = if best.enctype == AES256_CTS_HMAC_SHA1_96 {
        CipherSuite::Aes256CtsHmacSha196
    } else {
        CipherSuite::Aes128CtsHmacSha196
    };
    Ok(Key {
        principal: best.principal(),
        kvno,
        enctype,
        key: best.key.clone().into(),
    })
}

/// The name MIT Kerberos gives an encryption type (`klist -e`), or its number.
pub fn enctype_name(t: u16) -> String {
    match t {
        1 => "des-cbc-crc".into(),
        2 => "des-cbc-md4".into(),
        3 => "des-cbc-md5".into(),
        16 => "des3-cbc-sha1".into(),
        AES128_CTS_HMAC_SHA1_96 => "aes128-cts-hmac-sha1-96".into(),
        AES256_CTS_HMAC_SHA1_96 => "aes256-cts-hmac-sha1-96".into(),
        19 => "aes128-cts-hmac-sha256-128".into(),
        20 => "aes256-cts-hmac-sha384-192".into(),
        23 => "rc4-hmac".into(),
        24 => "rc4-hmac-exp".into(),
        25 => "camellia128-cts-cmac".into(),
        26 => "camellia256-cts-cmac".into(),
        other => format!("encryption type {other}"),
    }
}

/// The entries of a keytab file's bytes. Deleted entries (negative lengths, which `ktutil` and
/// `kadmin ktremove` leave as holes) are skipped; a zero length ends the file, as in MIT's
/// reader.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, FormatError> {
    let mut file = Reader {
        bytes,
        at: 0,
        end: bytes.len(),
    };
    let version = file.u16("the format version")?;
    match version {
        VERSION_2 => {}
        VERSION_1 => {
            return Err(FormatError {
                offset: 0,
                what: "it is a version 1 keytab (0x0501, in the byte order of the host that \
                       wrote it, which the file does not say): export it again with a current \
                       ktpass, ktutil or kadmin, which write version 2 (0x0502)"
                    .into(),
            });
        }
        other => {
            return Err(FormatError {
                offset: 0,
                what: format!(
                    "it starts with 0x{other:04x}, where a keytab starts with its version, \
                     0x0502"
                ),
            });
        }
    }
    let mut entries = Vec::new();
    while file.at < file.end {
        let at = file.at;
        let size = file.u32("an entry's length")? as i32;
        if size == 0 {
            break;
        }
        if size < 0 {
            let hole = size.unsigned_abs() as usize;
            file.take(hole, "a deleted entry")
                .map_err(|e| e.because(format!("the deleted entry at byte {at}")))?;
            continue;
        }
        let size = size as usize;
        let start = file.at;
        file.take(size, "an entry").map_err(|_| FormatError {
            offset: at,
            what: format!(
                "an entry of {size} bytes, but the file has {} after its length",
                file.end - start
            ),
        })?;
        let mut entry = Reader {
            bytes,
            at: start,
            end: start + size,
        };
        entries.push(read_entry(&mut entry)?);
    }
    Ok(entries)
}

fn read_entry(r: &mut Reader) -> Result<Entry, FormatError> {
    let count = r.u16("the number of name components")?;
    let realm = r.text("the realm")?;
    let mut components = Vec::new();
    for _ in 0..count {
        components.push(r.text("a name component")?);
    }
    let _name_type = r.u32("the name type")?;
    let _timestamp = r.u32("the timestamp")?;
    let kvno8 = r.u8("the key version")?;
    let enctype = r.u16("the encryption type")?;
    let key_at = r.at;
    let key = r.octets("the key")?.to_vec();
    let expected = match enctype {
        AES128_CTS_HMAC_SHA1_96 => Some(16),
        AES256_CTS_HMAC_SHA1_96 => Some(32),
        _ => None,
    };
    if let Some(n) = expected
        && key.len() != n
    {
        return Err(FormatError {
            offset: key_at,
            what: format!(
                "a {} key of {} bytes (it has {n})",
                enctype_name(enctype),
                key.len()
            ),
        });
    }
    // The 32-bit kvno follows when the entry has room for it (MIT 1.7+); 0 means "use the 8-bit
    // one", which wraps after 255 password changes.
    let mut kvno = u32::from(kvno8);
    if r.end - r.at >= 4 {
        let long = r.u32("the 32-bit key version")?;
        if long != 0 {
            kvno = long;
        }
    }
    Ok(Entry {
        components,
        realm,
        kvno,
        enctype,
        key,
    })
}

/// Reads big-endian fields from `bytes[at..end]`, refusing to read past `end`.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let left = self.end - self.at;
        if n > left {
            return Err(FormatError {
                offset: self.at,
                what: format!("{what} needs {n} bytes and only {left} are left: truncated"),
            });
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, FormatError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 16-bit length and that many bytes.
    fn octets(&mut self, what: &str) -> Result<&'a [u8], FormatError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }

    fn text(&mut self, what: &str) -> Result<String, FormatError> {
        Ok(String::from_utf8_lossy(self.octets(what)?).into_owned())
    }
}

impl FormatError {
    fn because(self, context: String) -> FormatError {
        FormatError {
            offset: self.offset,
            what: format!("{context}: {}", self.what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by MIT `ktutil` (`addent -password -p … -k … -e …`, then `wkt`):
    /// svc-easgate@CONTOSO.COM kvno 2 aes256; kvno 3 aes256, aes128 and rc4-hmac;
    /// HTTP/cas01.contoso.com@CONTOSO.COM kvno 7 aes256; legacy@CONTOSO.COM kvno 1 rc4-hmac.
    const CONTOSO: &[u8] = include_bytes!("fixtures/contoso.keytab");

    /// `klist -kK fixtures/contoso.keytab` for svc-easgate, kvno 3, aes256.
    const SVC_KVNO3_AES256: &str =
        "220a8bc145fc639fef873b744f04763005a39b763cca41f06ec9d7f797219380";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// One version-2 entry, byte by byte.
    fn entry(
        components: &[&str],
        realm: &str,
        kvno8: u8,
        enctype: u16,
        key: &[u8],
        kvno32: Option<u32>,
    ) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&(components.len() as u16).to_be_bytes());
        e.extend_from_slice(&(realm.len() as u16).to_be_bytes());
        e.extend_from_slice(realm.as_bytes());
        for c in components {
            e.extend_from_slice(&(c.len() as u16).to_be_bytes());
            e.extend_from_slice(c.as_bytes());
        }
        e.extend_from_slice(&1u32.to_be_bytes()); // KRB5_NT_PRINCIPAL
        e.extend_from_slice(&0x6b16_c8dfu32.to_be_bytes());
        e.push(kvno8);
        e.extend_from_slice(&enctype.to_be_bytes());
        e.extend_from_slice(&(key.len() as u16).to_be_bytes());
        e.extend_from_slice(key);
        if let Some(k) = kvno32 {
            e.extend_from_slice(&k.to_be_bytes());
        }
        let mut out = (e.len() as u32).to_be_bytes().to_vec();
        out.extend(e);
        out
    }

    fn keytab(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = VERSION_2.to_be_bytes().to_vec();
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn a_ktutil_keytab_reads_as_klist_lists_it() {
        let entries = parse(CONTOSO).unwrap();
        let listed: Vec<(String, u32, String)> = entries
            .iter()
            .map(|e| (e.principal(), e.kvno, enctype_name(e.enctype)))
            .collect();
        let want = [
            ("svc-easgate@CONTOSO.COM", 2, "aes256-cts-hmac-sha1-96"),
            ("svc-easgate@CONTOSO.COM", 3, "aes256-cts-hmac-sha1-96"),
            ("svc-easgate@CONTOSO.COM", 3, "aes128-cts-hmac-sha1-96"),
            ("svc-easgate@CONTOSO.COM", 3, "rc4-hmac"),
            (
                "HTTP/cas01.contoso.com@CONTOSO.COM",
                7,
                "aes256-cts-hmac-sha1-96",
            ),
            ("legacy@CONTOSO.COM", 1, "rc4-hmac"),
        ];
        let want: Vec<(String, u32, String)> = want
            .iter()
            .map(|(p, k, t)| (p.to_string(), *k, t.to_string()))
            .collect();
        assert_eq!(listed, want);
        assert_eq!(hex(&entries[1].key), SVC_KVNO3_AES256);
    }

    #[test]
    fn the_account_gets_its_newest_aes256_key_whatever_the_case_of_its_realm() {
        let entries = parse(CONTOSO).unwrap();
        for (account, realm) in [
            ("svc-easgate", "CONTOSO.COM"),
            ("svc-easgate", "contoso.com"),
            ("SVC-EASGATE", "Contoso.Com"),
        ] {
            let key = pick(&entries, account, realm).unwrap();
            assert_eq!(key.principal, "svc-easgate@CONTOSO.COM");
            assert_eq!(key.kvno, 3);
            assert_eq!(key.enctype, CipherSuite::Aes256CtsHmacSha196);
            assert_eq!(hex(key.key.as_ref()), SVC_KVNO3_AES256);
            assert_eq!(key.describe(), "kvno 3, aes256-cts-hmac-sha1-96");
        }
        let spn = pick(&entries, "HTTP/cas01.contoso.com", "CONTOSO.COM").unwrap();
        assert_eq!(spn.kvno, 7);
    }

    #[test]
    fn aes128_is_taken_when_the_newest_kvno_has_no_aes256() {
        let k128 = [0x11u8; 16];
        let k256 = [0x22u8; 32];
        let bytes = keytab(&[
            entry(
                &["svc"],
                "CONTOSO.COM",
                4,
                AES256_CTS_HMAC_SHA1_96,
                &k256,
                None,
            ),
            entry(
                &["svc"],
                "CONTOSO.COM",
                5,
                AES128_CTS_HMAC_SHA1_96,
                &k128,
                None,
            ),
        ]);
        let key = pick(&parse(&bytes).unwrap(), "svc", "CONTOSO.COM").unwrap();
        assert_eq!(
            (key.kvno, key.enctype),
            (5, CipherSuite::Aes128CtsHmacSha196)
        );
    }

    #[test]
    fn the_32_bit_kvno_wins_over_the_8_bit_one_unless_it_is_zero() {
        let k = [0x33u8; 32];
        let bytes = keytab(&[
            entry(
                &["svc"],
                "CONTOSO.COM",
                44,
                AES256_CTS_HMAC_SHA1_96,
                &k,
                Some(300),
            ),
            entry(
                &["svc"],
                "CONTOSO.COM",
                45,
                AES256_CTS_HMAC_SHA1_96,
                &k,
                Some(0),
            ),
        ]);
        let entries = parse(&bytes).unwrap();
        assert_eq!(entries[0].kvno, 300);
        assert_eq!(entries[1].kvno, 45);
        assert_eq!(pick(&entries, "svc", "CONTOSO.COM").unwrap().kvno, 300);
    }

    #[test]
    fn deleted_entries_are_skipped_and_a_zero_length_ends_the_file() {
        let k = [0x44u8; 32];
        let mut bytes = keytab(&[]);
        bytes.extend_from_slice(&(-6i32).to_be_bytes());
        bytes.extend_from_slice(&[0xff; 6]);
        bytes.extend(entry(
            &["svc"],
            "CONTOSO.COM",
            1,
            AES256_CTS_HMAC_SHA1_96,
            &k,
            None,
        ));
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(b"anything after the end");
        let entries = parse(&bytes).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].principal(), "svc@CONTOSO.COM");
    }

    #[test]
    fn no_entry_for_the_account_lists_what_the_keytab_holds() {
        let e = pick(&parse(CONTOSO).unwrap(), "svc-other", "CONTOSO.COM").unwrap_err();
        assert_eq!(
            e,
            Unpicked::NoEntry {
                wanted: "svc-other@CONTOSO.COM".into(),
                held: vec![
                    "HTTP/cas01.contoso.com@CONTOSO.COM".into(),
                    "legacy@CONTOSO.COM".into(),
                    "svc-easgate@CONTOSO.COM".into(),
                ],
            }
        );
        let shown = e.at(Path::new("/etc/easgate/svc.keytab")).to_string();
        for words in [
            "/etc/easgate/svc.keytab",
            "`svc-other@CONTOSO.COM`",
            "legacy@CONTOSO.COM, svc-easgate@CONTOSO.COM",
        ] {
            assert!(shown.contains(words), "{words} in {shown}");
        }
        let other_realm = pick(&parse(CONTOSO).unwrap(), "svc-easgate", "FABRIKAM.COM");
        assert!(matches!(other_realm, Err(Unpicked::NoEntry { .. })));
    }

    #[test]
    fn only_rc4_or_des_keys_are_named_with_the_way_to_aes() {
        let e = pick(&parse(CONTOSO).unwrap(), "legacy", "CONTOSO.COM").unwrap_err();
        let shown = e.at(Path::new("legacy.keytab")).to_string();
        for words in [
            "legacy.keytab",
            "only rc4-hmac keys",
            "`legacy@CONTOSO.COM` (kvno 1)",
            "-crypto AES256-SHA1",
        ] {
            assert!(shown.contains(words), "{words} in {shown}");
        }
        let bytes = keytab(&[
            entry(&["svc"], "CONTOSO.COM", 2, 3, &[0x55; 8], None),
            entry(&["svc"], "CONTOSO.COM", 2, 23, &[0x66; 16], None),
        ]);
        let e = pick(&parse(&bytes).unwrap(), "svc", "CONTOSO.COM").unwrap_err();
        assert_eq!(
            e,
            Unpicked::NoAesKey {
                principal: "svc@CONTOSO.COM".into(),
                kvno: 2,
                enctypes: vec!["des-cbc-md5".into(), "rc4-hmac".into()],
            }
        );
    }

    #[test]
    fn what_is_not_a_version_2_keytab_is_refused_at_byte_0() {
        for (bytes, words) in [
            (&b""[..], "truncated"),
            (&[0x05][..], "truncated"),
            (&b"[libdefaults]\n"[..], "0x5b6c"),
            (&[0x05, 0x01, 0, 0, 0, 0][..], "version 1"),
        ] {
            let e = parse(bytes).unwrap_err();
            assert_eq!(e.offset, 0, "{bytes:?}");
            assert!(e.what.contains(words), "{words} in {}", e.what);
        }
        // An empty keytab (only its version) holds nothing, which `pick` says.
        assert_eq!(parse(&[0x05, 0x02]).unwrap(), vec![]);
    }

    #[test]
    fn a_truncated_or_damaged_keytab_names_the_byte_and_never_panics() {
        // Cut the ktutil keytab at every length: each is a clean error or a shorter keytab
        // (a cut exactly between entries).
        for n in 0..CONTOSO.len() {
            match parse(&CONTOSO[..n]) {
                Ok(entries) => assert!(entries.len() < 6, "cut at {n}"),
                Err(e) => assert!(e.offset <= n, "cut at {n}: {e:?}"),
            }
        }
        // The first entry's length runs past the end of the file.
        let e = parse(&CONTOSO[..40]).unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.what.contains("an entry of 77 bytes"), "{}", e.what);
        // A component length pointing past its entry (but not past the file).
        let mut bad = CONTOSO.to_vec();
        bad[8] = 0xff; // the realm's length, high byte
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.offset, 10);
        assert!(e.what.contains("the realm needs"), "{}", e.what);
        // An AES256 key of the wrong length.
        let bytes = keytab(&[entry(
            &["svc"],
            "C",
            1,
            AES256_CTS_HMAC_SHA1_96,
            &[0; 16],
            None,
        )]);
        let e = parse(&bytes).unwrap_err();
        assert!(
            e.what
                .contains("aes256-cts-hmac-sha1-96 key of 16 bytes (it has 32)"),
            "{}",
            e.what
        );
        // A deleted entry larger than the file, and i32::MIN.
        for len in [-1000i32, i32::MIN] {
            let mut bytes = keytab(&[]);
            bytes.extend_from_slice(&len.to_be_bytes());
            let e = parse(&bytes).unwrap_err();
            assert!(e.what.contains("deleted entry at byte 2"), "{}", e.what);
        }
        // Pseudo-random bytes after a valid version: errors, never a panic.
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..2000 {
            let mut bytes = vec![0x05, 0x02];
            for _ in 0..(x % 200) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                bytes.push(x as u8);
            }
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(
            Path::new("/nonexistent/easgate/svc.keytab"),
            "svc",
            "CONTOSO.COM",
        )
        .unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with("cannot read the keytab /nonexistent/easgate/svc.keytab:"),
            "{shown}"
        );
    }
}
