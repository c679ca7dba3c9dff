//! Paging returns every record exactly once, for both APIs and several page sizes.

use std::collections::HashSet;

use easgate_lab::NewDevices;
use serde_json::{Value, json};

use crate::{Client, lab};

fn ids(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|v| v[field].as_str().unwrap().to_owned())
        .collect()
}

fn assert_exactly_once(got: &[String], want: &HashSet<String>) {
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a record came twice");
    assert_eq!(got.len(), want.len(), "a record is missing or extra");
    assert!(got.iter().all(|g| want.contains(g)));
}

#[tokio::test]
async fn exchange_pages_10000_devices_exactly_once() {
    let lab = lab(10_000).await;
    let c = Client::new(&lab).await;
    let want: HashSet<String> = lab
        .control()
        .truth()
        .into_iter()
        .map(|t| t.device_id)
        .collect();
    assert_eq!(want.len(), 10_000);
    for page_size in [None, Some(1000), Some(999), Some(250), Some(37)] {
        let got = c
            .invoke_on(
                1,
                "Get-MobileDevice",
                json!({"ResultSize": "Unlimited"}),
                page_size,
            )
            .await
            .unwrap();
        assert_exactly_once(&ids(&got, "DeviceId"), &want);
    }
    // Every page request is one command.
    let calls = lab.control().counters().calls("Get-MobileDevice");
    assert_eq!(calls, 10 + 10 + 11 + 40 + 271);
}

#[tokio::test]
async fn exchange_paging_survives_changes_between_pages() {
    let lab = lab(3000).await;
    let c = Client::new(&lab).await;
    let params = json!({"ResultSize": "Unlimited"});
    let first = c
        .invoke_page(&c.invoke_url(0), "Get-MobileDevice", &params, Some(500))
        .await
        .unwrap();
    let seen: Vec<String> = ids(first["value"].as_array().unwrap(), "DeviceId");
    // Between pages: one not-yet-returned device is removed, and devices arrive.
    let truth = lab.control().truth();
    let removed = truth.last().unwrap().identity.clone();
    c.invoke("Remove-MobileDevice", json!({"Identity": removed}))
        .await
        .unwrap();
    let added = lab
        .control()
        .add_devices(&NewDevices {
            count: 5,
            ..NewDevices::default()
        })
        .unwrap();
    let mut got = seen;
    let mut url = first["@odata.nextLink"].as_str().unwrap().to_owned();
    loop {
        let page = c
            .invoke_page(&url, "Get-MobileDevice", &params, Some(500))
            .await
            .unwrap();
        got.extend(ids(page["value"].as_array().unwrap(), "DeviceId"));
        match page["@odata.nextLink"].as_str() {
            Some(n) => url = n.to_owned(),
            None => break,
        }
    }
    let want: HashSet<String> = lab
        .control()
        .truth()
        .into_iter()
        .map(|t| t.device_id)
        .collect();
    assert_exactly_once(&got, &want);
    assert!(added.iter().all(|a| got.contains(a)));
}

#[tokio::test]
async fn exchange_result_size_caps_and_warns() {
    let lab = lab(2500).await;
    let c = Client::new(&lab).await;
    // Without -ResultSize Exchange returns the first 1000 and says so.
    let mut url = c.invoke_url(0);
    let mut count = 0;
    let mut warnings = Vec::new();
    loop {
        let page = c
            .invoke_page(&url, "Get-MobileDevice", &json!({}), Some(300))
            .await
            .unwrap();
        count += page["value"].as_array().unwrap().len();
        warnings.extend(
            page["adminapi.warnings"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        match page["@odata.nextLink"].as_str() {
            Some(n) => url = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(count, 1000);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("-ResultSize Unlimited")
    );

    let some = c
        .invoke_on(
            0,
            "Get-MobileDevice",
            json!({"ResultSize": 1234}),
            Some(1000),
        )
        .await
        .unwrap();
    assert_eq!(some.len(), 1234);
}

#[tokio::test]
async fn a_next_link_only_continues_its_own_query() {
    let lab = lab(1500).await;
    let c = Client::new(&lab).await;
    let first = c
        .invoke_page(
            &c.invoke_url(0),
            "Get-MobileDevice",
            &json!({"ResultSize": "Unlimited"}),
            Some(100),
        )
        .await
        .unwrap();
    let next = first["@odata.nextLink"].as_str().unwrap();
    let e = c
        .invoke_page(
            next,
            "Get-CASMailbox",
            &json!({"ResultSize": "Unlimited"}),
            Some(100),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
    let e = c
        .invoke_page(
            &format!("{}?$skiptoken=0123", c.invoke_url(0)),
            "Get-MobileDevice",
            &json!({}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
}

#[tokio::test]
async fn graph_pages_managed_devices_exactly_once() {
    let lab = lab(10_000).await;
    let c = Client::new(&lab).await;
    let first = c
        .graph_list("deviceManagement/managedDevices?$select=id")
        .await
        .unwrap();
    let want: HashSet<String> = ids(&first, "id").into_iter().collect();
    assert_eq!(want.len(), lab.control().info().managed_devices);
    assert!(
        want.len() > 7000,
        "about 70 % of 10 000 plus laptops: {}",
        want.len()
    );
    for query in [
        "deviceManagement/managedDevices",
        "deviceManagement/managedDevices?$top=999&$select=id,easDeviceId",
        "deviceManagement/managedDevices?$select=id&$top=250",
        "deviceManagement/managedDevices?$top=37&$select=id,complianceState",
    ] {
        let got = c.graph_list(query).await.unwrap();
        assert_exactly_once(&ids(&got, "id"), &want);
    }
}

#[tokio::test]
async fn graph_pages_transitive_members_exactly_once() {
    let lab = lab(4000).await;
    let c = Client::new(&lab).await;
    let upn = c
        .invoke("Get-Mailbox", json!({"ResultSize": 1}))
        .await
        .unwrap()[0]["UserPrincipalName"]
        .as_str()
        .unwrap()
        .to_owned();
    let groups = c
        .graph_list(&format!("users/{upn}/transitiveMemberOf"))
        .await
        .unwrap();
    let all_staff = groups
        .iter()
        .find(|g| g["displayName"] == "All Staff")
        .expect("everyone is in All Staff");
    let id = all_staff["id"].as_str().unwrap();
    let mailboxes = lab.control().info().mailboxes;
    for top in [
        "",
        "?$top=999",
        "?$top=100&$select=id,userPrincipalName",
        "?$top=7",
    ] {
        let members = c
            .graph_list(&format!("groups/{id}/transitiveMembers{top}"))
            .await
            .unwrap();
        let users: Vec<String> = members
            .iter()
            .filter(|m| m["@odata.type"] == "#microsoft.graph.user")
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        let unique: HashSet<&String> = users.iter().collect();
        assert_eq!(unique.len(), users.len());
        assert_eq!(users.len(), mailboxes);
        assert!(
            members
                .iter()
                .any(|m| m["@odata.type"] == "#microsoft.graph.group")
        );
    }
}
