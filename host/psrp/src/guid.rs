//! GUIDs as PSRP carries them: text in CLIXML and WS-Management, and .NET's mixed-endian
//! 16 bytes in message headers (the first three groups little-endian, the last eight bytes as
//! written).

use std::fmt;
use std::str::FromStr;

/// A GUID, stored in its textual (big-endian) byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

/// A text that is not a GUID.
#[derive(Debug, Clone, thiserror::Error)]
#[error("'{0}' is not a GUID (expected 8-4-4-4-12 hexadecimal digits)")]
pub struct GuidError(pub String);

impl Guid {
    pub const NIL: Guid = Guid([0; 16]);

    pub const fn from_u128(v: u128) -> Self {
        Guid(v.to_be_bytes())
    }

    pub const fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// The 16 bytes as .NET's `Guid.ToByteArray()` writes them (the order of message headers).
    pub fn to_dotnet_bytes(&self) -> [u8; 16] {
        let b = self.0;
        let mut o = b;
        o[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        o[4..6].copy_from_slice(&[b[5], b[4]]);
        o[6..8].copy_from_slice(&[b[7], b[6]]);
        o
    }

    /// Inverse of [`Guid::to_dotnet_bytes`].
    pub fn from_dotnet_bytes(b: [u8; 16]) -> Self {
        // The swap is its own inverse.
        Guid(Guid(b).to_dotnet_bytes())
    }

    /// A fresh random (version 4) GUID, drawn from the process's hasher seed and a counter:
    /// unique within and across runs, which is all session and pipeline ids need.
    pub fn new_v4() -> Self {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let state = RandomState::new();
        let mut h1 = state.build_hasher();
        h1.write_u64(n);
        let mut h2 = state.build_hasher();
        h2.write_u64(!n);
        h2.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let mut b = ((u128::from(h1.finish()) << 64) | u128::from(h2.finish())).to_be_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl FromStr for Guid {
    type Err = GuidError;

    /// Accepts `8-4-4-4-12` hex, optionally in braces, any case (as .NET and WS-Management
    /// write them: `uuid:` prefixes are the caller's to strip).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GuidError(s.to_owned());
        let t = s.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(t);
        if t.len() != 36 {
            return Err(err());
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, c) in t.bytes().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(err());
                }
                continue;
            }
            let v = (c as char).to_digit(16).ok_or_else(err)? as u8;
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        Ok(Guid(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotnet_byte_order_swaps_the_first_three_groups() {
        let g: Guid = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        assert_eq!(
            g.to_dotnet_bytes(),
            [
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(Guid::from_dotnet_bytes(g.to_dotnet_bytes()), g);
        assert_eq!(g.to_string(), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(
            "{00112233-4455-6677-8899-AABBCCDDEEFF}"
                .parse::<Guid>()
                .unwrap(),
            g
        );
    }

    #[test]
    fn rejects_what_is_not_a_guid() {
        for bad in [
            "",
            "0011223344556677-8899-aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeefg",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fresh_guids_differ_and_are_version_4() {
        let a = Guid::new_v4();
        let b = Guid::new_v4();
        assert_ne!(a, b);
        assert_eq!(a.0[6] >> 4, 4);
    }
}
