//! Schema fidelity: the JSON of every mobile device and managed device carries the real field
//! names and enum spellings, as listed in `tests/fixtures/api_shapes.json` (DESIGN.md's lists
//! and Graph's documented v1.0 properties).

use std::collections::HashSet;

use easgate_lab::Utc;
use serde_json::{Value, json};

use crate::{Client, lab};

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/api_shapes.json")).unwrap()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// Checks every object against one fixture section; returns the enum values seen per field.
fn check(objects: &[Value], spec: &Value, name: &str) -> Vec<(String, HashSet<String>)> {
    let required = strings(&spec["required"]);
    let timestamps = strings(&spec["timestamps"]);
    let enums = spec["enums"].as_object().unwrap();
    let mut seen: Vec<(String, HashSet<String>)> =
        enums.keys().map(|k| (k.clone(), HashSet::new())).collect();
    for o in objects {
        let fields = o.as_object().unwrap();
        for f in &required {
            assert!(fields.contains_key(*f), "{name} lacks {f}: {o}");
        }
        for f in &timestamps {
            let t = fields[*f].as_str().unwrap();
            assert!(Utc::parse_iso(t).is_some(), "{name}.{f} = {t}");
        }
        for (i, (field, allowed)) in enums.iter().enumerate() {
            let v = fields[field].as_str().unwrap();
            assert!(strings(allowed).contains(&v), "{name}.{field} = {v}");
            seen[i].1.insert(v.to_owned());
        }
        if let Some(documented) = spec.get("documented") {
            let documented = strings(documented);
            for k in fields.keys() {
                assert!(
                    documented.contains(&k.as_str()),
                    "{name} has undocumented {k}"
                );
            }
        }
    }
    seen
}

#[tokio::test]
async fn mobile_devices_and_managed_devices_use_the_real_names() {
    let lab = lab(4000).await;
    let c = Client::new(&lab).await;
    let spec = fixture();

    let devices = c
        .invoke("Get-MobileDevice", json!({"ResultSize": "Unlimited"}))
        .await
        .unwrap();
    let seen = check(&devices, &spec["mobileDevice"], "mobileDevice");
    let states = &seen
        .iter()
        .find(|(f, _)| f == "DeviceAccessState")
        .unwrap()
        .1;
    for s in ["Allowed", "Blocked", "Quarantined", "DeviceDiscovery"] {
        assert!(states.contains(s), "no {s} device");
    }
    for d in &devices {
        let identity = d["Identity"].as_str().unwrap();
        let (mailbox, rest) = identity
            .split_once("\\ExchangeActiveSyncDevices\\")
            .unwrap();
        assert!(!mailbox.is_empty());
        assert_eq!(
            rest,
            format!(
                "{}\u{a7}{}",
                d["DeviceType"].as_str().unwrap(),
                d["DeviceId"].as_str().unwrap()
            )
        );
    }

    let managed = c
        .graph_list("deviceManagement/managedDevices")
        .await
        .unwrap();
    let seen = check(&managed, &spec["managedDevice"], "managedDevice");
    let compliance = &seen.iter().find(|(f, _)| f == "complianceState").unwrap().1;
    assert_eq!(
        compliance.len(),
        7,
        "every complianceState occurs: {compliance:?}"
    );
    for m in &managed {
        let eas = m["easDeviceId"].as_str().unwrap();
        assert_eq!(m["easActivated"], !eas.is_empty());
        assert!(
            m["id"].as_str().unwrap().len() == 36
                && m["azureADDeviceId"].as_str().unwrap().len() == 36
        );
    }
    // Some devices carry a different case on each side; matching must ignore case.
    let exchange_ids: HashSet<&str> = devices
        .iter()
        .map(|d| d["DeviceId"].as_str().unwrap())
        .collect();
    let lower: HashSet<String> = exchange_ids.iter().map(|i| i.to_lowercase()).collect();
    let graph_ids: Vec<&str> = managed
        .iter()
        .map(|m| m["easDeviceId"].as_str().unwrap())
        .filter(|i| !i.is_empty())
        .collect();
    assert!(
        graph_ids
            .iter()
            .any(|g| !exchange_ids.contains(g) && lower.contains(&g.to_lowercase()))
    );
    // And some Intune records have no partnership (left over or never EAS).
    assert!(graph_ids.iter().any(|g| !lower.contains(&g.to_lowercase())));
}

#[tokio::test]
async fn collections_carry_odata_context() {
    let lab = lab(50).await;
    let c = Client::new(&lab).await;
    let page = c
        .invoke_page(
            &c.invoke_url(0),
            "Get-MobileDevice",
            &json!({"ResultSize": "Unlimited"}),
            Some(10),
        )
        .await
        .unwrap();
    assert!(
        page["@odata.context"]
            .as_str()
            .unwrap()
            .contains("/adminapi/beta/")
    );
    assert!(page["adminapi.warnings"].is_array());
    assert!(
        page["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("/InvokeCommand?$skiptoken=")
    );
    let g = c
        .graph_get(&format!(
            "{}/v1.0/deviceManagement/managedDevices?$top=5&$select=id,easDeviceId",
            c.graph
        ))
        .await
        .unwrap();
    assert!(
        g["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#deviceManagement/managedDevices(id,easDeviceId)")
    );
    let next = g["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with(&format!(
        "{}/v1.0/deviceManagement/managedDevices?",
        c.graph
    )));
    assert!(next.contains("$skiptoken="));
}
