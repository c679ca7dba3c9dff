//! The Exchange admin API: access-state precedence row by row, Set-CASMailbox semantics,
//! filters, errors and authentication.

use easgate_lab::{DeviceTruth, NewDevices};
use serde_json::{Value, json};

use crate::{Client, exchange_detail, lab};

/// A device on a mailbox, in no list and matched by no rule.
fn plain_device(truth: &[DeviceTruth]) -> DeviceTruth {
    truth
        .iter()
        .find(|t| {
            t.mailbox.is_some()
                && !t.in_allow_list
                && !t.in_block_list
                && t.access_rule.is_none()
                && t.access_state != easgate_lab::AccessState::DeviceDiscovery
                && t.device_type == "iPhone"
        })
        .expect("the dataset has plain iPhones")
        .clone()
}

async fn state(c: &Client, device_id: &str) -> (String, String, Value) {
    let d = c
        .invoke("Get-MobileDevice", json!({"Identity": device_id}))
        .await
        .unwrap();
    assert_eq!(d.len(), 1);
    let d = &d[0];
    (
        d["DeviceAccessState"].as_str().unwrap().to_owned(),
        d["DeviceAccessStateReason"].as_str().unwrap().to_owned(),
        d["DeviceAccessControlRule"].clone(),
    )
}

fn table(add: &[&str], remove: &[&str]) -> Value {
    json!({"@odata.type": "#Exchange.GenericHashTable", "Add": add, "Remove": remove})
}

#[tokio::test]
async fn access_state_precedence_row_by_row() {
    let lab = lab(800).await;
    let c = Client::new(&lab).await;
    let dev = plain_device(&lab.control().truth());
    let id = dev.device_id.as_str();
    let mailbox = dev.mailbox.clone().unwrap();
    let set = |params: Value| {
        let c = &c;
        async move { c.invoke("Set-CASMailbox", params).await.unwrap() }
    };
    let rule = format!("{} (DeviceModel)", dev.device_model);

    // (step, expected state, reason, rule)
    c.invoke(
        "Set-ActiveSyncOrganizationSettings",
        json!({"DefaultAccessLevel": "Quarantine"}),
    )
    .await
    .unwrap();
    assert_eq!(
        state(&c, id).await,
        ("Quarantined".into(), "Global".into(), Value::Null),
        "org default"
    );

    c.invoke(
        "New-ActiveSyncDeviceAccessRule",
        json!({"QueryString": dev.device_model, "Characteristic": "DeviceModel", "AccessLevel": "Block"}),
    )
    .await
    .unwrap();
    assert_eq!(
        state(&c, id).await,
        ("Blocked".into(), "DeviceRule".into(), json!(rule)),
        "rule beats default"
    );

    set(json!({"Identity": mailbox, "ActiveSyncAllowedDeviceIDs": table(&[id], &[])})).await;
    assert_eq!(
        state(&c, id).await,
        ("Allowed".into(), "Individual".into(), Value::Null),
        "allow list beats rule"
    );

    set(json!({"Identity": mailbox, "ActiveSyncBlockedDeviceIDs": table(&[&id.to_lowercase()], &[])})).await;
    assert_eq!(
        state(&c, id).await,
        ("Blocked".into(), "Individual".into(), Value::Null),
        "block list beats allow list, ignoring case"
    );

    set(json!({"Identity": mailbox, "ActiveSyncBlockedDeviceIDs": Value::Null, "ActiveSyncAllowedDeviceIDs": table(&[], &[id])})).await;
    assert_eq!(
        state(&c, id).await,
        ("Blocked".into(), "DeviceRule".into(), json!(rule)),
        "lists cleared: rule again"
    );

    c.invoke(
        "Set-ActiveSyncDeviceAccessRule",
        json!({"Identity": rule, "AccessLevel": "Allow"}),
    )
    .await
    .unwrap();
    assert_eq!(
        state(&c, id).await,
        ("Allowed".into(), "DeviceRule".into(), json!(rule)),
        "rule level changed"
    );

    c.invoke(
        "Remove-ActiveSyncDeviceAccessRule",
        json!({"Identity": rule}),
    )
    .await
    .unwrap();
    assert_eq!(
        state(&c, id).await,
        ("Quarantined".into(), "Global".into(), Value::Null),
        "rule removed: default"
    );

    c.invoke(
        "Set-ActiveSyncOrganizationSettings",
        json!({"DefaultAccessLevel": "Allow"}),
    )
    .await
    .unwrap();
    assert_eq!(
        state(&c, id).await,
        ("Allowed".into(), "Global".into(), Value::Null),
        "default Allow"
    );

    // The ground truth agrees with what Exchange answers, for every device.
    let truth = lab.control().truth();
    let listed = c
        .invoke("Get-MobileDevice", json!({"ResultSize": "Unlimited"}))
        .await
        .unwrap();
    assert_eq!(listed.len(), truth.len());
    for (t, d) in truth.iter().zip(&listed) {
        assert_eq!(d["DeviceId"], t.device_id);
        assert_eq!(d["DeviceAccessState"], t.access_state.as_str());
        assert_eq!(d["DeviceAccessStateReason"], t.access_state_reason.as_str());
    }
}

async fn lists(c: &Client, mailbox: &str) -> (Vec<String>, Vec<String>) {
    let m = c
        .invoke("Get-CASMailbox", json!({"Identity": mailbox}))
        .await
        .unwrap();
    let l = |k: &str| -> Vec<String> {
        m[0][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    (
        l("ActiveSyncAllowedDeviceIDs"),
        l("ActiveSyncBlockedDeviceIDs"),
    )
}

#[tokio::test]
async fn set_cas_mailbox_replace_clear_add_remove() {
    let lab = lab(300).await;
    let c = Client::new(&lab).await;
    let mailbox = plain_device(&lab.control().truth()).mailbox.unwrap();
    let set = |params: Value| {
        let c = &c;
        let mailbox = mailbox.clone();
        async move {
            let mut p = params;
            p["Identity"] = json!(mailbox);
            c.invoke("Set-CASMailbox", p).await
        }
    };
    set(json!({"ActiveSyncAllowedDeviceIDs": ["A1", "A2"], "ActiveSyncBlockedDeviceIDs": "B1"}))
        .await
        .unwrap();
    assert_eq!(
        lists(&c, &mailbox).await,
        (vec!["A1".into(), "A2".into()], vec!["B1".into()])
    );

    set(json!({"ActiveSyncAllowedDeviceIDs": table(&["A3"], &["a1"])}))
        .await
        .unwrap();
    assert_eq!(lists(&c, &mailbox).await.0, ["A2", "A3"]);

    // Adding what is there fails the whole command; nothing changes.
    let e = set(json!({
        "ActiveSyncAllowedDeviceIDs": table(&["A4"], &[]),
        "ActiveSyncBlockedDeviceIDs": table(&["b1"], &[]),
    }))
    .await
    .unwrap_err();
    assert_eq!(e.status, 400);
    assert!(
        exchange_detail(&e).contains("already present"),
        "{:?}",
        e.body
    );
    assert_eq!(
        lists(&c, &mailbox).await,
        (vec!["A2".into(), "A3".into()], vec!["B1".into()])
    );

    // Removing what is absent is fine.
    set(json!({"ActiveSyncBlockedDeviceIDs": table(&[], &["nope"])}))
        .await
        .unwrap();
    set(json!({"ActiveSyncAllowedDeviceIDs": null, "ActiveSyncBlockedDeviceIDs": []}))
        .await
        .unwrap();
    assert_eq!(lists(&c, &mailbox).await, (vec![], vec![]));

    // A hashtable without its OData type is not a hashtable.
    let e = set(json!({"ActiveSyncAllowedDeviceIDs": {"Add": ["X"]}}))
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
}

#[tokio::test]
async fn filters_select_what_they_say() {
    let lab = lab(2000).await;
    let c = Client::new(&lab).await;
    let truth = lab.control().truth();
    let all = json!({"ResultSize": "Unlimited"});

    let quarantined = c
        .invoke(
            "Get-MobileDevice",
            json!({"ResultSize": "Unlimited", "Filter": "DeviceAccessState -eq 'Quarantined'"}),
        )
        .await
        .unwrap();
    let want = truth
        .iter()
        .filter(|t| t.access_state == easgate_lab::AccessState::Quarantined)
        .count();
    assert!(want > 0);
    assert_eq!(quarantined.len(), want);

    let by_rule = c
        .invoke("Get-MobileDevice", json!({"ResultSize": "Unlimited", "Filter": "DeviceAccessStateReason -eq 'DeviceRule' -and DeviceType -eq 'WP8'"}))
        .await
        .unwrap();
    assert!(!by_rule.is_empty());
    assert!(by_rule.iter().all(|d| d["DeviceAccessState"] == "Blocked"));

    let one = &truth[17];
    let by_id = c
        .invoke(
            "Get-MobileDevice",
            json!({"Filter": format!("DeviceId -eq '{}'", one.device_id.to_lowercase())}),
        )
        .await
        .unwrap();
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0]["DeviceId"], one.device_id);

    // New devices are found by FirstSyncTime after a cursor (dataset times are before 2025-01-15).
    let added = lab
        .control()
        .add_devices(&NewDevices {
            count: 3,
            ..NewDevices::default()
        })
        .unwrap();
    let fresh = c
        .invoke("Get-MobileDevice", json!({"ResultSize": "Unlimited", "Filter": "FirstSyncTime -gt '1/15/2025 12:00:00 AM'"}))
        .await
        .unwrap();
    let mut fresh: Vec<&str> = fresh
        .iter()
        .map(|d| d["DeviceId"].as_str().unwrap())
        .collect();
    fresh.sort();
    let mut added_ids: Vec<&str> = added.iter().map(String::as_str).collect();
    added_ids.sort();
    assert_eq!(fresh, added_ids);

    // -Mailbox lists that mailbox's devices.
    let mailbox = one
        .mailbox
        .clone()
        .unwrap_or_else(|| truth.iter().find_map(|t| t.mailbox.clone()).unwrap());
    let of_mailbox = c
        .invoke("Get-MobileDevice", json!({"Mailbox": mailbox}))
        .await
        .unwrap();
    let want = lab
        .control()
        .truth()
        .iter()
        .filter(|t| t.mailbox.as_deref() == Some(&mailbox))
        .count();
    assert_eq!(of_mailbox.len(), want);
    let stats = c
        .invoke("Get-MobileDeviceStatistics", json!({"Mailbox": mailbox}))
        .await
        .unwrap();
    assert_eq!(stats.len(), want);
    assert!(
        stats
            .iter()
            .all(|s| s["DeviceID"].is_string() && s["LastSuccessSync"].is_string())
    );

    let with_partnership = c
        .invoke("Get-CASMailbox", json!({"ResultSize": "Unlimited", "Filter": "HasActiveSyncDevicePartnership -eq $true"}))
        .await
        .unwrap();
    let all_mailboxes = c.invoke("Get-CASMailbox", all).await.unwrap();
    assert!(with_partnership.len() < all_mailboxes.len());
    assert!(
        with_partnership
            .iter()
            .all(|m| m["HasActiveSyncDevicePartnership"] == true)
    );
}

#[tokio::test]
async fn mailboxes_carry_upn_and_primary_smtp() {
    let lab = lab(2000).await;
    let c = Client::new(&lab).await;
    let boxes = c
        .invoke("Get-Mailbox", json!({"ResultSize": "Unlimited"}))
        .await
        .unwrap();
    assert_eq!(boxes.len(), 1000);
    let differ: Vec<&Value> = boxes
        .iter()
        .filter(|m| m["UserPrincipalName"] != m["PrimarySmtpAddress"])
        .collect();
    assert!(
        !differ.is_empty(),
        "some users sign in with a UPN that is not their address"
    );
    // Both names find the same mailbox.
    let m = differ[0];
    for identity in [
        &m["UserPrincipalName"],
        &m["PrimarySmtpAddress"],
        &m["Alias"],
        &m["ExternalDirectoryObjectId"],
    ] {
        let found = c
            .invoke("Get-Mailbox", json!({"Identity": identity}))
            .await
            .unwrap();
        assert_eq!(found[0]["Guid"], m["Guid"]);
    }
    let filtered = c
        .invoke("Get-Mailbox", json!({"Filter": format!("UserPrincipalName -eq '{}'", m["UserPrincipalName"].as_str().unwrap())}))
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);
}

#[tokio::test]
async fn org_settings_and_servers() {
    let lab = lab(100).await;
    let c = Client::new(&lab).await;
    c.invoke(
        "Set-ActiveSyncOrganizationSettings",
        json!({
            "DefaultAccessLevel": "Block",
            "UserMailInsert": "Enroll at https://portal.contoso.com",
            "AdminMailRecipients": table(&["secops@contoso.com"], &[]),
        }),
    )
    .await
    .unwrap();
    let s = c
        .invoke("Get-ActiveSyncOrganizationSettings", json!({}))
        .await
        .unwrap();
    assert_eq!(s[0]["DefaultAccessLevel"], "Block");
    assert_eq!(
        s[0]["UserMailInsert"],
        "Enroll at https://portal.contoso.com"
    );
    assert_eq!(
        s[0]["AdminMailRecipients"],
        json!(["mobile-admins@contoso.com", "secops@contoso.com"])
    );
    let e = c
        .invoke(
            "Set-ActiveSyncOrganizationSettings",
            json!({"DefaultAccessLevel": "Sometimes"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);

    let servers = c.invoke("Get-ExchangeServer", json!({})).await.unwrap();
    assert_eq!(servers.len(), 2);
    let cas = c
        .invoke("Get-ClientAccessService", json!({}))
        .await
        .unwrap();
    let uris: Vec<&str> = cas
        .iter()
        .map(|s| s["AutoDiscoverServiceInternalUri"].as_str().unwrap())
        .collect();
    for (uri, base) in uris.iter().zip(lab.cas_urls()) {
        assert_eq!(*uri, format!("{base}/Autodiscover/Autodiscover.xml"));
    }
}

#[tokio::test]
async fn remove_mobile_device_leaves_the_intune_record() {
    let lab = lab(500).await;
    let c = Client::new(&lab).await;
    let t = lab
        .control()
        .truth()
        .into_iter()
        .find(|t| t.managed_device_id.is_some())
        .unwrap();
    c.invoke(
        "Remove-MobileDevice",
        json!({"Identity": t.identity, "Confirm": false}),
    )
    .await
    .unwrap();
    let e = c
        .invoke("Get-MobileDevice", json!({"Identity": t.device_id}))
        .await
        .unwrap_err();
    assert_eq!(e.status, 404);
    assert!(
        exchange_detail(&e).starts_with(
            "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|"
        )
    );
    let md = c
        .graph_get(&format!(
            "{}/v1.0/deviceManagement/managedDevices/{}",
            c.graph,
            t.managed_device_id.unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(md["exchangeAccessState"], "none");
    assert!(
        md["easDeviceId"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&t.device_id)
    );
}

/// `Clear-MobileDevice` leaves the partnership and marks the wipe pending where Exchange shows
/// it: `Get-MobileDeviceStatistics`' `Status` and the request time of the kind asked for;
/// `-Cancel` withdraws it; an unknown device is Exchange's not-found.
#[tokio::test]
async fn clear_mobile_device_marks_a_wipe_pending() {
    let lab = lab(300).await;
    let c = Client::new(&lab).await;
    let t = plain_device(&lab.control().truth());
    let stats = || async {
        let s = c
            .invoke(
                "Get-MobileDeviceStatistics",
                json!({"Identity": t.identity.clone()}),
            )
            .await
            .unwrap();
        assert_eq!(s.len(), 1);
        s[0].clone()
    };
    assert_eq!(stats().await["Status"], "DeviceOk");
    c.invoke(
        "Clear-MobileDevice",
        json!({"Identity": t.identity, "AccountOnly": true, "Confirm": false}),
    )
    .await
    .unwrap();
    let s = stats().await;
    assert_eq!(s["Status"], "DeviceWipePending");
    assert!(s["AccountOnlyDeviceWipeRequestTime"].is_string(), "{s}");
    assert!(s["DeviceWipeRequestTime"].is_null(), "{s}");
    let truth = lab.control().truth();
    let now = truth.iter().find(|d| d.device_id == t.device_id).unwrap();
    assert!(now.wipe.as_ref().unwrap().account_only);

    c.invoke("Clear-MobileDevice", json!({"Identity": t.device_id}))
        .await
        .unwrap();
    let s = stats().await;
    assert!(s["DeviceWipeRequestTime"].is_string(), "{s}");
    c.invoke(
        "Clear-MobileDevice",
        json!({"Identity": t.device_id, "Cancel": true}),
    )
    .await
    .unwrap();
    assert_eq!(stats().await["Status"], "DeviceOk");

    let e = c
        .invoke("Clear-MobileDevice", json!({"Identity": "NOSUCHDEVICE"}))
        .await
        .unwrap_err();
    assert_eq!(e.status, 404);
}

#[tokio::test]
async fn errors_have_exchanges_shape() {
    let lab = lab(100).await;
    let c = Client::new(&lab).await;
    let cases: [(&str, Value, u16, &str); 6] = [
        (
            "Get-Mailboxx",
            json!({}),
            400,
            "System.Management.Automation.CommandNotFoundException|The term 'Get-Mailboxx' is not recognized",
        ),
        (
            "Get-MobileDevice",
            json!({"Bogus": 1}),
            400,
            "System.Management.Automation.ParameterBindingException|A parameter cannot be found that matches parameter name 'Bogus'.",
        ),
        (
            "Get-MobileDevice",
            json!({"Filter": "Nonsense -eq 1"}),
            400,
            "ParameterBindingException|Cannot bind parameter 'Filter'",
        ),
        (
            "Get-MobileDevice",
            json!({"ResultSize": "many"}),
            400,
            "Cannot convert value \"many\"",
        ),
        (
            "Set-CASMailbox",
            json!({}),
            400,
            "missing mandatory parameters: Identity",
        ),
        (
            "Get-CASMailbox",
            json!({"Identity": "nobody@contoso.com"}),
            404,
            "ManagementObjectNotFoundException|The operation couldn't be performed because object 'nobody@contoso.com' couldn't be found on 'CAS01.contoso.com'.",
        ),
    ];
    for (cmdlet, params, status, detail) in cases {
        let e = c.invoke(cmdlet, params).await.unwrap_err();
        assert_eq!(e.status, status, "{cmdlet}");
        assert!(
            exchange_detail(&e).contains(detail),
            "{cmdlet}: {}",
            exchange_detail(&e)
        );
        // Exchange Online's shape: a generic message, the facts in the detail after the id of
        // the error site.
        let error = &e.body["error"];
        assert!(error["code"].is_string(), "{error}");
        assert_eq!(error["message"], "Error executing cmdlet");
        assert_eq!(error["details"][0]["code"], "Context");
        assert_eq!(
            error["innererror"]["type"],
            "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
        );
        let id = error["details"][0]["message"]
            .as_str()
            .unwrap()
            .split('|')
            .next()
            .unwrap();
        assert!(
            id.len() == 8 && id.starts_with("Ex") && u32::from_str_radix(&id[2..], 16).is_ok(),
            "{id}"
        );
    }
    assert_eq!(lab.control().counters().exchange.commands, 6);
}

#[tokio::test]
async fn the_modules_client_headers_are_recorded_and_must_agree_with_the_body() {
    let lab = lab(10).await;
    let c = Client::new(&lab).await;
    let send = |named: &'static str, format: &'static str| {
        c.http
            .post(c.invoke_url(0))
            .bearer_auth(&c.exchange_token)
            .header("X-CmdletName", named)
            .header("X-ResponseFormat", format)
            .header("X-ClientApplication", "lab-test/1")
            .json(&json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}}))
            .send()
    };
    let ok = send("get-mailbox", "json").await.unwrap();
    assert_eq!(ok.status(), 200);
    let wrong = send("Get-MobileDevice", "json").await.unwrap();
    assert_eq!(wrong.status(), 400);
    let body: Value = wrong.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains(
            "X-CmdletName header 'Get-MobileDevice' does not match the CmdletName 'Get-Mailbox'"
        ),
        "{body}"
    );
    assert_eq!(send("Get-Mailbox", "clixml").await.unwrap().status(), 400);
    // No header at all is accepted, as the service accepts it.
    c.invoke("Get-Mailbox", json!({})).await.unwrap();

    let counters = lab.control().counters().exchange;
    assert_eq!((counters.commands, counters.rejected), (2, 2));
    let seen = |key: &str| counters.client_headers.get(key).copied().unwrap_or(0);
    assert_eq!(seen("X-CmdletName: get-mailbox"), 1);
    assert_eq!(seen("X-CmdletName: Get-MobileDevice"), 1);
    assert_eq!(seen("X-ResponseFormat: json"), 2);
    assert_eq!(seen("X-ResponseFormat: clixml"), 1);
    assert_eq!(seen("X-ClientApplication: lab-test/1"), 3);
    assert_eq!(seen("X-AnchorMailbox"), 4, "{:?}", counters.client_headers);
}

#[tokio::test]
async fn exchange_requires_an_exchange_token_for_its_tenant() {
    let lab = lab(50).await;
    let c = Client::new(&lab).await;
    let body = json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}});
    let url = c.invoke_url(0);
    let status = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap().status() };
    assert_eq!(status(c.http.post(&url).json(&body)).await, 401);
    assert_eq!(
        status(c.http.post(&url).bearer_auth(&c.graph_token).json(&body)).await,
        401
    );
    assert_eq!(
        status(c.http.post(&url).bearer_auth("lab-forged").json(&body)).await,
        401
    );
    let other = format!(
        "{}/adminapi/beta/fabrikam.onmicrosoft.com/InvokeCommand",
        c.cas[0]
    );
    assert_eq!(
        status(
            c.http
                .post(&other)
                .bearer_auth(&c.exchange_token)
                .json(&body)
        )
        .await,
        401
    );
    // The tenant GUID works as well as the initial domain, and so does the static token.
    let by_guid = format!(
        "{}/adminapi/beta/{}/InvokeCommand",
        c.cas[0],
        lab.tenant_id()
    );
    assert_eq!(
        status(
            c.http
                .post(&by_guid)
                .bearer_auth(lab.exchange_token())
                .json(&body)
        )
        .await,
        200
    );
    assert_eq!(
        status(
            c.http
                .post(&url)
                .bearer_auth(&c.exchange_token)
                .body("{not json")
        )
        .await,
        400
    );
}
