//! Opaque `$skiptoken`s for `@odata.nextLink`, shared by the Exchange and Graph sides.
//!
//! A token carries the position to resume after (a sequence number, so records added or removed
//! while a client pages never make it skip or repeat one) and how many records were already
//! returned (for `-ResultSize`), bound by a checksum to the query it continues. It is scrambled
//! with a per-lab key so clients treat it as opaque, as they must with the real services: a token
//! replayed against another query, or made up, is rejected.

use crate::random::{hash_bytes, mix};

/// Where the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Position {
    /// Resume with keys greater than this; `None` on the first page.
    pub after: Option<u32>,
    /// Records returned by earlier pages.
    pub returned: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PageTokens {
    key: u64,
}

/// Hashes the parts that identify a query (cmdlet and parameters, or `$filter`/`$select`/`$top`).
pub(crate) fn query_hash(parts: &[&str]) -> u64 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p.as_bytes());
        bytes.push(0);
    }
    hash_bytes(&bytes)
}

impl PageTokens {
    pub fn new(seed: u64) -> Self {
        Self {
            key: mix(seed ^ 0x5eed_7011_e000_0001),
        }
    }

    pub fn encode(&self, pos: Position, query: u64) -> String {
        let after = pos.after.map_or(0, |a| u64::from(a) + 1);
        let payload = (after << 32) | u64::from(pos.returned);
        let scrambled = payload ^ mix(self.key ^ query);
        let check = mix(payload ^ query ^ self.key) as u32;
        format!("{scrambled:016x}{check:08x}")
    }

    pub fn decode(&self, token: &str, query: u64) -> Option<Position> {
        if token.len() != 24 || !token.is_ascii() {
            return None;
        }
        let scrambled = u64::from_str_radix(&token[..16], 16).ok()?;
        let check = u32::from_str_radix(&token[16..], 16).ok()?;
        let payload = scrambled ^ mix(self.key ^ query);
        if mix(payload ^ query ^ self.key) as u32 != check {
            return None;
        }
        let after = payload >> 32;
        Some(Position {
            after: after.checked_sub(1).map(|a| a as u32),
            returned: payload as u32,
        })
    }
}

/// Index into a `Vec` keyed by sequence number where a listing resumes (clamped to `len`).
pub(crate) fn resume_at(pos: Position, len: usize) -> usize {
    pos.after.map_or(0, |a| (a as usize + 1).min(len))
}

/// One page of keys picked from an ascending key sequence.
#[derive(Debug)]
pub(crate) struct Slice {
    pub keys: Vec<u32>,
    /// Where the page after this one starts, if there is one.
    pub next: Option<Position>,
    /// More keys matched than `limit` allowed (Exchange then warns about `-ResultSize`).
    pub truncated: bool,
}

/// Takes the next page from `keys` (ascending), at most `page_size` and at most `limit` in total.
pub(crate) fn slice(
    keys: impl Iterator<Item = u32>,
    pos: Position,
    page_size: usize,
    limit: u32,
) -> Slice {
    let room = (limit.saturating_sub(pos.returned) as usize).min(page_size);
    let mut iter = keys.filter(|k| pos.after.is_none_or(|a| *k > a));
    let taken: Vec<u32> = iter.by_ref().take(room).collect();
    let more = iter.next().is_some();
    let returned = pos.returned + taken.len() as u32;
    let next = match taken.last() {
        Some(&last) if more && returned < limit => Some(Position {
            after: Some(last),
            returned,
        }),
        _ => None,
    };
    Slice {
        truncated: more && returned >= limit,
        keys: taken,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bind_to_the_query() {
        let t = PageTokens::new(1);
        let q = query_hash(&["Get-MobileDevice", "{}"]);
        for pos in [
            Position {
                after: None,
                returned: 0,
            },
            Position {
                after: Some(0),
                returned: 1,
            },
            Position {
                after: Some(u32::MAX - 1),
                returned: 99,
            },
        ] {
            let tok = t.encode(pos, q);
            assert_eq!(t.decode(&tok, q), Some(pos));
            assert_eq!(t.decode(&tok, q ^ 1), None);
            assert_eq!(PageTokens::new(2).decode(&tok, q), None);
        }
        assert_eq!(t.decode("0000", q), None);
    }

    #[test]
    fn slice_pages_and_truncates() {
        let keys = || [1u32, 3, 5, 7, 9].into_iter();
        let s = slice(keys(), Position::default(), 2, u32::MAX);
        assert_eq!(s.keys, [1, 3]);
        let s = slice(keys(), s.next.unwrap(), 2, u32::MAX);
        assert_eq!(s.keys, [5, 7]);
        let s = slice(keys(), s.next.unwrap(), 2, u32::MAX);
        assert_eq!(
            (s.keys.as_slice(), s.next, s.truncated),
            (&[9][..], None, false)
        );

        let s = slice(keys(), Position::default(), 2, 3);
        let s = slice(keys(), s.next.unwrap(), 2, 3);
        assert_eq!(
            (s.keys.as_slice(), s.next, s.truncated),
            (&[5][..], None, true)
        );
    }
}
