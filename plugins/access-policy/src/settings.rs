//! Parses the settings JSON into a [`Policy`], with errors that name the offending key.
//!
//! The keys mirror Intune's on-premises access settings (`includedGroups`, `excludedGroups`,
//! `accessRules`) plus `notify`. Parsing is done by hand over a `serde_json::Value` rather than
//! with derived deserializers so that every error carries the full path of the key
//! (`accessRules[2].accessLevel: …`), which is what an operator needs to fix a manifest.

use serde_json::{Map, Value};

use crate::easgate::policy::types::Verdict;
use crate::policy::{NameMap, Policy};
use crate::stale::StaleRule;

pub fn parse(settings: &str) -> Result<Policy, String> {
    let value: Value =
        serde_json::from_str(settings).map_err(|err| format!("settings: not valid JSON: {err}"))?;
    let mut policy = Policy::default();
    for (key, value) in object(&value, "settings")? {
        match key.as_str() {
            "includedGroups" => policy.included_groups = groups(value, key)?,
            "excludedGroups" => policy.excluded_groups = groups(value, key)?,
            "accessRules" => (policy.model_rules, policy.family_rules) = rules(value)?,
            "blockStaleAfterDays" => policy.stale = Some(stale_days(value, key)?),
            "notify" => {
                policy.notify = value
                    .as_bool()
                    .ok_or_else(|| expected(key, "true or false", value))?;
            }
            _ => {
                return Err(format!(
                    "{key}: unknown setting; the settings are includedGroups, excludedGroups, \
                     accessRules, blockStaleAfterDays and notify"
                ));
            }
        }
    }
    Ok(policy)
}

/// A whole number of days, at least 1: 0 would block every device the moment it syncs
/// (Exchange's `LastSuccessSync` is always in the past).
fn stale_days(value: &Value, path: &str) -> Result<StaleRule, String> {
    match value.as_u64() {
        Some(days @ 1..=36_500) => Ok(StaleRule {
            after_days: days as u32,
        }),
        _ => Err(expected(
            path,
            "a whole number of days from 1 to 36500",
            value,
        )),
    }
}

fn groups(value: &Value, path: &str) -> Result<NameMap<()>, String> {
    let mut groups = NameMap::default();
    for (i, id) in array(value, path)?.iter().enumerate() {
        let path = format!("{path}[{i}]");
        // A duplicate group is harmless, unlike a duplicate rule.
        let _ = groups.insert(name(id, &path)?, ());
    }
    Ok(groups)
}

fn rules(value: &Value) -> Result<(NameMap<Verdict>, NameMap<Verdict>), String> {
    let mut models = NameMap::default();
    let mut families = NameMap::default();
    for (i, rule) in array(value, "accessRules")?.iter().enumerate() {
        let path = format!("accessRules[{i}]");
        let mut class = None;
        let mut level = None;
        for (key, value) in object(rule, &path)? {
            let path = format!("{path}.{key}");
            match key.as_str() {
                "deviceClass" => class = Some(device_class(value, &path)?),
                "accessLevel" => level = Some(access_level(value, &path)?),
                _ => {
                    return Err(format!(
                        "{path}: unknown key; a rule has deviceClass and accessLevel"
                    ));
                }
            }
        }
        let (Some((class_name, is_model)), Some(level)) = (class, level) else {
            return Err(format!(
                "{path}: a rule needs both deviceClass and accessLevel"
            ));
        };
        let (map, kind) = if is_model {
            (&mut models, "model")
        } else {
            (&mut families, "family")
        };
        // Two rules for one device class would make the verdict depend on their order.
        if map.insert(class_name, level).is_err() {
            return Err(format!(
                "{path}: a second rule for the {kind} \"{class_name}\""
            ));
        }
    }
    Ok((models, families))
}

/// `{"name": …, "type": "model" | "family"}`; gives the name and whether it is a model.
fn device_class<'a>(value: &'a Value, path: &str) -> Result<(&'a str, bool), String> {
    let mut class_name = None;
    let mut is_model = None;
    for (key, value) in object(value, path)? {
        let path = format!("{path}.{key}");
        match key.as_str() {
            "name" => class_name = Some(name(value, &path)?),
            "type" => {
                is_model = Some(match value.as_str() {
                    Some("model") => true,
                    Some("family") => false,
                    _ => return Err(expected(&path, "model or family", value)),
                })
            }
            _ => {
                return Err(format!(
                    "{path}: unknown key; a deviceClass has name and type"
                ));
            }
        }
    }
    match (class_name, is_model) {
        (Some(name), Some(is_model)) => Ok((name, is_model)),
        _ => Err(format!("{path}: a deviceClass needs both name and type")),
    }
}

fn access_level(value: &Value, path: &str) -> Result<Verdict, String> {
    match value.as_str() {
        Some("allow") => Ok(Verdict::Allow),
        Some("block") => Ok(Verdict::Block),
        Some("quarantine") => Ok(Verdict::Quarantine),
        _ => Err(expected(path, "allow, block or quarantine", value)),
    }
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| expected(path, "an object", value))
}

fn array<'a>(value: &'a Value, path: &str) -> Result<&'a Vec<Value>, String> {
    value
        .as_array()
        .ok_or_else(|| expected(path, "an array", value))
}

/// A non-empty string: an empty name would match every device that Exchange left blank.
fn name<'a>(value: &'a Value, path: &str) -> Result<&'a str, String> {
    match value.as_str() {
        Some(name) if !name.trim().is_empty() => Ok(name),
        _ => Err(expected(path, "a non-empty string", value)),
    }
}

fn expected(path: &str, what: &str, got: &Value) -> String {
    const SHOWN: usize = 60;
    let mut got = got.to_string();
    if got.len() > SHOWN {
        let cut = (0..=SHOWN)
            .rev()
            .find(|&i| got.is_char_boundary(i))
            .unwrap_or(0);
        got.truncate(cut);
        got.push('…');
    }
    format!("{path}: expected {what}, got {got}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_setting() {
        let policy = parse(
            r#"{
                "includedGroups": ["G1", "g2"],
                "excludedGroups": ["g3"],
                "accessRules": [
                    {"deviceClass": {"name": "iPhone15,2", "type": "model"}, "accessLevel": "block"},
                    {"deviceClass": {"name": "Android", "type": "family"}, "accessLevel": "quarantine"}
                ],
                "blockStaleAfterDays": 90,
                "notify": false
            }"#,
        )
        .unwrap();
        assert_eq!(policy.stale, Some(StaleRule { after_days: 90 }));
        assert!(policy.included_groups.contains("g1") && policy.included_groups.contains("G2"));
        assert!(policy.excluded_groups.contains("G3"));
        assert_eq!(policy.model_rules.get("IPHONE15,2"), Some(&Verdict::Block));
        assert_eq!(
            policy.family_rules.get("android"),
            Some(&Verdict::Quarantine)
        );
        assert!(!policy.notify);
    }

    #[test]
    fn empty_settings_are_the_default() {
        let policy = parse("{}").unwrap();
        assert!(policy.included_groups.is_empty() && policy.notify);
        assert_eq!(policy.stale, None);
    }

    #[test]
    fn errors_name_the_key() {
        let rule = |name: &str, level: &str| {
            format!(
                r#"{{"deviceClass": {{"name": "{name}", "type": "model"}}, "accessLevel": "{level}"}}"#
            )
        };
        let rules = |rules: &[String]| format!(r#"{{"accessRules": [{}]}}"#, rules.join(","));
        let cases = [
            ("[]".into(), "settings: expected an object, got []"),
            ("{".into(), "settings: not valid JSON"),
            (
                r#"{"includedgroups": []}"#.into(),
                "includedgroups: unknown setting",
            ),
            (
                r#"{"includedGroups": "g1"}"#.into(),
                r#"includedGroups: expected an array, got "g1""#,
            ),
            (
                r#"{"excludedGroups": ["g1", 7]}"#.into(),
                "excludedGroups[1]: expected a non-empty string, got 7",
            ),
            (
                r#"{"blockStaleAfterDays": 0}"#.into(),
                "blockStaleAfterDays: expected a whole number of days from 1 to 36500, got 0",
            ),
            (
                r#"{"blockStaleAfterDays": 30.5}"#.into(),
                "blockStaleAfterDays: expected a whole number of days from 1 to 36500, got 30.5",
            ),
            (
                r#"{"blockStaleAfterDays": "90"}"#.into(),
                r#"blockStaleAfterDays: expected a whole number of days from 1 to 36500, got "90""#,
            ),
            (
                r#"{"notify": "yes"}"#.into(),
                r#"notify: expected true or false, got "yes""#,
            ),
            (
                rules(&[rule("a", "allow"), rule("b", "block"), rule("c", "deny")]),
                r#"accessRules[2].accessLevel: expected allow, block or quarantine, got "deny""#,
            ),
            (
                rules(&[rule("a", "allow"), rule("A", "block")]),
                r#"accessRules[1]: a second rule for the model "A""#,
            ),
            (
                rules(&[rule("", "allow")]),
                r#"accessRules[0].deviceClass.name: expected a non-empty string, got """#,
            ),
            (
                rules(&[rule("a", "allow").replace("model", "os")]),
                r#"accessRules[0].deviceClass.type: expected model or family, got "os""#,
            ),
            (
                r#"{"accessRules": [{"deviceClass": {"name": "x", "type": "model"}}]}"#.into(),
                "accessRules[0]: a rule needs both deviceClass and accessLevel",
            ),
            (
                r#"{"accessRules": [{"accessLevel": "allow", "level": 1}]}"#.into(),
                "accessRules[0].level: unknown key",
            ),
        ];
        for (settings, want) in cases {
            let settings: String = settings;
            let err = parse(&settings).unwrap_err();
            assert!(
                err.starts_with(want),
                "{settings}: got {err:?}, want {want:?}"
            );
        }
    }
}
