//! Which remediation link a notice carries: the organization's per-platform link for the
//! device's platform when one is configured, else its general link.

use std::collections::BTreeMap;

use crate::plugin::types;

/// The device's platform as `remediation_urls` names it (`ios`, `android`, `windows`,
/// `macos`), if it can tell: Intune's `operatingSystem` when the device is enrolled, else
/// Exchange's `DeviceOS` and `DeviceType`.
pub fn platform(device: &types::DeviceContext) -> Option<&'static str> {
    let of = |text: &str| {
        let t = text.to_ascii_lowercase();
        if t.starts_with("ios")
            || t.starts_with("ipados")
            || t.starts_with("iphone")
            || t.starts_with("ipad")
        {
            Some("ios")
        } else if t.starts_with("android") {
            Some("android")
        } else if t.starts_with("windows") || t.starts_with("wp") {
            Some("windows")
        } else if t.starts_with("macos") || t.starts_with("mac os") || t.starts_with("os x") {
            Some("macos")
        } else {
            None
        }
    };
    device
        .managed
        .as_ref()
        .and_then(|m| of(&m.operating_system))
        .or_else(|| of(&device.eas.device_os))
        .or_else(|| of(&device.eas.device_type))
}

/// `per_platform[platform(device)]`, else `general`.
pub fn remediation_url<'a>(
    general: &'a str,
    per_platform: &'a BTreeMap<String, String>,
    device: &types::DeviceContext,
) -> &'a str {
    platform(device)
        .and_then(|p| per_platform.get(p))
        .map_or(general, String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_from_intune_then_exchange() {
        let mut d = crate::plugin::loaded::sample_notice().device;
        assert_eq!(platform(&d), Some("ios"), "DeviceOS `iOS 17.4.1`");
        d.eas.device_os = "Android 14".into();
        assert_eq!(platform(&d), Some("android"));
        d.eas.device_os = String::new();
        d.eas.device_type = "iPad".into();
        assert_eq!(platform(&d), Some("ios"));
        d.eas.device_type = "Outlook".into();
        assert_eq!(platform(&d), None);
        let mut managed = crate::plugin::loaded::sample_notice().device;
        managed.managed = Some(types::ManagedDevice {
            id: "m".into(),
            user_principal_name: "a@b.c".into(),
            device_name: "x".into(),
            operating_system: "Windows".into(),
            os_version: "10".into(),
            compliance_state: types::ComplianceState::Compliant,
            management_state: "managed".into(),
            ownership: types::Ownership::Company,
            last_sync: None,
            enrolled: None,
        });
        assert_eq!(
            platform(&managed),
            Some("windows"),
            "Intune wins over DeviceOS"
        );

        let urls = BTreeMap::from([("windows".to_owned(), "https://w.example/".to_owned())]);
        assert_eq!(
            remediation_url("https://g.example/", &urls, &managed),
            "https://w.example/"
        );
        assert_eq!(
            remediation_url("https://g.example/", &urls, &d),
            "https://g.example/"
        );
    }
}
