//! One record of a listing decoded on its own, so that a record the connector cannot read is
//! reported — which record, which field, what is wrong — while the rest of the page is kept.
//!
//! [`Checked<T>`] reads the record as JSON first, then as `T`. A record whose bytes are not JSON
//! text (invalid UTF-8, half a surrogate pair) would stop the parser for the whole page; when a
//! page fails, the clients let [`isolate_unreadable`] replace such records by what can be read
//! of them before decoding again. Only a page whose structure cannot be followed (truncated, not
//! JSON at all) still fails as a whole.
//! A record with a text property longer than [`MAX_TEXT`] is unreadable too: no service writes a
//! megabyte of device model, and passing one on would cost every stage after discovery.
//!
//! What a caller must not do with an unreadable record is treat the device as absent: the sync
//! leaves such devices undecided and their lists untouched (see `sync::discover`).

use serde::de::{Deserialize, DeserializeOwned, Deserializer, IgnoredAny};
use serde_json::Value;

/// The longest text property a record may have, in bytes.
pub const MAX_TEXT: usize = 4096;

/// A record type of a listing.
pub trait Record: DeserializeOwned {
    /// What one record is, in an error: `device`, `Intune record`.
    const WHAT: &'static str;
    /// The properties that name a record, the first present one is used: `Identity`, `DeviceId`.
    const KEYS: &'static [&'static str];
    /// The property that ties a record to a record of the other service (`easDeviceId`), if
    /// any: an unreadable record reports what it holds ([`Unreadable::link`]).
    const LINK: Option<&'static str> = None;
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
    /// The value of the record's [`Record::LINK`] property: `""` when it is absent or `null`
    /// (the record is tied to nothing), `None` when it is there but not text (tied to something
    /// unknown) or the record type has no link.
    pub link: Option<String>,
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

/// A listing page decoded as both clients decode it: whole, or — when that fails — once more
/// after [`isolate_unreadable`] replaced the records whose bytes are not JSON text, and the
/// page's own error when that does not help either (strict records fail again). The fuzz
/// targets call this too, so they reach the code the clients run.
pub fn decode_page<P: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<P, super::BadField> {
    super::decode::<P>(raw).or_else(|b| {
        isolate_unreadable(raw)
            .and_then(|isolated| super::decode::<P>(&isolated).ok())
            .ok_or(b)
    })
}

/// The property with which [`isolate_unreadable`] marks a record whose bytes are not JSON text.
const UNREADABLE_BYTES: &str = "@easgate.unreadableBytes";

/// `page` (a JSON object with a `value` array) with every record of `value` whose bytes are not
/// JSON text — invalid UTF-8, half a surrogate pair — replaced by an object that [`Checked`]
/// reports as unreadable: the record's properties as far as they can be read (invalid bytes
/// replaced), and the field and problem found. `None` when the page has no such record or its
/// structure cannot be followed (a truncated page, a broken escape outside a record) or the
/// result would not be JSON.
///
/// Decoders try this only after a page failed as a whole: a decoder of strict records then fails
/// again, and reports the page's own error.
pub fn isolate_unreadable(page: &[u8]) -> Option<Vec<u8>> {
    let (open, close) = value_array(page)?;
    let mut out = Vec::with_capacity(page.len());
    out.extend_from_slice(&page[..=open]);
    let mut changed = false;
    let mut i = skip_ws(page, open + 1);
    let mut first = true;
    while i < close {
        let end = skip_value(page, i)?;
        let record = &page[i..end];
        if !first {
            out.push(b',');
        }
        first = false;
        let mut de = serde_json::Deserializer::from_slice(record);
        match serde_path_to_error::deserialize::<_, Value>(&mut de) {
            Ok(_) => out.extend_from_slice(record),
            Err(e) => {
                let lossy = without_surrogates(&String::from_utf8_lossy(record));
                let mut object = match serde_json::from_str::<Value>(&lossy) {
                    Ok(Value::Object(m)) => m,
                    _ => serde_json::Map::new(),
                };
                // A property named "" has an empty path: say so rather than name nothing.
                let field = match e.path().to_string() {
                    path if path.is_empty() => "\"\"".to_owned(),
                    path => path,
                };
                object.insert(
                    UNREADABLE_BYTES.into(),
                    serde_json::json!({
                        "field": field,
                        "problem": e.inner().to_string(),
                    }),
                );
                out.extend(serde_json::to_vec(&object).ok()?);
                changed = true;
            }
        }
        i = skip_ws(page, end);
        match page.get(i) {
            Some(b',') => i = skip_ws(page, i + 1),
            _ if i == close => {}
            _ => return None,
        }
    }
    if !changed {
        return None;
    }
    out.extend_from_slice(&page[close..]);
    // The structure was followed, not checked: what surrounds the records (or a number cut
    // short, `1x`) may still not be JSON, and the page then fails with its own error.
    serde_json::from_slice::<IgnoredAny>(&out).ok()?;
    Some(out)
}

/// `text` (JSON) with every `\u` escape of a UTF-16 surrogate replaced by U+FFFD, so that a
/// record with half a pair can still be read for its name.
fn without_surrogates(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let hex = text
            .get(at + 2..at + 6)
            .filter(|_| text[at + 1..].starts_with('u'));
        match hex.and_then(|h| u16::from_str_radix(h, 16).ok()) {
            Some(0xd800..=0xdfff) => {
                out.push_str("\\ufffd");
                chars.nth(4);
            }
            _ => {
                // Whatever is escaped (`\\\\` too) is copied as it is.
                out.push(c);
                if let Some((_, next)) = chars.next() {
                    out.push(next);
                }
            }
        }
    }
    out
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The end of the string starting at `i` (its opening quote).
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end of the JSON value starting at `i`, following only its structure.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The positions of the `[` and `]` of the top-level object's `value` array.
fn value_array(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    loop {
        if b.get(i)? != &b'"' {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let key = &b[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i)? != &b':' {
            return None;
        }
        i = skip_ws(b, i + 1);
        let end = skip_value(b, i)?;
        if key == b"value" && b[i] == b'[' {
            return Some((i, end - 1));
        }
        i = skip_ws(b, end);
        if b.get(i)? != &b',' {
            return None;
        }
        i = skip_ws(b, i + 1);
    }
}

/// One record: read, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<T>(pub Result<T, Unreadable>);

impl<'de, T: Record> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut value = Value::deserialize(d)?;
        let bytes = value
            .as_object_mut()
            .and_then(|o| o.remove(UNREADABLE_BYTES));
        let key = T::KEYS.iter().find_map(|k| {
            value
                .get(k)
                .and_then(Value::as_str)
                .map(|v| (*k, v.to_owned()))
        });
        let link = T::LINK.and_then(|name| match value.get(name) {
            None | Some(Value::Null) => Some(String::new()),
            Some(Value::String(v)) => Some(v.clone()),
            Some(_) => None,
        });
        let unreadable = |field: String, problem: String| Unreadable {
            what: T::WHAT,
            key: key.clone(),
            field,
            problem,
            link: link.clone(),
        };
        if let Some(found) = bytes {
            let text = |name: &str| {
                found
                    .get(name)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
            };
            // What isolation found; anything else is a service's record that carries the
            // property itself, unreadable too, but for that reason.
            let (field, problem) = match (text("field"), text("problem")) {
                (Some(field), Some(problem)) => (field, problem),
                _ => (
                    UNREADABLE_BYTES.to_owned(),
                    "a property easgate reserves for records it cannot read".to_owned(),
                ),
            };
            return Ok(Checked(Err(unreadable(field, problem))));
        }
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

    #[derive(serde::Deserialize)]
    struct Page {
        value: Vec<Checked<Thing>>,
    }

    #[test]
    fn isolating_never_panics_on_cut_or_damaged_pages() {
        let page: &[u8] = b"{\"a\":[1,{\"b\":\"]\"}],\"value\":[{\"Id\":\"a\\\"\",\"Size\":1},{\"Id\":\"\xff\",\"N\":[\"\\ud800\"]} , 3, \"x\", null],\"z\":{}}";
        assert!(isolate_unreadable(page).is_some());
        for end in 0..page.len() {
            let _ = isolate_unreadable(&page[..end]);
        }
        for at in 0..page.len() {
            for b in [b'"', b'\\', b'[', b']', b'{', b'}', b',', b':', b' ', 0xff] {
                let mut damaged = page.to_vec();
                damaged[at] = b;
                let _ = isolate_unreadable(&damaged);
            }
        }
    }

    #[test]
    fn a_record_whose_bytes_are_not_json_text_is_isolated() {
        let page: &[u8] = b"{\"@odata.context\":\"x\",\"value\":[{\"Id\":\"a\",\"Size\":1}, {\"Id\":\"b\",\"Name\":\"\xff\",\"Size\":2},{\"Id\":\"c\",\"Name\":\"\\ud800\",\"Size\":3} ],\"@odata.nextLink\":\"n\"}";
        assert!(serde_json::from_slice::<Page>(page).is_err());
        let isolated = isolate_unreadable(page).expect("two records isolated");
        let next: Value = serde_json::from_slice(&isolated).unwrap();
        assert_eq!(next["@odata.nextLink"], "n");
        let (good, bad) = split(serde_json::from_slice::<Page>(&isolated).unwrap().value);
        assert_eq!(good.len(), 1);
        let lines: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert!(
            lines[0].starts_with("thing with Id `b`: Name: invalid unicode code point"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("thing with Id `c`: Name: unexpected end of hex escape"),
            "{}",
            lines[1]
        );
        assert_eq!(
            without_surrogates(r#"{"a":"\ud800","b":"\\ud800","c":"\u0041"}"#),
            r#"{"a":"\ufffd","b":"\\ud800","c":"\u0041"}"#
        );
        // Nothing to isolate, or no structure to follow.
        assert_eq!(isolate_unreadable(b"{\"value\":[{\"Id\":\"a\"}]}"), None);
        assert_eq!(isolate_unreadable(b"{\"value\":[{\"Id\":\"\xff"), None);
        assert_eq!(isolate_unreadable(b"[1]"), None);
    }

    // Found by the `record_page` fuzz target: the page around the records was copied as it
    // was, so what isolation returned could be no JSON at all.
    #[test]
    fn what_isolation_returns_is_json_or_nothing() {
        for page in [
            &b"{\"value\":[{\"Id\":\"\xff\"}],\"@odaices?$skiptoken=y\"}"[..],
            b"{\"a\":tru,\"value\":[{\"Id\":\"\xff\"}]}",
            b"{\"value\":[1x,{\"Id\":\"\xff\"}]}",
        ] {
            assert_eq!(
                isolate_unreadable(page),
                None,
                "{}",
                String::from_utf8_lossy(page)
            );
        }
        let isolated = isolate_unreadable(b"{\"value\":[1,{\"Id\":\"\xff\"}],\"n\":[]}").unwrap();
        serde_json::from_slice::<IgnoredAny>(&isolated).unwrap();
    }

    // Found by the `record_page` fuzz target (from a seed carrying the mark): a record of the
    // service's own with the mark isolation uses was reported with no field and no problem.
    #[test]
    fn a_record_carrying_the_mark_of_isolation_is_unreadable_for_that() {
        for mark in [
            "1",
            "{}",
            r#"{"field":"","problem":""}"#,
            r#"{"field":"Size"}"#,
        ] {
            let (good, bad) = split(page(&format!(
                r#"[{{"Id":"a","Size":1,"{UNREADABLE_BYTES}":{mark}}},{{"Id":"b","Size":2}}]"#
            )));
            assert_eq!(good.len(), 1);
            assert_eq!(bad[0].field, UNREADABLE_BYTES, "{mark}");
            assert_eq!(
                bad[0].to_string(),
                format!(
                    "thing with Id `a`: {UNREADABLE_BYTES}: a property easgate reserves for \
                     records it cannot read"
                )
            );
        }
    }

    #[test]
    fn bytes_that_are_not_text_in_a_property_named_nothing_are_named_too() {
        let isolated =
            isolate_unreadable(b"{\"value\":[{\"Id\":\"a\",\"\":\"\xff\",\"Size\":1}]}").unwrap();
        let (_, bad) = split(serde_json::from_slice::<Page>(&isolated).unwrap().value);
        assert_eq!(bad[0].field, r#""""#);
        assert!(!bad[0].problem.is_empty());
    }
}
