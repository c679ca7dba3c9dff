//! Durations as the configuration writes them: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, read by jiff's
//! "friendly" duration parser, which also takes combinations (`"1h 30m"`), fractions (`"1.5s"`),
//! spelled-out units (`"2 hours"`) and ISO 8601 (`"PT5M"`). Days and longer are refused: their
//! length is a matter of calendar, and no setting here needs them.

use std::time::Duration;

use jiff::SignedDuration;
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Reads a duration (see the module's doc) for `deserialize_with`.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).ok_or_else(|| {
        de::Error::custom(format!(
            r#"`{text}` is not a duration like "500ms", "30s", "5m", "1h" or "1h 30m""#
        ))
    })
}

/// Surrounding blanks are allowed, as the hand-written parser before jiff allowed them; a
/// negative duration is refused.
fn parse_duration(text: &str) -> Option<Duration> {
    let signed: SignedDuration = text.trim().parse().ok()?;
    Duration::try_from(signed).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1d"), None);
    }

    /// Every form the operator guide and the shipped configurations use still reads the same.
    #[test]
    fn the_documented_forms_and_what_jiff_adds() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("1500ms", Duration::from_millis(1500)),
            ("30s", Duration::from_secs(30)),
            ("0s", Duration::ZERO),
            ("5m", Duration::from_secs(300)),
            ("24h", Duration::from_secs(86_400)),
            (" 5 m ", Duration::from_secs(300)),
            ("1h 30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("PT5M", Duration::from_secs(300)),
        ] {
            assert_eq!(parse_duration(text), Some(want), "{text}");
        }
        for bad in ["-5m", "", "soon", "1w", "5 parsecs"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
