//! UTC timestamps as the two services print and parse them.
//!
//! Both Exchange and Graph print ISO 8601 in UTC (`2024-05-01T12:34:56Z`); Graph also uses
//! `0001-01-01T00:00:00Z` for "never" and `9999-12-31T23:59:59Z` for "no deadline". Exchange
//! `-Filter` literals arrive either in ISO form or in the en-US form PowerShell users type
//! (`5/1/2024 12:34:56 PM`). Second precision is enough: every filter the lab answers is `ge`/`gt`
//! against a cursor the client took from an earlier answer.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::SignedDuration;
use jiff::civil::{Date, DateTime, Time};
use jiff::fmt::temporal::Pieces;

/// Seconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utc(i64);

const DAY: i64 = 86_400;

/// Arithmetic goes through jiff's civil date-time at this origin rather than its `Timestamp`,
/// whose range stops a day short of Graph's `NO_DEADLINE`.
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

impl Utc {
    /// Graph's "never" (`0001-01-01T00:00:00Z`).
    pub const NEVER: Utc = Utc(-62_135_596_800);
    /// Graph's "no deadline" (`9999-12-31T23:59:59Z`), e.g. no compliance grace period running.
    pub const NO_DEADLINE: Utc = Utc(253_402_300_799);

    pub fn now() -> Utc {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Utc(secs)
    }

    pub const fn from_unix(secs: i64) -> Utc {
        Utc(secs)
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    /// `None` for a date or time that does not exist, and for a leap second (neither service
    /// emits one).
    pub fn from_ymd_hms(y: i64, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> Option<Utc> {
        let small = |v: u32| i8::try_from(v).ok();
        let date = Date::new(i16::try_from(y).ok()?, small(m)?, small(d)?).ok()?;
        let time = Time::new(small(hh)?, small(mm)?, small(ss)?, 0).ok()?;
        Some(Utc::from_civil(date.to_datetime(time)))
    }

    fn from_civil(at: DateTime) -> Utc {
        Utc(at.duration_since(EPOCH).as_secs())
    }

    pub fn plus_secs(self, secs: i64) -> Utc {
        Utc(self.0.saturating_add(secs))
    }

    pub fn minus_days(self, days: i64) -> Utc {
        Utc(self.0 - days * DAY)
    }

    /// The start of this instant's UTC day.
    pub fn day_start(self) -> Utc {
        Utc(self.0.div_euclid(DAY) * DAY)
    }

    /// The civil date and time, held at jiff's bounds (years -9999 and 9999): the lab's
    /// instants lie between Graph's `NEVER` and `NO_DEADLINE`.
    fn civil(self) -> DateTime {
        let bound = if self.0 < 0 {
            DateTime::MIN
        } else {
            DateTime::MAX
        };
        EPOCH
            .checked_add(SignedDuration::from_secs(self.0))
            .unwrap_or(bound)
    }

    /// The date alone, `2024-05-01` (Android security patch levels look like this).
    pub fn date(self) -> String {
        self.civil().date().to_string()
    }

    /// en-US short form as Intune uses it in generated device names: `5/1/2024_9:40 AM`.
    pub fn us_short(self) -> String {
        self.civil().strftime("%-m/%-d/%Y_%-I:%M %p").to_string()
    }

    /// Parses ISO 8601 / OData `DateTimeOffset`: `2024-05-01`, `2024-05-01T12:34`,
    /// `2024-05-01T12:34:56.1234567Z`, `2024-05-01T14:34:56+02:00`. Without an offset the time
    /// is UTC; the fraction is dropped.
    pub fn parse_iso(text: &str) -> Option<Utc> {
        let pieces = Pieces::parse(text.trim()).ok()?;
        let local = pieces
            .date()
            .to_datetime(pieces.time().unwrap_or(Time::midnight()));
        let offset = pieces.to_numeric_offset().map_or(0, |o| o.seconds());
        Some(Utc::from_civil(local).plus_secs(-i64::from(offset)))
    }

    /// Parses a date literal of an Exchange `-Filter`: ISO 8601, or en-US
    /// `M/D/YYYY[ H:MM[:SS][ AM|PM]]` (taken as UTC; the lab runs in UTC).
    pub fn parse_exchange(text: &str) -> Option<Utc> {
        Utc::parse_iso(text).or_else(|| parse_us(text.trim()))
    }
}

/// The en-US forms PowerShell users type, most common first.
const US_FORMS: [&str; 5] = [
    "%m/%d/%Y",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
];

fn parse_us(text: &str) -> Option<Utc> {
    US_FORMS
        .iter()
        .find_map(|form| DateTime::strptime(form, text).ok())
        .map(Utc::from_civil)
}

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}Z", self.civil())
    }
}

impl serde::Serialize for Utc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_iso() {
        let t = Utc::from_ymd_hms(2024, 2, 29, 23, 59, 58).unwrap();
        assert_eq!(t.to_string(), "2024-02-29T23:59:58Z");
        assert_eq!(Utc::parse_iso("2024-02-29T23:59:58Z"), Some(t));
        assert_eq!(Utc::parse_iso("2024-02-29T23:59:58.1234567Z"), Some(t));
        assert_eq!(Utc::parse_iso("2024-03-01T01:59:58+02:00"), Some(t));
        assert_eq!(Utc::parse_iso("2024-02-30T00:00:00Z"), None);
        assert_eq!(Utc::parse_iso("2024-02-29T23:59:58Zjunk"), None);
        assert_eq!(Utc::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn graph_sentinels_print_as_graph_prints_them() {
        assert_eq!(Utc::NEVER.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(Utc::NO_DEADLINE.to_string(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn parses_exchange_us_literals() {
        let t = Utc::from_ymd_hms(2024, 5, 1, 13, 4, 0).unwrap();
        assert_eq!(Utc::parse_exchange("5/1/2024 1:04 PM"), Some(t));
        assert_eq!(Utc::parse_exchange("05/01/2024 13:04:00"), Some(t));
        assert_eq!(
            Utc::parse_exchange("5/1/2024"),
            Utc::from_ymd_hms(2024, 5, 1, 0, 0, 0)
        );
        assert_eq!(
            Utc::parse_exchange("5/1/2024 12:00 AM"),
            Utc::from_ymd_hms(2024, 5, 1, 0, 0, 0)
        );
        assert_eq!(Utc::parse_exchange("13/1/2024"), None);
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-700_000..800_000).step_by(997) {
            let t = Utc::from_unix(days * DAY + 3723);
            assert_eq!(Utc::parse_iso(&t.to_string()), Some(t), "{t}");
        }
    }

    #[test]
    fn us_short_uses_twelve_hour_clock() {
        let t = Utc::from_ymd_hms(2024, 5, 3, 0, 7, 0).unwrap();
        assert_eq!(t.us_short(), "5/3/2024_12:07 AM");
        assert_eq!(t.plus_secs(13 * 3600).us_short(), "5/3/2024_1:07 PM");
    }
}
