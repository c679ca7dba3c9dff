//! One record of a listing decoded on its own, so that a record the connector cannot read is
//! reported — which record, which field, what is wrong — while the rest of the page is kept.
//!
//! [`Checked<T>`] reads the record as JSON first (only a page that is not JSON at all, or whose
//! bytes are not UTF-8, still fails as a whole: its records cannot be told apart), then as `T`.
//! A record with a text property longer than [`MAX_TEXT`] is unreadable too: no service writes a
//! megabyte of device model, and passing one on would cost every stage after discovery.
//!
//! What a caller must not do with an unreadable record is treat the device as absent: the sync
//! leaves such devices undecided and their lists untouched (see `sync::discover`).

use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;

/// The longest text property a record may have, in bytes.
pub const MAX_TEXT: usize = 4096;

/// A record type of a listing.
pub trait Record: DeserializeOwned {
    /// What one record is, in an error: `device`, `Intune record`.
    const WHAT: &'static str;
    /// The properties that name a record, the first present one is used: `Identity`, `DeviceId`.
    const KEYS: &'static [&'static str];
    /// Its text properties, with the service's names, to check against [`MAX_TEXT`].
    fn texts(&self) -> Vec<(&'static str, &str)>;
}

/// Why one record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// What the record is (`device`, `Intune record`).
    pub what: &'static str,
    /// The property naming the record and its value, when the record has one that is text.
    pub key: Option<(&'static str, String)>,
    /// The property that is wrong (`.` for the record as a whole).
    pub field: String,
    pub problem: String,
}

impl Unreadable {
    /// The key's value, when the record has one.
    pub fn key_value(&self) -> Option<&str> {
        self.key.as_ref().map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some((name, value)) => write!(f, "{} with {name} `{}`", self.what, shorten(value))?,
            None => write!(f, "a {} without a readable name", self.what)?,
        }
        write!(f, ": {}: {}", self.field, self.problem)
    }
}

/// At most 200 characters of `text` (a key can be as broken as the rest of its record).
fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}

/// One record: read, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<T>(pub Result<T, Unreadable>);

impl<'de, T: Record> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let key = T::KEYS.iter().find_map(|k| {
            value
                .get(k)
                .and_then(Value::as_str)
                .map(|v| (*k, v.to_owned()))
        });
        let unreadable = |field: String, problem: String| Unreadable {
            what: T::WHAT,
            key: key.clone(),
            field,
            problem,
        };
        let record: T = match serde_path_to_error::deserialize(value) {
            Ok(r) => r,
            Err(e) => {
                let problem = e.inner().to_string();
                let mut field = e.path().to_string();
                // serde reports a missing field at the record; name the field itself.
                if field == "."
                    && let Some(name) = problem
                        .strip_prefix("missing field `")
                        .and_then(|r| r.split('`').next())
                {
                    field = name.to_owned();
                }
                return Ok(Checked(Err(unreadable(field, problem))));
            }
        };
        if let Some((name, text)) = record.texts().into_iter().find(|(_, t)| t.len() > MAX_TEXT) {
            let problem = format!("{} bytes, more than the {MAX_TEXT} allowed", text.len());
            return Ok(Checked(Err(unreadable(name.to_owned(), problem))));
        }
        Ok(Checked(Ok(record)))
    }
}

/// Splits checked records into the readable ones and what was wrong with the others.
pub fn split<T>(records: Vec<Checked<T>>) -> (Vec<T>, Vec<Unreadable>) {
    let mut good = Vec::with_capacity(records.len());
    let mut bad = Vec::new();
    for Checked(r) in records {
        match r {
            Ok(t) => good.push(t),
            Err(u) => bad.push(u),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Thing {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "Size")]
        size: u32,
    }

    impl Record for Thing {
        const WHAT: &'static str = "thing";
        const KEYS: &'static [&'static str] = &["Id"];
        fn texts(&self) -> Vec<(&'static str, &str)> {
            vec![("Id", &self.id)]
        }
    }

    fn page(json: &str) -> Vec<Checked<Thing>> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_bad_record_is_named_and_the_others_kept() {
        let long = "x".repeat(MAX_TEXT + 1);
        let (good, bad) = split(page(&format!(
            r#"[{{"Id":"a","Size":1}},{{"Id":"b"}},{{"Id":"c","Size":"big"}},{{"Size":2,"Id":7}},{{"Id":"{long}","Size":3}}]"#
        )));
        assert_eq!(
            good,
            [Thing {
                id: "a".into(),
                size: 1
            }]
        );
        let lines: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert_eq!(lines[0], "thing with Id `b`: Size: missing field `Size`");
        assert!(
            lines[1].starts_with("thing with Id `c`: Size: invalid type: string \"big\""),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("a thing without a readable name: Id: invalid type"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].ends_with(&format!(
                "({} bytes)`: Id: {} bytes, more than the {MAX_TEXT} allowed",
                MAX_TEXT + 1,
                MAX_TEXT + 1
            )),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn bytes_that_are_not_json_still_fail_the_page() {
        assert!(
            serde_json::from_slice::<Vec<Checked<Thing>>>(b"[{\"Id\":\"\xff\",\"Size\":1}]")
                .is_err()
        );
    }
}
