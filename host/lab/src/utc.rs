//! UTC timestamps as the two services print and parse them.
//!
//! Both Exchange and Graph print ISO 8601 in UTC (`2024-05-01T12:34:56Z`); Graph also uses
//! `0001-01-01T00:00:00Z` for "never" and `9999-12-31T23:59:59Z` for "no deadline". Exchange
//! `-Filter` literals arrive either in ISO form or in the en-US form PowerShell users type
//! (`5/1/2024 12:34:56 PM`). Second precision is enough: every filter the lab answers is `ge`/`gt`
//! against a cursor the client took from an earlier answer.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utc(i64);

const DAY: i64 = 86_400;

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

    pub fn from_ymd_hms(y: i64, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> Option<Utc> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || hh > 23 || mm > 59 {
            return None;
        }
        // 60 would be a leap second; neither service emits one.
        if ss > 59 {
            return None;
        }
        let days = days_from_civil(y, m, d);
        Some(Utc(days * DAY
            + i64::from(hh) * 3600
            + i64::from(mm) * 60
            + i64::from(ss)))
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

    fn parts(self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(DAY);
        let secs = self.0.rem_euclid(DAY);
        let (y, m, d) = civil_from_days(days);
        (
            y,
            m,
            d,
            (secs / 3600) as u32,
            (secs / 60 % 60) as u32,
            (secs % 60) as u32,
        )
    }

    /// The date alone, `2024-05-01` (Android security patch levels look like this).
    pub fn date(self) -> String {
        let (y, m, d, ..) = self.parts();
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// en-US short form as Intune uses it in generated device names: `5/1/2024_9:40 AM`.
    pub fn us_short(self) -> String {
        let (y, m, d, hh, mm, _) = self.parts();
        let (h12, ampm) = match hh {
            0 => (12, "AM"),
            1..=11 => (hh, "AM"),
            12 => (12, "PM"),
            _ => (hh - 12, "PM"),
        };
        format!("{m}/{d}/{y}_{h12}:{mm:02} {ampm}")
    }

    /// Parses ISO 8601 / OData `DateTimeOffset`: `2024-05-01`, `2024-05-01T12:34`,
    /// `2024-05-01T12:34:56.1234567Z`, `2024-05-01T14:34:56+02:00`.
    pub fn parse_iso(text: &str) -> Option<Utc> {
        let mut c = Cursor::new(text.trim());
        let y = c.number(4, 4)?;
        c.expect(b'-')?;
        let m = c.number(2, 2)?;
        c.expect(b'-')?;
        let d = c.number(2, 2)?;
        let (mut hh, mut mm, mut ss) = (0, 0, 0);
        let mut offset = 0i64;
        if c.eat(b'T') || c.eat(b' ') {
            hh = c.number(2, 2)?;
            c.expect(b':')?;
            mm = c.number(2, 2)?;
            if c.eat(b':') {
                ss = c.number(2, 2)?;
                if c.eat(b'.') {
                    c.number(1, 9)?;
                }
            }
            if c.eat(b'Z') || c.eat(b'z') {
            } else if let Some(sign) = c.sign() {
                let oh = c.number(2, 2)?;
                c.expect(b':')?;
                let om = c.number(2, 2)?;
                offset = sign * (i64::from(oh) * 3600 + i64::from(om) * 60);
            }
        }
        if !c.done() {
            return None;
        }
        Utc::from_ymd_hms(i64::from(y), m, d, hh, mm, ss).map(|t| t.plus_secs(-offset))
    }

    /// Parses a date literal of an Exchange `-Filter`: ISO 8601, or en-US
    /// `M/D/YYYY[ H:MM[:SS][ AM|PM]]` (taken as UTC; the lab runs in UTC).
    pub fn parse_exchange(text: &str) -> Option<Utc> {
        Utc::parse_iso(text).or_else(|| parse_us(text.trim()))
    }
}

fn parse_us(text: &str) -> Option<Utc> {
    let mut c = Cursor::new(text);
    let m = c.number(1, 2)?;
    c.expect(b'/')?;
    let d = c.number(1, 2)?;
    c.expect(b'/')?;
    let y = c.number(4, 4)?;
    let (mut hh, mut mm, mut ss) = (0, 0, 0);
    if c.eat(b' ') {
        hh = c.number(1, 2)?;
        c.expect(b':')?;
        mm = c.number(2, 2)?;
        if c.eat(b':') {
            ss = c.number(2, 2)?;
        }
        if c.eat(b' ') {
            let pm = match c.rest().to_ascii_uppercase().as_str() {
                "AM" => false,
                "PM" => true,
                _ => return None,
            };
            c.skip_rest();
            if !(1..=12).contains(&hh) {
                return None;
            }
            hh = match (hh, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, true) => h + 12,
                (h, false) => h,
            };
        }
    }
    if !c.done() {
        return None;
    }
    Utc::from_ymd_hms(i64::from(y), m, d, hh, mm, ss)
}

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, hh, mm, ss) = self.parts();
        write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }
}

impl serde::Serialize for Utc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Counts in 400-year eras that start on
/// March 1st, so that the leap day is the last day of the (shifted) year.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = i64::from((m + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(d) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of `days_from_civil`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let d = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let m = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let y = year_of_era + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A byte cursor for the two fixed timestamp grammars.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.at;
        while self.at < self.bytes.len()
            && self.at - start < max
            && self.bytes[self.at].is_ascii_digit()
        {
            self.at += 1;
        }
        if self.at - start < min {
            return None;
        }
        std::str::from_utf8(&self.bytes[start..self.at])
            .ok()?
            .parse::<u64>()
            .ok()
            .and_then(|v| u32::try_from(v).ok())
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.bytes.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    fn sign(&mut self) -> Option<i64> {
        if self.eat(b'+') {
            Some(1)
        } else if self.eat(b'-') {
            Some(-1)
        } else {
            None
        }
    }

    fn rest(&self) -> String {
        String::from_utf8_lossy(&self.bytes[self.at..]).into_owned()
    }

    fn skip_rest(&mut self) {
        self.at = self.bytes.len();
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
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
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn us_short_uses_twelve_hour_clock() {
        let t = Utc::from_ymd_hms(2024, 5, 3, 0, 7, 0).unwrap();
        assert_eq!(t.us_short(), "5/3/2024_12:07 AM");
        assert_eq!(t.plus_secs(13 * 3600).us_short(), "5/3/2024_1:07 PM");
    }
}
