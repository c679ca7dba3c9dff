//! Deterministic randomness for the dataset: a seeded SplitMix64 generator, a stateless mixer for
//! values derived on demand (IMEI, serial numbers) and the GUIDs that Exchange and Entra print.
//!
//! Everything the lab invents comes from here, so one `--seed` always yields the same
//! organization. Each part of the dataset draws from its own stream (`Rng::stream`) so that adding a
//! draw to one part does not reshuffle the others.

use std::fmt;

/// The SplitMix64 increment (the golden-ratio constant), from Steele, Lea and Flood (2014).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Finalizer of SplitMix64: a bijective 64-bit mixer, also used alone to derive stable per-object
/// values (an IMEI from a device number) without storing them.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes bytes to 64 bits (FNV-1a folded through `mix`); used for page-token checksums.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// A seeded SplitMix64 generator: small, fast and good enough for synthetic data (not for secrets
/// that must resist an attacker; the lab has none).
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// An independent stream for one `purpose` under `seed`.
    pub(crate) fn stream(seed: u64, purpose: u64) -> Self {
        Self {
            state: mix(seed ^ mix(purpose.wrapping_add(GAMMA))),
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Uniform in `0..n` (Lemire's multiply-high; the bias is below 2^-40 for our `n`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `per_mille / 1000`.
    pub(crate) fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Index drawn with the given relative weights.
    pub(crate) fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len() - 1
    }

    /// A version-4 style GUID.
    pub(crate) fn guid(&mut self) -> Guid {
        let raw = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        // Version 4, variant 10xx: the shape real GUIDs have, so format checks in clients pass.
        let raw = (raw & !(0xf << 76)) | (0x4 << 76);
        let raw = (raw & !(0x3 << 62)) | (0x2 << 62);
        Guid(raw)
    }

    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A GUID printed the way Exchange and Graph print them: lowercase 8-4-4-4-12.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub u128);

impl Guid {
    pub fn parse(text: &str) -> Option<Guid> {
        let hex: String = text.chars().filter(|&c| c != '-').collect();
        let dashes_ok = text.len() == 36
            && [8, 13, 18, 23]
                .iter()
                .all(|&i| text.as_bytes().get(i) == Some(&b'-'));
        if hex.len() != 32 || !dashes_ok {
            return None;
        }
        u128::from_str_radix(&hex, 16).ok().map(Guid)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(7, 1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::stream(7, 1).next_u64(), Rng::stream(7, 2).next_u64());
        assert_ne!(Rng::stream(7, 1).next_u64(), Rng::stream(8, 1).next_u64());
    }

    #[test]
    fn guid_round_trips_and_has_version_4() {
        let g = Rng::stream(1, 1).guid();
        let text = g.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert_eq!(Guid::parse(&text), Some(g));
        assert_eq!(Guid::parse("not-a-guid"), None);
    }

    #[test]
    fn below_and_weighted_stay_in_range() {
        let mut r = Rng::stream(3, 3);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
            assert!(r.weighted(&[1, 0, 5]) != 1);
            let x = r.range(-2, 2);
            assert!((-2..=2).contains(&x));
        }
    }
}
