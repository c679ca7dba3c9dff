//! Between the lab's Exchange and CLIXML: parameters as a PowerShell client sends them become
//! the JSON values the lab's binding takes, the cmdlets' JSON objects become Exchange's
//! deserialized objects (type names, typed properties, multi-valued properties as lists,
//! `ToString` = `Identity`), and `CmdletError`s become ErrorRecords as Exchange writes them.
//!
//! Objects are converted while their JSON is read (a serde visitor writing straight into the
//! CLIXML writer), so no intermediate tree is built: this is the lab's hot path when a client
//! lists 100 000 devices.

use std::fmt;

use easgate_psrp::messages::category;
use easgate_psrp::{Container, ErrorRecord, Value, Writer};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use super::super::error::CmdletError;
use crate::utc::Utc;

const ADCONFIG: &[&str] = &[
    "Deserialized.Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "Deserialized.Microsoft.Exchange.Data.Directory.ADObject",
    "Deserialized.Microsoft.Exchange.Data.ConfigurableObject",
    "Deserialized.System.Object",
];

/// The type names (most derived first) of the objects `cmdlet` returns.
pub(super) fn type_names(cmdlet: &str) -> Vec<&'static str> {
    let (own, base): (&[&str], &[&str]) = match cmdlet {
        "Get-MobileDevice" => (
            &["Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice"],
            ADCONFIG,
        ),
        "Get-MobileDeviceStatistics" => (
            &["Deserialized.Microsoft.Exchange.Management.Tasks.MobileDeviceConfiguration"],
            &[
                "Deserialized.Microsoft.Exchange.Data.ConfigurableObject",
                "Deserialized.System.Object",
            ],
        ),
        "Get-CASMailbox" => (
            &["Deserialized.Microsoft.Exchange.Data.Directory.Management.CASMailbox"],
            PRESENTATION,
        ),
        "Get-Mailbox" => (
            &[
                "Deserialized.Microsoft.Exchange.Data.Directory.Management.Mailbox",
                "Deserialized.Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
                "Deserialized.Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
            ],
            PRESENTATION,
        ),
        "Get-ActiveSyncOrganizationSettings" => (
            &[
                "Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.ActiveSyncOrganizationSettings",
            ],
            ADCONFIG,
        ),
        "Get-ActiveSyncDeviceAccessRule" | "New-ActiveSyncDeviceAccessRule" => (
            &[
                "Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.ActiveSyncDeviceAccessRule",
            ],
            ADCONFIG,
        ),
        "Get-ExchangeServer" => (
            &["Deserialized.Microsoft.Exchange.Data.Directory.Management.ExchangeServer"],
            PRESENTATION,
        ),
        "Get-ClientAccessService" => (
            &["Deserialized.Microsoft.Exchange.Data.Directory.Management.ClientAccessServer"],
            PRESENTATION,
        ),
        _ => (
            &["Deserialized.System.Management.Automation.PSCustomObject"],
            &["Deserialized.System.Object"],
        ),
    };
    own.iter().chain(base).copied().collect()
}

/// The type names of `cmdlet`'s objects after `Select-Object -Property`: custom objects named
/// after the type they were cut from, as PowerShell's serializer writes them.
pub(super) fn selected_type_names(cmdlet: &str) -> Vec<String> {
    let own = type_names(cmdlet)[0].trim_start_matches("Deserialized.");
    vec![
        format!("Selected.{own}"),
        "System.Management.Automation.PSCustomObject".to_owned(),
        "System.Object".to_owned(),
    ]
}

const PRESENTATION: &[&str] = &[
    "Deserialized.Microsoft.Exchange.Data.Directory.ADPresentationObject",
    "Deserialized.Microsoft.Exchange.Data.ConfigurableObject",
    "Deserialized.System.Object",
];

const MULTI_VALUED: &[&str] = &[
    "Deserialized.Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089]]",
    "Deserialized.Microsoft.Exchange.Data.MultiValuedPropertyBase",
    "Deserialized.System.Object",
];

/// Whether a JSON string of the lab's views is a UTC time (`2026-12-06T20:08:38Z`).
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[..4].iter().all(u8::is_ascii_digit)
        && s.ends_with('Z')
}

/// Converts the JSON array `json` of `cmdlet`'s objects, calling `emit` with each object's CLIXML
/// (one PIPELINE_OUTPUT body each). With a `selection` (`Select-Object -Property`), each
/// object keeps just those properties, as a custom object's extended ones. Returns how many
/// objects there were.
pub(super) fn objects(
    json: &[u8],
    types: &[&str],
    selection: Option<&[String]>,
    w: &mut Writer,
    emit: &mut dyn FnMut(&str),
) -> Result<usize, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let n = de.deserialize_seq(Objects {
        types,
        selection,
        w,
        emit,
    })?;
    de.end()?;
    Ok(n)
}

struct Objects<'a> {
    types: &'a [&'a str],
    selection: Option<&'a [String]>,
    w: &'a mut Writer,
    emit: &'a mut dyn FnMut(&str),
}

impl<'de> Visitor<'de> for Objects<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        let mut key = String::new();
        loop {
            self.w.reset();
            let seed = ObjectSeed {
                types: self.types,
                selection: self.selection,
                w: self.w,
                key: &mut key,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(n);
            }
            (self.emit)(self.w.as_str());
            n += 1;
        }
    }
}

struct ObjectSeed<'a> {
    types: &'a [&'a str],
    selection: Option<&'a [String]>,
    w: &'a mut Writer,
    key: &'a mut String,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some(names) = self.selection {
            return select(map, names, self.types, self.w, self.key);
        }
        self.w.begin_object(None, self.types, None);
        let mark = self.w.len();
        self.w.begin_props();
        let mut identity: Option<String> = None;
        while map.next_key_seed(KeySeed(self.key))?.is_some() {
            let capture = (self.key == "Identity").then_some(&mut identity);
            map.next_value_seed(PropSeed {
                name: Some(self.key),
                w: self.w,
                capture,
            })?;
        }
        self.w.end_props();
        if let Some(id) = identity {
            self.w.insert_to_string(mark, &id);
        }
        self.w.end_object();
        Ok(())
    }
}

/// One object as `Select-Object -Property <names>` leaves it: a custom object with just those
/// properties (spelled as the object spells them), `$null` for one it lacks.
fn select<'de, A: MapAccess<'de>>(
    mut map: A,
    names: &[String],
    types: &[&str],
    w: &mut Writer,
    key: &mut String,
) -> Result<(), A::Error> {
    w.begin_object(None, types, None);
    w.begin_ms();
    let mut written = vec![false; names.len()];
    while map.next_key_seed(KeySeed(key))?.is_some() {
        match names.iter().position(|n| n.eq_ignore_ascii_case(key)) {
            Some(i) if !written[i] => {
                written[i] = true;
                map.next_value_seed(PropSeed {
                    name: Some(key),
                    w,
                    capture: None,
                })?;
            }
            _ => {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
    }
    for (name, _) in names.iter().zip(&written).filter(|(_, w)| !**w) {
        w.nil(Some(name));
    }
    w.end_ms();
    w.end_object();
    Ok(())
}

/// Reads a map key into a reused buffer.
struct KeySeed<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.clear();
        self.0.push_str(v);
        Ok(())
    }
}

/// Writes one JSON value as a CLIXML property (or list item when `name` is `None`).
struct PropSeed<'a> {
    name: Option<&'a str>,
    w: &'a mut Writer,
    /// Where to keep the value's text (for `ToString`).
    capture: Option<&'a mut Option<String>>,
}

impl<'de> DeserializeSeed<'de> for PropSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PropSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if let Some(c) = self.capture {
            *c = Some(v.to_owned());
        }
        if is_time(v) {
            self.w.datetime(self.name, v);
        } else {
            self.w.string(self.name, v);
        }
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.w.bool(self.name, v);
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        match i32::try_from(v) {
            Ok(n) => self.w.i32(self.name, n),
            Err(_) => self.w.i64(self.name, v),
        }
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        match (i32::try_from(v), i64::try_from(v)) {
            (Ok(n), _) => self.w.i32(self.name, n),
            (_, Ok(n)) => self.w.i64(self.name, n),
            _ => self.w.u64(self.name, v),
        }
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.w.double(self.name, v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.w.nil(self.name);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.w.nil(self.name);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Exchange's multi-valued properties (the lab's only arrays) arrive as lists.
        self.w.begin_object(self.name, MULTI_VALUED, None);
        self.w.begin_list();
        while seq
            .next_element_seed(PropSeed {
                name: None,
                w: self.w,
                capture: None,
            })?
            .is_some()
        {}
        self.w.end_list();
        self.w.end_object();
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.w.begin_object(self.name, &[], None);
        self.w.begin_ms();
        let mut key = String::new();
        while map.next_key_seed(KeySeed(&mut key))?.is_some() {
            map.next_value_seed(PropSeed {
                name: Some(&key),
                w: self.w,
                capture: None,
            })?;
        }
        self.w.end_ms();
        self.w.end_object();
        Ok(())
    }
}

/// A CLIXML parameter value as the lab's binding takes it: hashtables become
/// `#Exchange.GenericHashTable` objects, lists arrays, enums their name, other objects their text.
pub(super) fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::String(s) | Value::DateTime(s) | Value::Version(s) => Json::String(s.clone()),
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::Double(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::Guid(g) => Json::String(g.to_string()),
        Value::Char(c) => Json::String(
            char::from_u32(u32::from(*c))
                .unwrap_or('\u{fffd}')
                .to_string(),
        ),
        Value::Bytes(b) => Json::String(easgate_psrp::clixml::base64_encode(b)),
        Value::Other { text, .. } => Json::String(text.clone()),
        Value::Object(o) => match &o.container {
            Container::List(_, items) => Json::Array(items.iter().map(to_json).collect()),
            Container::Dict(entries) => {
                let mut m = Map::new();
                m.insert(
                    "@odata.type".into(),
                    Json::String("#Exchange.GenericHashTable".into()),
                );
                for (k, v) in entries {
                    m.insert(k.as_str().unwrap_or_default().to_owned(), to_json(v));
                }
                Json::Object(m)
            }
            Container::None => match (&o.base, &o.to_string) {
                // An enum: its name, which is how the lab's binding (and Exchange's) reads it.
                (Some(Value::I32(_)), Some(name)) => Json::String(name.clone()),
                (Some(base), _) => to_json(base),
                (None, Some(text)) => Json::String(text.clone()),
                (None, None) => Json::Null,
            },
        },
    }
}

/// The Exchange task class named in `FullyQualifiedErrorId`s.
fn task_class(cmdlet: &str) -> String {
    let compact: String = cmdlet.chars().filter(|c| *c != '-').collect();
    let ns = if cmdlet.contains("Mailbox") {
        "Microsoft.Exchange.Management.RecipientTasks"
    } else {
        "Microsoft.Exchange.Management.Tasks"
    };
    format!("{ns}.{compact}")
}

fn category_number(name: &str) -> i32 {
    (0..=31)
        .find(|n| category::name(*n) == name)
        .unwrap_or(category::NOT_SPECIFIED)
}

fn short(exception: &str) -> &str {
    exception.rsplit('.').next().unwrap_or(exception)
}

/// Whether the error stops the pipeline (PowerShell's binding and lookup errors) rather than
/// being written by the cmdlet (Exchange's task errors).
pub(super) fn is_terminating(e: &CmdletError) -> bool {
    e.exception.starts_with("System.Management.Automation.")
}

/// The ErrorRecord Exchange writes for `e` raised by `cmdlet` on `server`.
pub(super) fn error_record(
    e: &CmdletError,
    cmdlet: &str,
    server: &str,
    target: Option<&str>,
) -> ErrorRecord {
    let reason = short(e.exception).to_owned();
    let fqid = if e.exception.contains(".ParameterBinding") {
        let id = if e.message.starts_with("A parameter cannot be found") {
            "NamedParameterNotFound"
        } else if e
            .message
            .starts_with("Cannot process command because of one or more missing")
        {
            "MissingMandatoryParameter"
        } else if e.message.starts_with("Cannot bind parameter") {
            "CannotConvertArgumentNoMessage"
        } else if e.message.starts_with("Parameter set cannot be resolved") {
            "AmbiguousParameterSet"
        } else {
            "ParameterArgumentValidationError"
        };
        format!("{id},{cmdlet}")
    } else if e.exception.ends_with("CommandNotFoundException") {
        "CommandNotFoundException".to_owned()
    } else {
        // Exchange's task errors: server, request and time, the failure category, a hash of the
        // error site and the task class.
        let hash = e.exception.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        format!(
            "[Server={server},RequestId={},TimeStamp={}] [FailureCategory=Cmdlet-{reason}] {hash:08X},{}",
            easgate_psrp::Guid::new_v4(),
            Utc::now(),
            task_class(cmdlet)
        )
    };
    ErrorRecord {
        exception_types: [e.exception, "System.Exception", "System.Object"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        message: e.message.clone(),
        fully_qualified_error_id: fqid,
        category: category_number(e.category),
        activity: if e.exception.ends_with("CommandNotFoundException") {
            String::new()
        } else {
            cmdlet.to_owned()
        },
        reason,
        target_name: target.unwrap_or_default().to_owned(),
        target_type: if target.is_some() {
            "String".to_owned()
        } else {
            String::new()
        },
    }
}

/// The error of a script (or anything but a cmdlet) sent to Exchange's no-language runspace.
pub(super) fn script_refused(text: &str) -> ErrorRecord {
    ErrorRecord {
        exception_types: ["System.Management.Automation.RemoteException", "System.Exception", "System.Object"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        message: "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode.".into(),
        fully_qualified_error_id: "ScriptsNotAllowed".into(),
        category: category::PARSER_ERROR,
        activity: String::new(),
        reason: "ParseException".into(),
        target_name: text.to_owned(),
        target_type: "String".into(),
    }
}

/// The error `Get-Command -Name name` writes when the session has no such command.
pub(super) fn command_not_found_by_get_command(name: &str) -> ErrorRecord {
    ErrorRecord {
        fully_qualified_error_id:
            "CommandNotFoundException,Microsoft.PowerShell.Commands.GetCommandCommand".into(),
        activity: "Get-Command".into(),
        ..command_not_found(name)
    }
}

/// A command that is not one of the role's cmdlets.
pub(super) fn command_not_found(name: &str) -> ErrorRecord {
    ErrorRecord {
        exception_types: [
            "System.Management.Automation.CommandNotFoundException",
            "System.Exception",
            "System.Object",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        message: format!(
            "The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
        ),
        fully_qualified_error_id: "CommandNotFoundException".into(),
        category: category::OBJECT_NOT_FOUND,
        activity: String::new(),
        reason: "CommandNotFoundException".into(),
        target_name: name.to_owned(),
        target_type: "String".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_become_typed_clixml_with_identity_as_to_string() {
        let json = br#"[{"Name":"a","WhenChanged":"2026-12-06T20:08:38Z","Count":3,"Big":5000000000,"On":true,"Gone":null,"Ids":["x","y"],"Identity":"contoso/a"}]"#;
        let mut out = Vec::new();
        let n = objects(
            json,
            &type_names("Get-MobileDevice"),
            None,
            &mut Writer::new(),
            &mut |s| out.push(s.to_owned()),
        )
        .unwrap();
        assert_eq!(n, 1);
        let v = easgate_psrp::from_clixml(&out[0]).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(
            o.type_names[0],
            "Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice"
        );
        assert_eq!(o.to_string.as_deref(), Some("contoso/a"));
        assert_eq!(
            v.prop("WhenChanged"),
            Some(&Value::DateTime("2026-12-06T20:08:38Z".into()))
        );
        assert_eq!(v.prop("Count"), Some(&Value::I32(3)));
        assert_eq!(v.prop("Big"), Some(&Value::I64(5_000_000_000)));
        assert_eq!(v.prop("On"), Some(&Value::Bool(true)));
        assert_eq!(v.prop("Gone"), Some(&Value::Null));
        let ids = v.prop("Ids").unwrap();
        assert_eq!(
            ids.as_list().unwrap(),
            &[Value::string("x"), Value::string("y")]
        );
        assert!(ids.as_object().unwrap().type_names[0].contains("MultiValuedProperty"));
    }

    #[test]
    fn a_selection_keeps_just_the_named_properties_as_a_custom_object() {
        let json = br#"[{"DeviceId":"A1","Identity":"contoso/a","Ids":["x"],"Other":1},{"DeviceId":"B2","Identity":"contoso/b"}]"#;
        let names = ["identity", "DeviceId", "Ids"].map(String::from);
        let types = selected_type_names("Get-MobileDevice");
        let types: Vec<&str> = types.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        let n = objects(json, &types, Some(&names), &mut Writer::new(), &mut |s| {
            out.push(s.to_owned())
        })
        .unwrap();
        assert_eq!(n, 2);
        let v = easgate_psrp::from_clixml(&out[0]).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(
            o.type_names,
            [
                "Selected.Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice",
                "System.Management.Automation.PSCustomObject",
                "System.Object"
            ]
        );
        assert!(
            out[0].contains("<MS>") && !out[0].contains("<Props>"),
            "{}",
            out[0]
        );
        // Spelled as the object spells them, the rest left out.
        assert!(o.extended.iter().any(|(k, _)| k == "Identity"), "{o:?}");
        assert_eq!(v.prop("Identity"), Some(&Value::string("contoso/a")));
        assert_eq!(v.prop("DeviceId"), Some(&Value::string("A1")));
        assert_eq!(
            v.prop("Ids").and_then(Value::as_list).map(<[_]>::len),
            Some(1)
        );
        assert_eq!(v.prop("Other"), None);
        // A property the object lacks is there, as $null.
        let second = easgate_psrp::from_clixml(&out[1]).unwrap();
        assert_eq!(second.prop("Ids"), Some(&Value::Null));
    }

    #[test]
    fn parameters_become_what_the_binding_takes() {
        let h = Value::hashtable(vec![(
            Value::string("Add"),
            Value::array(vec![Value::string("d1")]),
        )]);
        assert_eq!(
            to_json(&h),
            serde_json::json!({"@odata.type":"#Exchange.GenericHashTable","Add":["d1"]})
        );
        assert_eq!(
            to_json(&Value::enumeration("X.AccessLevel", "Block", 1)),
            serde_json::json!("Block")
        );
        assert_eq!(to_json(&Value::Null), Json::Null);
    }

    #[test]
    fn errors_read_as_exchange_writes_them() {
        let e = CmdletError::not_found("nobody", "CAS01.contoso.com");
        let r = error_record(&e, "Get-CASMailbox", "CAS01", None);
        assert!(!is_terminating(&e));
        assert!(
            r.fully_qualified_error_id
                .contains("[FailureCategory=Cmdlet-ManagementObjectNotFoundException]"),
            "{}",
            r.fully_qualified_error_id
        );
        assert!(
            r.fully_qualified_error_id
                .ends_with(",Microsoft.Exchange.Management.RecipientTasks.GetCASMailbox")
        );
        assert_eq!(
            r.category_message(),
            "NotSpecified: (:) [Get-CASMailbox], ManagementObjectNotFoundException"
        );
        let b = CmdletError::unknown_parameter("Bogus");
        assert!(is_terminating(&b));
        let r = error_record(&b, "Get-CASMailbox", "CAS01", None);
        assert_eq!(
            r.fully_qualified_error_id,
            "NamedParameterNotFound,Get-CASMailbox"
        );
        assert_eq!(
            r.message,
            "A parameter cannot be found that matches parameter name 'Bogus'."
        );
    }
}
