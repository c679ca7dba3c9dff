//! Malformed records on demand: the control API names a device and what to break in the record
//! one service returns for it (`Get-MobileDevice` on Exchange, `managedDevices` on Graph), and
//! the listing pages carry the damage from then on. The organization itself stays sound; only
//! what goes over the wire is broken, the way a buggy service or proxy would break it.
//!
//! Pages are rewritten only while a malformation is set, so the lab's hot path stays as it is.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The service whose records to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// `Get-MobileDevice` records, found by `DeviceId`.
    Exchange,
    /// `managedDevices` records, found by `easDeviceId`.
    Graph,
}

impl Service {
    fn key_field(self) -> &'static str {
        match self {
            Service::Exchange => "DeviceId",
            Service::Graph => "easDeviceId",
        }
    }
}

/// What to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Damage {
    /// The field is left out.
    MissingField,
    /// The field is a string of `bytes` bytes.
    HugeField { bytes: usize },
    /// The field is the string `"\ud800"`: valid JSON syntax, but half a UTF-16 pair.
    LoneSurrogate,
    /// The field's string holds bytes that are not UTF-8 (`0xff 0xfe`).
    InvalidUtf8,
    /// The record is listed twice (the field is ignored).
    Duplicate,
    /// `Identity` names a mailbox Exchange does not list (the field is ignored).
    NoMailbox,
}

/// One malformation, as `POST /_lab/malformed` takes it. (Serde cannot refuse unknown fields
/// next to a flattened enum, so a misspelt field is ignored.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Malformation {
    pub service: Service,
    /// The device (EAS `DeviceId`, any case) whose record is broken.
    pub device_id: String,
    /// The property broken (as the service spells it); unused by `duplicate`/`no_mailbox`.
    #[serde(default)]
    pub field: String,
    #[serde(flatten)]
    pub damage: Damage,
}

/// Stands in for a value that JSON serialization cannot produce; replaced in the bytes.
const MARKER: &str = "\u{1}lab-malformed\u{1}";

/// The malformations in force.
#[derive(Debug, Default)]
pub(crate) struct Malformed {
    list: Mutex<Vec<Malformation>>,
}

impl Malformed {
    pub fn add(&self, m: Malformation) {
        self.list.lock().expect("malformed").push(m);
    }

    pub fn clear(&self) {
        self.list.lock().expect("malformed").clear();
    }

    pub fn all(&self) -> Vec<Malformation> {
        self.list.lock().expect("malformed").clone()
    }

    /// `array` (a JSON array of `service`'s records) with the malformations applied; `None` when
    /// none applies to `service`.
    pub fn rewrite_array(&self, service: Service, array: &[u8]) -> Option<Vec<u8>> {
        let list: Vec<Malformation> = self
            .all()
            .into_iter()
            .filter(|m| m.service == service)
            .collect();
        if list.is_empty() {
            return None;
        }
        let records: Vec<Value> = serde_json::from_slice(array).expect("the lab's own JSON");
        let mut out = Vec::with_capacity(array.len());
        out.push(b'[');
        let mut first = true;
        for mut record in records {
            let id = record
                .get(service.key_field())
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let mut copies = 1;
            let mut raw: Option<&[u8]> = None;
            for m in list
                .iter()
                .filter(|m| !id.is_empty() && m.device_id.eq_ignore_ascii_case(&id))
            {
                let obj = record.as_object_mut().expect("records are objects");
                match m.damage {
                    Damage::MissingField => {
                        obj.remove(&m.field);
                    }
                    Damage::HugeField { bytes } => {
                        obj.insert(m.field.clone(), Value::String("x".repeat(bytes)));
                    }
                    Damage::LoneSurrogate => {
                        obj.insert(m.field.clone(), Value::String(MARKER.into()));
                        raw = Some(br#""\ud800""#);
                    }
                    Damage::InvalidUtf8 => {
                        obj.insert(m.field.clone(), Value::String(MARKER.into()));
                        raw = Some(b"\"\xff\xfe\"");
                    }
                    Damage::Duplicate => copies = 2,
                    Damage::NoMailbox => {
                        if let Some(Value::String(identity)) = obj.get_mut("Identity")
                            && let Some((_, device)) = identity.split_once('\\')
                        {
                            *identity = format!("lab-no-such-mailbox\\{device}");
                        }
                    }
                }
            }
            let mut bytes = serde_json::to_vec(&record).expect("a JSON value");
            if let Some(raw) = raw {
                let marker = serde_json::to_vec(MARKER).expect("a string");
                bytes = replace(&bytes, &marker, raw);
            }
            for _ in 0..copies {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&bytes);
            }
        }
        out.push(b']');
        Some(out)
    }
}

/// `haystack` with every `needle` replaced by `with`.
fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(damage: Damage, field: &str) -> Malformed {
        let m = Malformed::default();
        m.add(Malformation {
            service: Service::Exchange,
            device_id: "abc".into(),
            field: field.into(),
            damage,
        });
        m
    }

    const PAGE: &[u8] =
        br#"[{"Identity":"alice\\ExchangeActiveSyncDevices\\x","DeviceId":"ABC","DeviceModel":"m"},{"DeviceId":"other","DeviceModel":"m"}]"#;

    #[test]
    fn breaks_only_the_named_device_and_only_for_its_service() {
        let m = set(Damage::MissingField, "DeviceModel");
        let out: Vec<Value> =
            serde_json::from_slice(&m.rewrite_array(Service::Exchange, PAGE).unwrap()).unwrap();
        assert!(out[0].get("DeviceModel").is_none());
        assert_eq!(out[1]["DeviceModel"], "m");
        assert!(m.rewrite_array(Service::Graph, b"[]").is_none());

        let m = set(Damage::Duplicate, "");
        let out: Vec<Value> =
            serde_json::from_slice(&m.rewrite_array(Service::Exchange, PAGE).unwrap()).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], out[1]);

        let m = set(Damage::NoMailbox, "");
        let out: Vec<Value> =
            serde_json::from_slice(&m.rewrite_array(Service::Exchange, PAGE).unwrap()).unwrap();
        assert_eq!(
            out[0]["Identity"],
            "lab-no-such-mailbox\\ExchangeActiveSyncDevices\\x"
        );
    }

    #[test]
    fn reads_the_control_api_form() {
        let m: Malformation = serde_json::from_str(
            r#"{"service":"graph","device_id":"X","field":"deviceName","kind":"huge_field","bytes":9}"#,
        )
        .unwrap();
        assert_eq!(m.damage, Damage::HugeField { bytes: 9 });
        assert!(
            serde_json::from_str::<Malformation>(
                r#"{"service":"graph","device_id":"X","kind":"odd"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn writes_bytes_that_serialization_cannot() {
        let m = set(Damage::LoneSurrogate, "DeviceModel");
        let out = m.rewrite_array(Service::Exchange, PAGE).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""DeviceModel":"\ud800""#), "{text}");
        let m = set(Damage::InvalidUtf8, "DeviceModel");
        let out = m.rewrite_array(Service::Exchange, PAGE).unwrap();
        assert!(String::from_utf8(out.clone()).is_err());
        assert!(replace(&out, b"\xff\xfe", b"").len() < out.len());
        let m = set(Damage::HugeField { bytes: 1 << 20 }, "DeviceModel");
        let out = m.rewrite_array(Service::Exchange, PAGE).unwrap();
        assert!(out.len() > 1 << 20);
    }
}
