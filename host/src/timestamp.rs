//! UTC instants as Exchange and Graph write them (`2025-01-15T08:30:00Z`,
//! `2025-01-15T08:30:00.1234567Z`, `2025-01-15T09:30:00+01:00`), kept as Unix seconds — the unit
//! the plugin contract and the store use. jiff reads and prints them; its civil date-time does
//! the arithmetic rather than its `Timestamp`, whose range stops a day short of Graph's "no
//! deadline" (`9999-12-31T23:59:59Z`).

use std::fmt;

use jiff::SignedDuration;
use jiff::civil::DateTime;
use jiff::fmt::temporal::Pieces;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// The wall clock in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

impl Timestamp {
    /// Parses an RFC 3339 date and time with its offset (`Z` or `±HH:MM`); the fraction is
    /// dropped. A date alone, or a time without an offset, is refused: it names no instant.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let pieces = Pieces::parse(text).ok()?;
        let local = pieces.date().to_datetime(pieces.time()?);
        let offset = pieces.to_numeric_offset()?;
        let seconds = local.duration_since(EPOCH).as_secs();
        Some(Timestamp(seconds - i64::from(offset.seconds())))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match EPOCH.checked_add(SignedDuration::from_secs(self.0)) {
            Ok(utc) => write!(f, "{utc}Z"),
            // Beyond the years 9999 and -9999 no service writes a date; show the number
            // rather than fail the formatter.
            Err(_) => write!(f, "{} seconds after 1970-01-01T00:00:00Z", self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&text).ok_or_else(|| {
            de::Error::invalid_value(de::Unexpected::Str(&text), &"an ISO 8601 UTC date and time")
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_services_write() {
        let t = Timestamp::parse("2025-01-15T08:30:00Z").unwrap();
        assert_eq!(t.0, 1_736_929_800);
        assert_eq!(Timestamp::parse("2025-01-15T08:30:00.1234567Z"), Some(t));
        assert_eq!(Timestamp::parse("2025-01-15T09:30:00+01:00"), Some(t));
        assert_eq!(Timestamp::parse("2025-01-15T07:30:00-01:00"), Some(t));
        assert_eq!(t.to_string(), "2025-01-15T08:30:00Z");
        assert_eq!(
            Timestamp::parse("0001-01-01T00:00:00Z")
                .unwrap()
                .to_string(),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        // Graph's "no deadline", beyond the range of jiff's own `Timestamp`.
        let last = Timestamp::parse("9999-12-31T23:59:59Z").unwrap();
        assert_eq!(last.0, 253_402_300_799);
        assert_eq!(last.to_string(), "9999-12-31T23:59:59Z");
        for bad in [
            "",
            "2025-01-15",
            "2025-13-01T00:00:00Z",
            "2025-01-15T08:30:00",
            "2025-01-15T08:30:00.Z",
            "x025-01-15T08:30:00Z",
            "2025-01-15T08:30:00Zjunk",
            "2025-02-30T08:30:00Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }
}
