//! A cmdlet call as a plan holds it and the journal stores it: the cmdlet's name and its
//! parameters, typed the way PowerShell types them, in the order given.
//!
//! The stored JSON is our own and names no wire:
//!
//! ```json
//! {"cmdlet":"Set-CASMailbox","parameters":{"Identity":{"text":"alice"},
//!   "ActiveSyncAllowedDeviceIDs":{"hash_edit":{"add":["ID1"],"remove":[]}}}}
//! ```
//!
//! The REST transport renders it as `CmdletInput` (a hashtable edit becomes an
//! `#Exchange.GenericHashTable` there and only there); a PowerShell transport as a pipeline's
//! command with its parameters.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::inventory::DeviceKey;

/// One parameter's value, wire-neutral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamValue {
    /// A string: `-Identity alice`.
    Text(String),
    /// A string array: `-Mailbox a,b`.
    Texts(Vec<String>),
    /// A number: `-ResultSize 5`.
    Int(i64),
    /// `-ResultSize Unlimited`.
    Unlimited,
    /// A switch that is present: `-ActiveSync`. An absent switch is no parameter at all.
    Switch,
    /// A boolean: `-ViewEntireForest $true`.
    Bool(bool),
    /// An in-place edit of a multi-valued property: `@{Add=…; Remove=…}`. Repeating it has
    /// the same effect (Exchange refuses an `Add` of a present value, which the client reads
    /// as applied after an unanswered attempt).
    HashEdit {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

/// A cmdlet's parameters in the order they were given (the order they are rendered in).
///
/// Stored as a JSON object whose members keep that order; a name given twice is refused when
/// read back, as PowerShell refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parameters(Vec<(String, ParamValue)>);

impl Parameters {
    pub fn new() -> Self {
        Parameters(Vec::new())
    }

    /// Adds `name` with `value` at the end, replacing an earlier value of the same name in
    /// its place.
    pub fn push(&mut self, name: impl Into<String>, value: ParamValue) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    /// [`push`](Self::push) as a builder.
    pub fn with(mut self, name: impl Into<String>, value: ParamValue) -> Self {
        self.push(name, value);
        self
    }

    /// `-name 'value'`.
    pub fn text(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.with(name, ParamValue::Text(value.into()))
    }

    /// `-name 'a','b'`.
    pub fn texts(self, name: impl Into<String>, values: Vec<String>) -> Self {
        self.with(name, ParamValue::Texts(values))
    }

    /// `-name 5`.
    pub fn int(self, name: impl Into<String>, value: i64) -> Self {
        self.with(name, ParamValue::Int(value))
    }

    /// `-name Unlimited`.
    pub fn unlimited(self, name: impl Into<String>) -> Self {
        self.with(name, ParamValue::Unlimited)
    }

    /// `-name` (a switch, present).
    pub fn switch(self, name: impl Into<String>) -> Self {
        self.with(name, ParamValue::Switch)
    }

    /// `-name $true` / `$false`.
    pub fn bool(self, name: impl Into<String>, value: bool) -> Self {
        self.with(name, ParamValue::Bool(value))
    }

    /// `-name @{Add=…; Remove=…}`.
    pub fn hash_edit(self, name: impl Into<String>, add: Vec<String>, remove: Vec<String>) -> Self {
        self.with(name, ParamValue::HashEdit { add, remove })
    }

    /// The value of `name` (compared as written: cmdlets' parameter names are spelled one way
    /// throughout the connector).
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The text of `name`, if it is a [`ParamValue::Text`].
    pub fn get_text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(ParamValue::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// Each parameter, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &ParamValue)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, ParamValue)> for Parameters {
    fn from_iter<I: IntoIterator<Item = (String, ParamValue)>>(iter: I) -> Self {
        let mut p = Parameters::new();
        for (n, v) in iter {
            p.push(n, v);
        }
        p
    }
}

impl Serialize for Parameters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Parameters;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of parameter names and values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parameters, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((name, value)) = map.next_entry::<String, ParamValue>()? {
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format_args!(
                            "parameter `{name}` given twice"
                        )));
                    }
                    out.push((name, value));
                }
                Ok(Parameters(out))
            }
        }
        d.deserialize_map(InOrder)
    }
}

/// One cmdlet call: what a plan holds, the journal stores and a transport runs as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The cmdlet, e.g. `Set-CASMailbox`.
    pub cmdlet: String,
    pub parameters: Parameters,
}

impl Command {
    pub fn new(cmdlet: impl Into<String>, parameters: Parameters) -> Self {
        Command {
            cmdlet: cmdlet.into(),
            parameters,
        }
    }
}

/// As a PowerShell line (`Set-CASMailbox -Identity 'alice' -ActiveSyncAllowedDeviceIDs
/// @{Add='ID1'}`), for logs and previews; never parsed back.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
            write!(f, "'{}'", s.replace('\'', "''"))
        }
        fn list(f: &mut fmt::Formatter<'_>, items: &[String]) -> fmt::Result {
            if items.is_empty() {
                return f.write_str("@()");
            }
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                quoted(f, s)?;
            }
            Ok(())
        }
        f.write_str(&self.cmdlet)?;
        for (name, value) in self.parameters.iter() {
            write!(f, " -{name}")?;
            match value {
                ParamValue::Switch => {}
                ParamValue::Text(s) => {
                    f.write_str(" ")?;
                    quoted(f, s)?;
                }
                ParamValue::Texts(v) => {
                    f.write_str(" ")?;
                    list(f, v)?;
                }
                ParamValue::Int(n) => write!(f, " {n}")?,
                ParamValue::Unlimited => f.write_str(" Unlimited")?,
                ParamValue::Bool(b) => write!(f, " ${b}")?,
                ParamValue::HashEdit { add, remove } => {
                    f.write_str(" @{")?;
                    let mut parts = 0;
                    for (key, items) in [("Add", add), ("Remove", remove)] {
                        if !items.is_empty() {
                            if parts > 0 {
                                f.write_str("; ")?;
                            }
                            write!(f, "{key}=")?;
                            list(f, items)?;
                            parts += 1;
                        }
                    }
                    f.write_str("}")?;
                }
            }
        }
        Ok(())
    }
}

// The cmdlets and parameters a plan uses, by name: what the store reads back from the journal
// too (the enforced state), so they are the floor's.
/// The cmdlet that edits a mailbox's device lists.
pub const SET_CAS_MAILBOX: &str = "Set-CASMailbox";
/// The cmdlet that removes an EAS partnership.
pub const REMOVE_MOBILE_DEVICE: &str = "Remove-MobileDevice";
/// The cmdlet that sets the organization default access level.
pub const SET_ORG_SETTINGS: &str = "Set-ActiveSyncOrganizationSettings";
/// The cmdlet that creates a device access rule.
pub const NEW_ACCESS_RULE: &str = "New-ActiveSyncDeviceAccessRule";
/// The cmdlet that removes a device access rule.
pub const REMOVE_ACCESS_RULE: &str = "Remove-ActiveSyncDeviceAccessRule";
/// The parameter holding the allow list.
pub const ALLOWED_IDS: &str = "ActiveSyncAllowedDeviceIDs";
/// The parameter holding the block list.
pub const BLOCKED_IDS: &str = "ActiveSyncBlockedDeviceIDs";

/// A command of a plan, with what it is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCommand {
    /// The mailbox the command targets (its `-Identity` for `Set-CASMailbox`, the owner's for
    /// `Remove-MobileDevice`); `None` for a partnership whose mailbox is gone.
    pub mailbox: Option<String>,
    /// The devices whose state the command changes.
    pub devices: Vec<DeviceKey>,
    /// The call itself.
    pub command: Command,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_cas_mailbox() -> Command {
        Command::new(
            "Set-CASMailbox",
            Parameters::new().text("Identity", "alice").hash_edit(
                "ActiveSyncAllowedDeviceIDs",
                vec!["ID1".into()],
                vec![],
            ),
        )
    }

    #[test]
    fn stored_json_is_neutral_and_keeps_the_order() {
        let c = set_cas_mailbox();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"cmdlet":"Set-CASMailbox","parameters":{"Identity":{"text":"alice"},"ActiveSyncAllowedDeviceIDs":{"hash_edit":{"add":["ID1"],"remove":[]}}}}"#
        );
        let back: Command = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            back.parameters.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["Identity", "ActiveSyncAllowedDeviceIDs"]
        );
    }

    #[test]
    fn every_value_round_trips() {
        let p = Parameters::new()
            .text("A", "x")
            .texts("B", vec!["y".into(), "z".into()])
            .int("C", -5)
            .unlimited("D")
            .switch("E")
            .bool("F", false)
            .hash_edit("G", vec![], vec!["r".into()]);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"A":{"text":"x"},"B":{"texts":["y","z"]},"C":{"int":-5},"D":"unlimited","E":"switch","F":{"bool":false},"G":{"hash_edit":{"add":[],"remove":["r"]}}}"#
        );
        assert_eq!(serde_json::from_str::<Parameters>(&json).unwrap(), p);
    }

    #[test]
    fn a_name_given_twice_is_refused_when_read_and_replaced_when_pushed() {
        let e = serde_json::from_str::<Parameters>(r#"{"A":"switch","A":{"int":1}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter `A` given twice"), "{e}");
        let p = Parameters::new().int("A", 1).text("B", "b").int("A", 2);
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [
                ("A", &ParamValue::Int(2)),
                ("B", &ParamValue::Text("b".into()))
            ]
        );
    }

    #[test]
    fn displays_as_a_powershell_line() {
        assert_eq!(
            set_cas_mailbox().to_string(),
            "Set-CASMailbox -Identity 'alice' -ActiveSyncAllowedDeviceIDs @{Add='ID1'}"
        );
        let c = Command::new(
            "Get-MobileDevice",
            Parameters::new()
                .unlimited("ResultSize")
                .switch("ActiveSync")
                .text("Filter", "Name -eq 'o''k'")
                .bool("Confirm", false),
        );
        assert_eq!(
            c.to_string(),
            "Get-MobileDevice -ResultSize Unlimited -ActiveSync -Filter 'Name -eq ''o''''k''' -Confirm $false"
        );
    }
}
