//! Device listings read one record at a time (`net::record`), through the clients' decoding
//! (`easgate_fuzz::decode_page`: the page whole, else again after `isolate_unreadable`), as
//! Exchange `MobileDevice` pages and Graph `ManagedDevice` pages. The first byte picks the mode:
//!
//! * 0, 1: the other bytes as a page, Exchange or Graph. What isolation returns is JSON with
//!   nothing left to isolate; a page that is JSON already is left alone and decodes with every
//!   record, each kept record equal to the record decoded on its own; every record reported
//!   unreadable says which field and what is wrong.
//! * 2, 3: the other bytes build a page (`arbitrary`) of records, some with bytes that are not
//!   JSON text (invalid UTF-8, half a surrogate pair), an access or compliance state that does
//!   not exist, or a text longer than `MAX_TEXT`: the page decodes with every record in order,
//!   the damaged ones reported under their own key with the right field, the others read intact.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use easgate::exchange::models::MobileDevice;
use easgate::graph::models::ManagedDevice;
use easgate::net::BadField;
use easgate::net::record::{self, Checked, MAX_TEXT, Record, Unreadable};
use easgate_fuzz::{ExchangePage, GraphPage, decode_page};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;
use std::fmt::Debug;

fn exchange(raw: &[u8]) -> Result<Vec<Checked<MobileDevice>>, BadField> {
    decode_page::<ExchangePage<_>>(raw).map(|p| p.value)
}

fn graph(raw: &[u8]) -> Result<Vec<Checked<ManagedDevice>>, BadField> {
    decode_page::<GraphPage<_>>(raw).map(|p| p.value)
}

/// What must hold of every record reported unreadable.
fn check_unreadable<T: Record>(u: &Unreadable) {
    assert_eq!(u.what, T::WHAT);
    assert!(!u.field.is_empty(), "no field in {u:?}");
    assert!(!u.problem.is_empty(), "no problem in {u:?}");
    if let Some((name, _)) = &u.key {
        assert!(T::KEYS.contains(name), "{name} is not a key: {u:?}");
    }
    if T::LINK.is_none() {
        assert_eq!(u.link, None, "a link for a record type without one: {u:?}");
    }
    assert!(u.to_string().ends_with(&u.problem), "{u}");
}

/// What must hold of every record read.
fn check_read<T: Record>(record: &T) {
    for (name, text) in record.texts() {
        assert!(
            text.len() <= MAX_TEXT,
            "{name} of {} bytes kept",
            text.len()
        );
    }
}

fn any_page<T: Record + Debug + PartialEq>(
    body: &[u8],
    decode: fn(&[u8]) -> Result<Vec<Checked<T>>, BadField>,
) {
    let isolated = record::isolate_unreadable(body);
    let whole: Option<Value> = serde_json::from_slice(body).ok();
    if whole.is_some() {
        assert_eq!(isolated, None, "records isolated from a page that is JSON");
    }
    if let Some(out) = &isolated {
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(out) {
            panic!(
                "isolation returned what is not JSON ({e}): {:?}",
                String::from_utf8_lossy(out)
            );
        }
        assert_eq!(
            record::isolate_unreadable(out),
            None,
            "isolation left records to isolate"
        );
    }
    let Ok(records) = decode(body) else {
        return;
    };
    for r in &records {
        match &r.0 {
            Ok(t) => check_read(t),
            Err(u) => check_unreadable::<T>(u),
        }
    }
    // A page that is JSON decodes directly: every record is there, read as it reads on its own.
    let Some(listed) = whole
        .as_ref()
        .and_then(|w| w.get("value")?.as_array().cloned())
    else {
        return;
    };
    if isolated.is_some() {
        return;
    }
    assert_eq!(records.len(), listed.len(), "records lost or added");
    for (r, value) in records.iter().zip(listed) {
        let alone = serde_json::from_value::<T>(value.clone());
        match (&r.0, alone) {
            (Ok(t), Ok(a)) => assert_eq!(t, &a),
            (Ok(t), Err(e)) => panic!("{t:?} read from a record that fails alone: {e}"),
            // Unreadable: its own decoding fails, or a text is too long, or the record carries
            // the property isolation marks records with.
            (Err(_), Err(_)) => {}
            (Err(u), Ok(a)) => assert!(
                a.texts().iter().any(|(_, t)| t.len() > MAX_TEXT) || value.get(MARK).is_some(),
                "{u} for a record that reads alone: {a:?}"
            ),
        }
    }
}

/// The property `isolate_unreadable` marks a replaced record with (private to `net::record`).
const MARK: &str = "@easgate.unreadableBytes";

/// A page built from the fuzzer's bytes.
#[derive(Arbitrary, Debug)]
struct PageSpec {
    context: String,
    records: Vec<RecordSpec>,
    next: Option<String>,
    /// Whitespace around the records, as a pretty-printing service would send.
    spaced: bool,
}

#[derive(Arbitrary, Debug)]
struct RecordSpec {
    key: String,
    id: String,
    text: String,
    /// `text` made longer than `MAX_TEXT`.
    long: bool,
    /// An index into the shape's states; one past the end is a state that does not exist.
    state: u8,
    /// Bytes that are not JSON text at the end of `text`.
    damage: Option<Damage>,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    /// A byte ≥ 0x80 right before the closing quote: never valid UTF-8.
    Byte(u8),
    /// A `\u` escape of a surrogate with no other half.
    Surrogate(u16),
}

/// Where a record type keeps what the built pages vary.
struct Shape {
    /// The first of `Record::KEYS`.
    key: &'static str,
    id: &'static str,
    text: &'static str,
    state: &'static str,
    states: &'static [&'static str],
    /// The other required properties, with a valid value.
    fixed: &'static [(&'static str, &'static str)],
}

const EXCHANGE: Shape = Shape {
    key: "Identity",
    id: "DeviceId",
    text: "DeviceModel",
    state: "DeviceAccessState",
    states: &[
        "Unknown",
        "Allowed",
        "Blocked",
        "Quarantined",
        "DeviceDiscovery",
    ],
    fixed: &[("DeviceAccessStateReason", "Global")],
};

const GRAPH: Shape = Shape {
    key: "easDeviceId",
    id: "id",
    text: "deviceName",
    state: "complianceState",
    states: &[
        "unknown",
        "compliant",
        "noncompliant",
        "conflict",
        "error",
        "inGracePeriod",
        "configManager",
        "unknownFutureValue",
    ],
    fixed: &[("managedDeviceOwnerType", "company")],
};

impl RecordSpec {
    fn text(&self) -> String {
        if self.long {
            format!("{}{}", self.text, "x".repeat(MAX_TEXT + 1))
        } else {
            self.text.clone()
        }
    }

    fn to_json(&self, shape: &Shape) -> Vec<u8> {
        let mut object = serde_json::Map::new();
        object.insert(shape.key.into(), self.key.clone().into());
        object.insert(shape.id.into(), self.id.clone().into());
        let state = shape
            .states
            .get(usize::from(self.state) % (shape.states.len() + 1));
        object.insert(shape.state.into(), state.copied().unwrap_or("Bogus").into());
        for (name, value) in shape.fixed {
            object.insert((*name).into(), (*value).into());
        }
        let mut bytes = serde_json::to_vec(&object).unwrap();
        // The text property is written by hand, so that it can end in damage.
        bytes.pop();
        bytes.extend_from_slice(format!(",\"{}\":", shape.text).as_bytes());
        let quoted = serde_json::to_vec(&self.text()).unwrap();
        match &self.damage {
            None => bytes.extend_from_slice(&quoted),
            Some(damage) => {
                bytes.extend_from_slice(&quoted[..quoted.len() - 1]);
                match damage {
                    Damage::Byte(b) => bytes.push(0x80 | b),
                    Damage::Surrogate(u) => bytes
                        .extend_from_slice(format!("\\u{:04x}", 0xd800 | (u & 0x7ff)).as_bytes()),
                }
                bytes.push(b'"');
            }
        }
        bytes.push(b'}');
        bytes
    }
}

fn built_page<T: Record + Debug>(
    u: &mut Unstructured,
    shape: &Shape,
    decode: fn(&[u8]) -> Result<Vec<Checked<T>>, BadField>,
) {
    let Ok(spec) = PageSpec::arbitrary(u) else {
        return;
    };
    let space: &[u8] = if spec.spaced { b"\n  " } else { b"" };
    let mut page = format!(
        "{{\"@odata.context\":{},\"value\":[",
        serde_json::to_string(&spec.context).unwrap()
    )
    .into_bytes();
    for (i, r) in spec.records.iter().enumerate() {
        if i > 0 {
            page.push(b',');
        }
        page.extend_from_slice(space);
        page.extend_from_slice(&r.to_json(shape));
        page.extend_from_slice(space);
    }
    page.push(b']');
    if let Some(next) = &spec.next {
        page.extend_from_slice(
            format!(
                ",\"@odata.nextLink\":{}",
                serde_json::to_string(next).unwrap()
            )
            .as_bytes(),
        );
    }
    page.push(b'}');

    let damaged = spec.records.iter().any(|r| r.damage.is_some());
    assert_eq!(record::isolate_unreadable(&page).is_some(), damaged);
    let records = match decode(&page) {
        Ok(records) => records,
        Err(e) => panic!(
            "page failed as a whole: {e:?}: {:?}",
            String::from_utf8_lossy(&page)
        ),
    };
    assert_eq!(records.len(), spec.records.len(), "records lost or added");
    for (Checked(got), r) in records.iter().zip(&spec.records) {
        let text = r.text();
        let state_valid = usize::from(r.state) % (shape.states.len() + 1) < shape.states.len();
        let long: Vec<&str> = [(shape.key, &r.key), (shape.id, &r.id), (shape.text, &text)]
            .into_iter()
            .filter(|(_, t)| t.len() > MAX_TEXT)
            .map(|(name, _)| name)
            .collect();
        match got {
            Ok(device) => {
                assert!(
                    r.damage.is_none() && state_valid && long.is_empty(),
                    "{r:?} read as {device:?}"
                );
                let texts = device.texts();
                for (name, expected) in
                    [(shape.key, &r.key), (shape.id, &r.id), (shape.text, &text)]
                {
                    assert!(
                        texts.contains(&(name, expected.as_str())),
                        "{name} of {r:?} read as {device:?}"
                    );
                }
            }
            Err(u) => {
                check_unreadable::<T>(u);
                // Damage in the text leaves the key readable: the record is named by it.
                assert_eq!(u.key, Some((shape.key, r.key.clone())), "{u:?} for {r:?}");
                if T::LINK.is_some() {
                    assert_eq!(u.link.as_deref(), Some(r.key.as_str()), "{u:?} for {r:?}");
                }
                if r.damage.is_some() {
                    assert_eq!(u.field, shape.text, "{u:?} for {r:?}");
                } else if !state_valid {
                    assert_eq!(u.field, shape.state, "{u:?} for {r:?}");
                } else {
                    assert!(long.contains(&u.field.as_str()), "{u:?} for {r:?}");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => any_page(rest, exchange),
        1 => any_page(rest, graph),
        2 => built_page(&mut Unstructured::new(rest), &EXCHANGE, exchange),
        _ => built_page(&mut Unstructured::new(rest), &GRAPH, graph),
    }
});
