//! `byod-strict`: an example third-party access policy for easgate, stricter than the built-in.
//!
//! * Devices of a family listed in `exemptFamilies` (e.g. `Outlook`, whose mail is protected
//!   by app protection policies instead) are exempt: `app-protected`.
//! * Devices that are not enrolled are blocked, not quarantined: `not-enrolled`.
//! * Company-owned devices are allowed while compliant or in their grace period (`compliant`),
//!   else blocked (`noncompliant`).
//! * Personal (and unknown-ownership) devices get no grace period: they are allowed only when
//!   compliant (`noncompliant` otherwise) and running at least the `minOsVersion` of their
//!   platform (`os-too-old` otherwise; an OS version that cannot be read counts as too old).
//!
//! Every block asks for a notice. Settings, both optional:
//! `{"minOsVersion": {"iOS": "17.0", "Android": "13"}, "exemptFamilies": ["Outlook"]}`.
//! Platform and family names compare ASCII-case-insensitively.

use std::cmp::Ordering;
use std::sync::{Mutex, PoisonError};

use easgate::policy::types::{ComplianceState, ManagedDevice, Ownership, Verdict};
use serde_json::Value;

wit_bindgen::generate!({ path: "../../../wit", world: "access-policy" });

#[derive(Debug, Default)]
struct Config {
    /// Platform (`operatingSystem`) and its minimum version, as numeric components.
    min_os_version: Vec<(String, Vec<u32>)>,
    exempt_families: Vec<String>,
}

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

struct ByodStrict;

impl Guest for ByodStrict {
    fn configure(settings: String) -> Result<(), String> {
        let config = parse(&settings)?;
        *CONFIG.lock().unwrap_or_else(PoisonError::into_inner) = Some(config);
        Ok(())
    }

    fn decide(_info: SyncInfo, devices: Vec<DeviceContext>) -> Vec<Decision> {
        let config = CONFIG.lock().unwrap_or_else(PoisonError::into_inner);
        let config = config
            .as_ref()
            .expect("the host calls configure before decide");
        devices.iter().map(|device| config.decide(device)).collect()
    }
}

export!(ByodStrict);

impl Config {
    fn decide(&self, device: &DeviceContext) -> Decision {
        let family = &device.eas.device_type;
        if self
            .exempt_families
            .iter()
            .any(|exempt| exempt.eq_ignore_ascii_case(family))
        {
            return decision(Verdict::Exempt, "app-protected");
        }
        let Some(managed) = &device.managed else {
            return decision(Verdict::Block, "not-enrolled");
        };
        let compliant = match (managed.ownership, managed.compliance_state) {
            (_, ComplianceState::Compliant) => true,
            // Only the company's own devices get the grace period to fix a problem.
            (Ownership::Company, ComplianceState::InGracePeriod) => true,
            _ => false,
        };
        if !compliant {
            return decision(Verdict::Block, "noncompliant");
        }
        if managed.ownership != Ownership::Company && !self.os_recent_enough(managed) {
            return decision(Verdict::Block, "os-too-old");
        }
        decision(Verdict::Allow, "compliant")
    }

    fn os_recent_enough(&self, managed: &ManagedDevice) -> bool {
        let platform = &managed.operating_system;
        match self
            .min_os_version
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(platform))
        {
            Some((_, min)) => at_least(&managed.os_version, min),
            None => true,
        }
    }
}

fn decision(verdict: Verdict, reason: &str) -> Decision {
    Decision {
        verdict,
        reason: reason.to_owned(),
        // Nothing to tell the user when access is allowed or not this policy's business.
        notify: verdict == Verdict::Block,
    }
}

/// Whether `version` (e.g. `17.4.1`) is at least `min`, comparing numeric components with
/// missing ones as zero (`17` = `17.0`). Reading stops at the first component that does not
/// start with a digit (`14.2 beta` reads as `14.2`); a version with no number at all is not
/// recent enough, since nothing shows that it is.
fn at_least(version: &str, min: &[u32]) -> bool {
    let mut parts = version
        .trim()
        .split('.')
        .map(leading_number)
        .take_while(Option::is_some)
        .flatten()
        .peekable();
    if parts.peek().is_none() {
        return false;
    }
    let mut min = min.iter().copied();
    loop {
        match (parts.next(), min.next()) {
            (None, None) => return true,
            (have, want) => match have.unwrap_or(0).cmp(&want.unwrap_or(0)) {
                Ordering::Greater => return true,
                Ordering::Less => return false,
                Ordering::Equal => {}
            },
        }
    }
}

fn leading_number(part: &str) -> Option<u32> {
    let digits = part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    part[..digits].parse().ok()
}

fn parse(settings: &str) -> Result<Config, String> {
    let value: Value =
        serde_json::from_str(settings).map_err(|err| format!("settings: not valid JSON: {err}"))?;
    let Value::Object(settings) = value else {
        return Err("settings: expected an object".into());
    };
    let mut config = Config::default();
    for (key, value) in &settings {
        match key.as_str() {
            "minOsVersion" => {
                let Value::Object(platforms) = value else {
                    return Err(r#"minOsVersion: expected an object like {"iOS": "17.0"}"#.into());
                };
                for (platform, min) in platforms {
                    let parsed = min.as_str().and_then(|min| {
                        min.split('.')
                            .map(|part| part.parse::<u32>().ok())
                            .collect::<Option<Vec<u32>>>()
                    });
                    let Some(parsed) = parsed else {
                        return Err(format!(
                            "minOsVersion.{platform}: expected a version like \"17.0\", got {min}"
                        ));
                    };
                    config.min_os_version.push((platform.clone(), parsed));
                }
            }
            "exemptFamilies" => {
                let families = value.as_array().and_then(|families| {
                    families
                        .iter()
                        .map(|family| family.as_str().filter(|f| !f.is_empty()))
                        .collect::<Option<Vec<&str>>>()
                });
                let Some(families) = families else {
                    return Err(
                        r#"exemptFamilies: expected device families like ["Outlook"]"#.into(),
                    );
                };
                config.exempt_families = families.into_iter().map(str::to_owned).collect();
            }
            _ => {
                return Err(format!(
                    "{key}: unknown setting; the settings are minOsVersion and exemptFamilies"
                ));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use easgate::policy::types::{AccessState, EasDevice};

    fn config() -> Config {
        parse(
            r#"{"minOsVersion": {"iOS": "17.0", "Android": "13"}, "exemptFamilies": ["Outlook"]}"#,
        )
        .unwrap()
    }

    fn device(
        family: &str,
        managed: Option<(Ownership, ComplianceState, &str, &str)>,
    ) -> DeviceContext {
        DeviceContext {
            eas: EasDevice {
                device_id: "D1".into(),
                identity: String::new(),
                mailbox: "bob@contoso.com".into(),
                device_type: family.into(),
                device_model: String::new(),
                device_os: String::new(),
                user_agent: String::new(),
                first_sync: None,
                last_success_sync: None,
                access_state: AccessState::Unknown,
                access_state_reason: String::new(),
            },
            managed: managed.map(|(ownership, compliance_state, os, version)| ManagedDevice {
                id: "m1".into(),
                user_principal_name: "bob@contoso.com".into(),
                device_name: String::new(),
                operating_system: os.into(),
                os_version: version.into(),
                compliance_state,
                management_state: "managed".into(),
                ownership,
                last_sync: None,
                enrolled: None,
            }),
            user: None,
        }
    }

    #[test]
    fn decisions() {
        use ComplianceState as C;
        use Ownership as O;
        let cases = [
            (device("outlook", None), Verdict::Exempt, "app-protected"),
            (device("iPhone", None), Verdict::Block, "not-enrolled"),
            (
                device(
                    "iPhone",
                    Some((O::Company, C::InGracePeriod, "iOS", "15.0")),
                ),
                Verdict::Allow,
                "compliant",
            ),
            (
                device("iPhone", Some((O::Company, C::Noncompliant, "iOS", "17.4"))),
                Verdict::Block,
                "noncompliant",
            ),
            (
                device(
                    "iPhone",
                    Some((O::Personal, C::InGracePeriod, "iOS", "17.4")),
                ),
                Verdict::Block,
                "noncompliant",
            ),
            (
                device("iPhone", Some((O::Personal, C::Compliant, "IOS", "16.7.2"))),
                Verdict::Block,
                "os-too-old",
            ),
            (
                device("iPhone", Some((O::Personal, C::Compliant, "iOS", "17"))),
                Verdict::Allow,
                "compliant",
            ),
            (
                device("Android", Some((O::Unknown, C::Compliant, "Android", "12"))),
                Verdict::Block,
                "os-too-old",
            ),
            (
                device("Android", Some((O::Personal, C::Compliant, "Android", ""))),
                Verdict::Block,
                "os-too-old",
            ),
            (
                device(
                    "Windows",
                    Some((O::Personal, C::Compliant, "Windows", "10.0")),
                ),
                Verdict::Allow,
                "compliant",
            ),
        ];
        let config = config();
        for (i, (device, verdict, reason)) in cases.into_iter().enumerate() {
            let got = config.decide(&device);
            assert_eq!(
                (got.verdict, got.reason.as_str()),
                (verdict, reason),
                "case {i}"
            );
            assert_eq!(got.notify, verdict == Verdict::Block, "case {i}");
        }
    }

    #[test]
    fn versions() {
        assert!(at_least("17.4.1", &[17, 0]));
        assert!(at_least("17", &[17, 0]));
        assert!(at_least("14.2 beta", &[14, 2]));
        assert!(at_least("10.0.22631.3007", &[10, 0, 22000]));
        assert!(!at_least("16.7.10", &[17]));
        assert!(!at_least("17.0", &[17, 0, 1]));
        assert!(!at_least("unknown", &[1]));
    }

    #[test]
    fn settings_errors_name_the_key() {
        for (settings, want) in [
            (
                r#"{"minOsVersion": {"iOS": "17.x"}}"#,
                "minOsVersion.iOS: expected a version",
            ),
            (
                r#"{"minOsVersion": {"iOS": 17}}"#,
                "minOsVersion.iOS: expected a version",
            ),
            (
                r#"{"exemptFamilies": "Outlook"}"#,
                "exemptFamilies: expected device families",
            ),
            (r#"{"exempt": []}"#, "exempt: unknown setting"),
        ] {
            let err = parse(settings).unwrap_err();
            assert!(err.starts_with(want), "{settings}: {err}");
        }
    }
}
