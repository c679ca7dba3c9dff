//! Binding of `CmdletInput.Parameters` to a cmdlet's declared parameters, with PowerShell's rules:
//! names match ignoring case, an unknown name is an error, mandatory ones must be present, and
//! values convert to the parameter's type or fail with the conversion error Exchange gives.
//!
//! Multi-valued properties (`ActiveSyncAllowedDeviceIDs`, `AdminMailRecipients`) take either a
//! list (replace), `null` or `[]` (clear), or a `#Exchange.GenericHashTable` with `Add`/`Remove`.

use serde_json::{Map, Value};

use super::error::CmdletError;
use crate::org::{AccessLevel, Characteristic};

/// A cmdlet's parameter list.
#[derive(Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub mandatory: &'static [&'static str],
}

/// PowerShell common parameters every cmdlet accepts (and the lab ignores).
const COMMON: &[&str] = &[
    "Confirm",
    "ErrorAction",
    "WarningAction",
    "Verbose",
    "Debug",
    "DomainController",
];

/// Bound arguments, keyed by the declared spelling.
#[derive(Debug, Default)]
pub(crate) struct Args {
    values: Vec<(&'static str, Value)>,
}

/// How many objects a `Get-` cmdlet may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultSize {
    /// Not given: Exchange returns the first 1000 and warns.
    Default,
    Limit(u32),
    Unlimited,
}

impl ResultSize {
    pub const DEFAULT_LIMIT: u32 = 1000;

    pub fn limit(self) -> u32 {
        match self {
            ResultSize::Default => Self::DEFAULT_LIMIT,
            ResultSize::Limit(n) => n,
            ResultSize::Unlimited => u32::MAX,
        }
    }
}

/// A write to a multi-valued property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MultiValue {
    Replace(Vec<String>),
    Modify {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

const HASHTABLE: &str = "#Exchange.GenericHashTable";

pub(crate) fn bind(spec: &Spec, raw: Option<&Map<String, Value>>) -> Result<Args, CmdletError> {
    let mut args = Args::default();
    for (name, value) in raw.into_iter().flatten() {
        if COMMON.iter().any(|c| c.eq_ignore_ascii_case(name)) {
            continue;
        }
        let declared = spec
            .params
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
            .ok_or_else(|| CmdletError::unknown_parameter(name))?;
        args.values.push((declared, value.clone()));
    }
    let missing: Vec<&str> = spec
        .mandatory
        .iter()
        .copied()
        .filter(|m| args.get(m).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(CmdletError::missing_parameters(&missing));
    }
    Ok(args)
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Args {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A string parameter; numbers convert as PowerShell would convert them.
    pub fn string(&self, name: &str) -> Result<Option<String>, CmdletError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(if *b { "True" } else { "False" }.to_owned())),
            Some(other) => Err(CmdletError::bad_value(name, &show(other), "System.String")),
        }
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, CmdletError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s == "$true" => {
                Ok(Some(true))
            }
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s == "$false" => {
                Ok(Some(false))
            }
            Some(other) => Err(CmdletError::bad_value(name, &show(other), "System.Boolean")),
        }
    }

    /// A switch: present (with `true`, or no meaningful value) means on.
    pub fn switch(&self, name: &str) -> Result<bool, CmdletError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Null) => Ok(true),
            Some(_) => Ok(self.boolean(name)?.unwrap_or(false)),
        }
    }

    pub fn result_size(&self) -> Result<ResultSize, CmdletError> {
        let bad = |v: &Value| {
            CmdletError::bad_value(
                "ResultSize",
                &show(v),
                "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]",
            )
        };
        match self.get("ResultSize") {
            None => Ok(ResultSize::Default),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("unlimited") => {
                Ok(ResultSize::Unlimited)
            }
            Some(v @ Value::String(s)) => match s.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(ResultSize::Limit(n)),
                _ => Err(bad(v)),
            },
            Some(v @ Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n > 0 => Ok(ResultSize::Limit(n)),
                _ => Err(bad(v)),
            },
            Some(v) => Err(bad(v)),
        }
    }

    pub fn access_level(&self, name: &str) -> Result<Option<AccessLevel>, CmdletError> {
        match self.string(name)? {
            None => Ok(None),
            Some(s) => AccessLevel::parse(&s).map(Some).ok_or_else(|| {
                CmdletError::bad_value(
                    name,
                    &s,
                    "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessLevel",
                )
            }),
        }
    }

    pub fn characteristic(&self, name: &str) -> Result<Option<Characteristic>, CmdletError> {
        match self.string(name)? {
            None => Ok(None),
            Some(s) => Characteristic::parse(&s).map(Some).ok_or_else(|| {
                CmdletError::bad_value(
                    name,
                    &s,
                    "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessCharacteristic",
                )
            }),
        }
    }

    /// A multi-valued property write; `None` when the parameter is absent.
    pub fn multi(&self, name: &str) -> Result<Option<MultiValue>, CmdletError> {
        let mvp = "Microsoft.Exchange.Data.MultiValuedProperty`1[System.String]";
        let strings = |v: &Value| -> Result<Vec<String>, CmdletError> {
            let items = match v {
                Value::Null => return Ok(Vec::new()),
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(CmdletError::bad_value(name, &show(other), mvp)),
                    })
                    .collect::<Result<_, _>>()?,
                other => return Err(CmdletError::bad_value(name, &show(other), mvp)),
            };
            if let Some(empty) = items.iter().find(|s| s.trim().is_empty()) {
                return Err(CmdletError::bad_value(name, empty, mvp));
            }
            Ok(items)
        };
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let Value::Object(table) = value else {
            return strings(value).map(|v| Some(MultiValue::Replace(v)));
        };
        let is_hashtable = table
            .get("@odata.type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case(HASHTABLE));
        if !is_hashtable {
            return Err(CmdletError::bad_value(name, &show(value), mvp));
        }
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for (key, v) in table {
            if key == "@odata.type" {
                continue;
            } else if key.eq_ignore_ascii_case("Add") {
                add = strings(v)?;
            } else if key.eq_ignore_ascii_case("Remove") {
                remove = strings(v)?;
            } else {
                // Exchange only understands Add and Remove in a hashtable for a multi-valued property.
                return Err(CmdletError::bad_value(name, &show(value), mvp));
            }
        }
        Ok(Some(MultiValue::Modify { add, remove }))
    }
}

impl MultiValue {
    /// Applies the write to `list`, comparing ignoring case as Exchange does. Adding a value that is
    /// already present fails like Exchange's `MultiValuedProperty.Add`; removing an absent one is a
    /// no-op.
    pub fn apply(&self, list: &mut Vec<Box<str>>) -> Result<(), CmdletError> {
        match self {
            MultiValue::Replace(values) => {
                let mut out: Vec<Box<str>> = Vec::with_capacity(values.len());
                for v in values {
                    if !out.iter().any(|x| x.eq_ignore_ascii_case(v)) {
                        out.push(v.as_str().into());
                    }
                }
                *list = out;
            }
            MultiValue::Modify { add, remove } => {
                let mut next = list.clone();
                next.retain(|x| !remove.iter().any(|r| r.eq_ignore_ascii_case(x)));
                for a in add {
                    if next.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                        return Err(CmdletError::already_present(a));
                    }
                    next.push(a.as_str().into());
                }
                *list = next;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: Spec = Spec {
        name: "Set-CASMailbox",
        params: &["Identity", "ActiveSyncAllowedDeviceIDs", "ResultSize"],
        mandatory: &["Identity"],
    };

    fn args(v: Value) -> Result<Args, CmdletError> {
        bind(&SPEC, v.as_object())
    }

    fn list(items: &[&str]) -> Vec<Box<str>> {
        items.iter().map(|s| (*s).into()).collect()
    }

    #[test]
    fn binds_names_ignoring_case_and_rejects_unknown_or_missing() {
        let a = args(json!({"identity": "x", "confirm": false})).unwrap();
        assert_eq!(a.string("Identity").unwrap().as_deref(), Some("x"));
        let e = args(json!({"Identity": "x", "Bogus": 1})).unwrap_err();
        assert!(e.message.contains("'Bogus'"), "{}", e.message);
        let e = args(json!({})).unwrap_err();
        assert!(e.message.contains("missing mandatory parameters: Identity"));
    }

    #[test]
    fn result_size_forms() {
        let rs = |v: Value| {
            args(json!({"Identity": "x", "ResultSize": v}))
                .unwrap()
                .result_size()
        };
        assert_eq!(rs(json!("Unlimited")).unwrap(), ResultSize::Unlimited);
        assert_eq!(rs(json!(50)).unwrap(), ResultSize::Limit(50));
        assert_eq!(rs(json!("50")).unwrap(), ResultSize::Limit(50));
        assert!(rs(json!("lots")).is_err());
        assert!(rs(json!(0)).is_err());
        assert_eq!(
            args(json!({"Identity": "x"}))
                .unwrap()
                .result_size()
                .unwrap(),
            ResultSize::Default
        );
    }

    fn write(v: Value) -> Result<Option<MultiValue>, CmdletError> {
        args(json!({"Identity": "x", "ActiveSyncAllowedDeviceIDs": v}))
            .unwrap()
            .multi("ActiveSyncAllowedDeviceIDs")
    }

    #[test]
    fn multi_value_replace_and_clear() {
        let mut l = list(&["A", "B"]);
        write(json!(["C", "c", "D"]))
            .unwrap()
            .unwrap()
            .apply(&mut l)
            .unwrap();
        assert_eq!(l, list(&["C", "D"]));
        write(json!("E")).unwrap().unwrap().apply(&mut l).unwrap();
        assert_eq!(l, list(&["E"]));
        write(json!(null)).unwrap().unwrap().apply(&mut l).unwrap();
        assert!(l.is_empty());
        let mut l = list(&["A"]);
        write(json!([])).unwrap().unwrap().apply(&mut l).unwrap();
        assert!(l.is_empty());
        assert!(write(json!([""])).is_err());
        assert!(write(json!([1])).is_err());
    }

    #[test]
    fn multi_value_add_remove() {
        let table = |add: Value, remove: Value| json!({"@odata.type": "#Exchange.GenericHashTable", "Add": add, "Remove": remove});
        let mut l = list(&["A", "B"]);
        write(table(json!(["C"]), json!(["b"])))
            .unwrap()
            .unwrap()
            .apply(&mut l)
            .unwrap();
        assert_eq!(l, list(&["A", "C"]));
        // Removing what is absent is a no-op; a single string is a one-element list.
        write(table(json!([]), json!("ZZZ")))
            .unwrap()
            .unwrap()
            .apply(&mut l)
            .unwrap();
        assert_eq!(l, list(&["A", "C"]));
        // Adding what is present (in any case) fails and leaves the list unchanged.
        let e = write(table(json!(["x", "a"]), json!([])))
            .unwrap()
            .unwrap()
            .apply(&mut l)
            .unwrap_err();
        assert!(e.message.contains("already present"), "{}", e.message);
        assert_eq!(l, list(&["A", "C"]));
        // Remove then re-add in one write is allowed: Remove applies first.
        write(table(json!(["a"]), json!(["A"])))
            .unwrap()
            .unwrap()
            .apply(&mut l)
            .unwrap();
        assert_eq!(l, list(&["C", "a"]));
        // Only lowercase keys: still Add/Remove.
        let lower = json!({"@odata.type": "#Exchange.GenericHashTable", "add": "Q"});
        write(lower).unwrap().unwrap().apply(&mut l).unwrap();
        assert_eq!(l, list(&["C", "a", "Q"]));
        // Not a hashtable, or a key other than Add/Remove.
        assert!(write(json!({"Add": ["X"]})).is_err());
        assert!(
            write(json!({"@odata.type": "#Exchange.GenericHashTable", "Replace": ["X"]})).is_err()
        );
    }
}
