//! Graph and the token endpoint: error shapes, filters, `$select`, users and groups.

use easgate_lab::{ComplianceState, Utc};
use serde_json::Value;

use crate::{Client, lab, token_request};

#[tokio::test]
async fn token_endpoint_answers_with_entra_errors() {
    let lab = lab(20).await;
    let http = reqwest::Client::new();
    let id = lab.client_id();
    let graph = "https://graph.microsoft.com/.default";
    // (form, status, error, AADSTS code)
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("client_id", &id),
                ("client_secret", "wrong"),
                ("scope", graph),
                ("grant_type", "client_credentials"),
            ],
            401,
            "invalid_client",
            7_000_215,
        ),
        (
            vec![
                ("client_id", &id),
                ("scope", graph),
                ("grant_type", "client_credentials"),
            ],
            401,
            "invalid_client",
            7_000_218,
        ),
        (
            vec![
                ("client_id", "00000000-0000-0000-0000-000000000000"),
                ("client_secret", lab.client_secret()),
                ("scope", graph),
                ("grant_type", "client_credentials"),
            ],
            400,
            "unauthorized_client",
            700_016,
        ),
        (
            vec![
                ("client_id", &id),
                ("client_secret", lab.client_secret()),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_request",
            900_144,
        ),
        (
            vec![
                ("client_id", &id),
                ("client_secret", lab.client_secret()),
                ("scope", "https://graph.microsoft.com/User.Read"),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_scope",
            1_002_012,
        ),
        (
            vec![
                ("client_id", &id),
                ("client_secret", lab.client_secret()),
                ("scope", "https://vault.azure.net/.default"),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_resource",
            500_011,
        ),
        (
            vec![
                ("client_id", &id),
                ("client_secret", lab.client_secret()),
                ("scope", graph),
                ("grant_type", "password"),
            ],
            400,
            "unsupported_grant_type",
            70_003,
        ),
    ];
    for (form, status, error, code) in cases {
        let (s, body) = token_request(&http, &lab, &form).await;
        assert_eq!(s, status, "{body}");
        assert_eq!(body["error"], error);
        assert_eq!(body["error_codes"][0], code);
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        assert!(
            body["trace_id"].is_string()
                && body["correlation_id"].is_string()
                && body["timestamp"].is_string()
        );
    }
    let r = http
        .post(format!(
            "{}/fabrikam.onmicrosoft.com/oauth2/v2.0/token",
            lab.login_url()
        ))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_codes"][0], 90_002);
}

#[tokio::test]
async fn graph_requires_a_graph_token() {
    let lab = lab(20).await;
    let c = Client::new(&lab).await;
    let url = format!("{}/v1.0/deviceManagement/managedDevices", c.graph);
    for token in [None, Some(c.exchange_token.as_str()), Some("lab-forged")] {
        let mut req = c.http.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
        assert!(body["error"]["innerError"]["request-id"].is_string());
    }
}

#[tokio::test]
async fn quick_sync_filters_find_exactly_the_changes() {
    let lab = lab(3000).await;
    let c = Client::new(&lab).await;
    let enrolled: Vec<_> = lab
        .control()
        .truth()
        .into_iter()
        .filter(|t| t.managed_device_id.is_some())
        .take(5)
        .collect();
    // The dataset's sync times are all before its anchor; changes happen now.
    let cursor = Utc::from_ymd_hms(2025, 1, 15, 0, 0, 0).unwrap();
    let before = c
        .graph_list(&format!(
            "deviceManagement/managedDevices?$filter=lastSyncDateTime ge {cursor}"
        ))
        .await
        .unwrap();
    assert!(before.is_empty());
    // Intune's own change (a grace period running out) leaves `lastSyncDateTime` alone…
    for t in &enrolled {
        lab.control()
            .set_compliance(&t.device_id, ComplianceState::Noncompliant)
            .unwrap();
    }
    let unmoved = c
        .graph_list(&format!(
            "deviceManagement/managedDevices?$filter=lastSyncDateTime ge {cursor}"
        ))
        .await
        .unwrap();
    assert!(unmoved.is_empty(), "{unmoved:?}");
    // …a check-in moves it.
    for t in &enrolled {
        lab.control()
            .check_in(&t.device_id, ComplianceState::Noncompliant)
            .unwrap();
    }
    let changed = c
        .graph_list(&format!(
            "deviceManagement/managedDevices?$select=id,easDeviceId,complianceState,lastSyncDateTime&$filter=lastSyncDateTime ge {cursor}"
        ))
        .await
        .unwrap();
    assert_eq!(changed.len(), 5);
    assert!(
        changed
            .iter()
            .all(|d| d["complianceState"] == "noncompliant")
    );
    assert!(
        changed.iter().all(|d| d.as_object().unwrap().len() == 4),
        "only the selected properties"
    );

    // easDeviceId eq, ignoring case.
    let id = &enrolled[0].device_id;
    let one = c
        .graph_list(&format!(
            "deviceManagement/managedDevices?$filter=easDeviceId eq '{}'",
            id.to_lowercase()
        ))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0]["id"].as_str(),
        enrolled[0].managed_device_id.as_deref()
    );
}

#[tokio::test]
async fn unsupported_queries_are_refused_not_ignored() {
    let lab = lab(20).await;
    let c = Client::new(&lab).await;
    for q in [
        "$filter=deviceName eq 'x'",
        "$filter=easDeviceId eq 'a' or easDeviceId eq 'b'",
        "$filter=lastSyncDateTime ge '2024-01-01T00:00:00Z'",
        "$orderby=deviceName",
        "$count=true",
        "$select=id,notAProperty",
        "$top=0",
    ] {
        let e = c
            .graph_get(&format!(
                "{}/v1.0/deviceManagement/managedDevices?{q}",
                c.graph
            ))
            .await
            .unwrap_err();
        assert_eq!(e.status, 400, "{q}");
        assert_eq!(e.body["error"]["code"], "BadRequest", "{q}");
    }
}

#[tokio::test]
async fn users_by_id_or_upn_and_their_groups() {
    let lab = lab(400).await;
    let c = Client::new(&lab).await;
    let m = &c
        .invoke("Get-Mailbox", serde_json::json!({"ResultSize": 1}))
        .await
        .unwrap()[0];
    let upn = m["UserPrincipalName"].as_str().unwrap();
    let id = m["ExternalDirectoryObjectId"].as_str().unwrap();
    for key in [upn, id] {
        let u = c
            .graph_get(&format!("{}/v1.0/users/{key}", c.graph))
            .await
            .unwrap();
        assert_eq!(u["id"], id);
        assert_eq!(u["userPrincipalName"], upn);
        assert_eq!(u["mail"], m["PrimarySmtpAddress"]);
        assert!(
            u["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("$metadata#users/$entity")
        );
    }
    let e = c
        .graph_get(&format!("{}/v1.0/users/nobody@contoso.com", c.graph))
        .await
        .unwrap_err();
    assert_eq!(e.status, 404);
    assert_eq!(e.body["error"]["code"], "Request_ResourceNotFound");
    let groups = c
        .graph_list(&format!("users/{upn}/transitiveMemberOf"))
        .await
        .unwrap();
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["displayName"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"All Staff"), "{names:?}");

    // A membership change shows both ways: the group's members and the user's groups.
    let ids = |list: &[Value], key: &str| -> Vec<String> {
        list.iter()
            .filter_map(|v| v[key].as_str().map(str::to_lowercase))
            .collect()
    };
    let exempt = "Mobile Access Exempt";
    // A user outside the group (a member through a nested group would stay one).
    let mut outside = None;
    for t in lab.control().truth() {
        let Some(u) = t.user_principal_name else {
            continue;
        };
        let of = c
            .graph_list(&format!("users/{u}/transitiveMemberOf"))
            .await
            .unwrap();
        if !of.iter().any(|g| g["displayName"] == exempt) {
            outside = Some(u);
            break;
        }
    }
    let upn = outside.expect("a user outside the exempt group");
    let upn = upn.as_str();
    lab.control().set_membership(exempt, upn, true).unwrap();
    let with = c
        .graph_list(&format!("users/{upn}/transitiveMemberOf"))
        .await
        .unwrap();
    let gid = with
        .iter()
        .find(|g| g["displayName"] == exempt)
        .expect("a member now")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = c
        .graph_list(&format!("groups/{gid}/transitiveMembers"))
        .await
        .unwrap();
    assert!(ids(&members, "userPrincipalName").contains(&upn.to_lowercase()));
    lab.control().set_membership(&gid, upn, false).unwrap();
    let members = c
        .graph_list(&format!("groups/{gid}/transitiveMembers"))
        .await
        .unwrap();
    assert!(!ids(&members, "userPrincipalName").contains(&upn.to_lowercase()));
    let without = c
        .graph_list(&format!("users/{upn}/transitiveMemberOf"))
        .await
        .unwrap();
    assert!(!ids(&without, "id").contains(&gid.to_lowercase()));
    assert_eq!(
        lab.control().set_membership("no such group", upn, true),
        Err(easgate_lab::OrgError::UnknownGroup("no such group".into()))
    );
}

#[tokio::test]
async fn login_is_discovered_over_tls_as_msal_discovers_entra() {
    let lab = easgate_lab::Lab::start(easgate_lab::LabOptions {
        tls: true,
        ..crate::options(10)
    })
    .await
    .unwrap();
    let base = lab.login_url().to_owned();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    // Only the lab's own authority is trusted: not the built-in roots.
    let ca = reqwest::Certificate::from_pem(lab.tls_ca_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.expect("login answers over TLS");
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    // By domain or GUID, the endpoints are named by the GUID.
    let tid = lab.tenant_id();
    let (status, config) = get(format!(
        "{base}/{}/v2.0/.well-known/openid-configuration",
        lab.tenant_domain()
    ))
    .await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["issuer"], format!("{base}/{tid}/v2.0"));
    assert_eq!(
        config["token_endpoint"],
        format!("{base}/{tid}/oauth2/v2.0/token")
    );
    assert_eq!(
        config["authorization_endpoint"],
        format!("{base}/{tid}/oauth2/v2.0/authorize")
    );
    let (status, keys) = get(config["jwks_uri"].as_str().unwrap().to_owned()).await;
    assert_eq!((status, &keys["keys"]), (200, &serde_json::json!([])));

    // The discovered token endpoint issues a token that opens Graph.
    let token: Value = http
        .post(config["token_endpoint"].as_str().unwrap())
        .form(&[
            ("client_id", lab.client_id().as_str()),
            ("client_secret", lab.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let devices = http
        .get(format!(
            "{}/v1.0/deviceManagement/managedDevices",
            lab.graph_url()
        ))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(devices.status(), 200);

    // An unknown tenant, as Entra refuses it.
    let (status, refused) = get(format!(
        "{base}/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(
        (status, &refused["error"]),
        (400, &Value::from("invalid_tenant"))
    );
    assert!(
        refused["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS90002:")
    );

    // Instance discovery knows the lab's own authority, and no other.
    let (status, instance) = get(format!(
        "{base}/common/discovery/instance?api-version=1.1&authorization_endpoint={base}/{tid}/oauth2/v2.0/authorize"
    ))
    .await;
    assert_eq!(status, 200, "{instance}");
    assert_eq!(
        instance["tenant_discovery_endpoint"],
        format!("{base}/{tid}/v2.0/.well-known/openid-configuration")
    );
    let (status, unknown) = get(format!(
        "{base}/common/discovery/instance?api-version=1.1&authorization_endpoint=https://login.example.com/{tid}/oauth2/v2.0/authorize"
    ))
    .await;
    assert_eq!(
        (status, &unknown["error"]),
        (400, &Value::from("invalid_instance"))
    );
    lab.shutdown().await;
}
