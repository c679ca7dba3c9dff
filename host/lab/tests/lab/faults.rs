//! Injected faults over the control API: a seeded flaky CAS, Graph's 429 pattern, failing token
//! requests, expired Graph and Exchange next links, and records broken on the wire.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Client, exchange_detail, lab, token_request};

async fn control(
    lab: &easgate_lab::Lab,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, format!("{}{path}", lab.control_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_flaky_cas_fails_a_seeded_share_of_calls_the_same_way_each_time() {
    let lab = lab(50).await;
    let c = Client::new(&lab).await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let r = control(
            &lab,
            reqwest::Method::POST,
            "/_lab/cas/0/fail",
            json!({"status": 500, "fail_ratio": 0.3, "seed": 7}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let mut failed = Vec::new();
        for _ in 0..100 {
            match c.invoke("Get-ExchangeServer", json!({})).await {
                Ok(_) => failed.push(false),
                Err(f) => {
                    assert_eq!(f.status, StatusCode::INTERNAL_SERVER_ERROR);
                    failed.push(true);
                }
            }
        }
        runs.push(failed);
    }
    let n = runs[0].iter().filter(|f| **f).count();
    assert!((15..=45).contains(&n), "{n} of 100 failed");
    assert_eq!(runs[0], runs[1], "the same seed fails the same calls");
    assert_eq!(lab.control().counters().exchange.faulted, 2 * n as u64);
    let r = control(
        &lab,
        reqwest::Method::POST,
        "/_lab/cas/0/fail",
        json!({"fail_ratio": 1.5}),
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn graph_faults_throttle_fail_tokens_and_expire_links_then_wear_off() {
    let lab = lab(2500).await;
    let c = Client::new(&lab).await;
    let r = control(
        &lab,
        reqwest::Method::PUT,
        "/_lab/graph-faults",
        json!({"throttle_every": 2, "retry_after_secs": 3, "throttle_for_ms": 60000,
               "token_failures": 1, "expire_next_links": 1}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let url = format!(
        "{}/v1.0/deviceManagement/managedDevices?$select=id",
        c.graph
    );
    let first = c.graph_get(&url).await.expect("first call admitted");
    let refused = c.graph_get(&url).await.unwrap_err();
    assert_eq!(
        (refused.status, refused.retry_after),
        (StatusCode::TOO_MANY_REQUESTS, Some(3))
    );
    // The next link expires once (the third call, admitted), then works.
    let next = first["@odata.nextLink"]
        .as_str()
        .expect("two pages")
        .to_owned();
    let expired = c.graph_get(&next).await.unwrap_err();
    assert_eq!(expired.status, StatusCode::BAD_REQUEST);
    assert_eq!(expired.body["error"]["code"], "Directory_ExpiredPageToken");
    assert!(
        c.graph_get(&next).await.is_err(),
        "the fourth call is throttled"
    );
    assert!(c.graph_get(&next).await.is_ok());

    let http = reqwest::Client::new();
    let form = [
        ("client_id", lab.client_id()),
        ("client_secret", lab.client_secret().to_owned()),
        ("scope", "https://graph.microsoft.com/.default".to_owned()),
        ("grant_type", "client_credentials".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = token_request(&http, &lab, &form).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "temporarily_unavailable");
    let (status, _) = token_request(&http, &lab, &form).await;
    assert_eq!(status, StatusCode::OK);

    let left: Value = reqwest::get(format!("{}/_lab/graph-faults", lab.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(left["token_failures"], 0);
    assert_eq!(left["expire_next_links"], 0);
    assert_eq!(left["throttle_every"], 2);
}

#[tokio::test]
async fn a_malformed_record_goes_over_the_wire_until_cleared() {
    let lab = lab(50).await;
    let c = Client::new(&lab).await;
    let victim = lab.control().truth()[3].device_id.clone();
    let r = control(
        &lab,
        reqwest::Method::POST,
        "/_lab/malformed",
        json!({"service": "exchange", "device_id": victim.to_lowercase(),
               "field": "DeviceModel", "kind": "missing_field"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let model_of = |devices: &[Value]| -> Option<Value> {
        devices
            .iter()
            .find(|d| d["DeviceId"] == victim.as_str())
            .map(|d| d["DeviceModel"].clone())
    };
    let devices = c.invoke("Get-MobileDevice", json!({})).await.unwrap();
    assert_eq!(devices.len(), 50);
    assert_eq!(model_of(&devices), Some(Value::Null));
    assert!(
        devices
            .iter()
            .filter(|d| d["DeviceModel"].is_string())
            .count()
            == 49
    );
    assert_eq!(lab.control().malformations().len(), 1);
    let r = control(&lab, reqwest::Method::DELETE, "/_lab/malformed", json!({})).await;
    assert_eq!(r.status(), 204);
    let devices = c.invoke("Get-MobileDevice", json!({})).await.unwrap();
    assert!(model_of(&devices).unwrap().is_string());
}

#[tokio::test]
async fn exchange_next_links_of_the_aimed_cmdlet_expire_then_work_again() {
    let lab = lab(2500).await;
    let c = Client::new(&lab).await;
    let r = control(
        &lab,
        reqwest::Method::PUT,
        "/_lab/exchange-faults",
        json!({"expire_next_links": 1, "cmdlet": "get-mobiledevice"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let params = json!({"ResultSize": "Unlimited"});
    // Another cmdlet's listing pages as usual: the fault is aimed elsewhere.
    let mailboxes = c.invoke("Get-CASMailbox", params.clone()).await.unwrap();
    assert!(mailboxes.len() > 1000, "{} mailboxes", mailboxes.len());
    let first = c
        .invoke_page(&c.invoke_url(0), "Get-MobileDevice", &params, None)
        .await
        .unwrap();
    let next = first["@odata.nextLink"].as_str().expect("two pages");
    let expired = c
        .invoke_page(next, "Get-MobileDevice", &params, None)
        .await
        .unwrap_err();
    assert_eq!(expired.status, StatusCode::BAD_REQUEST);
    assert_eq!(expired.body["error"]["code"], "BadRequest");
    let detail = exchange_detail(&expired);
    assert!(
        detail.starts_with("Microsoft.Exchange.Admin.OData.Core.ODataServiceException|")
            && detail.contains("skip token has expired"),
        "{detail}"
    );
    // Used up: the same link works now, and the listing runs to its end.
    let second = c
        .invoke_page(next, "Get-MobileDevice", &params, None)
        .await
        .unwrap();
    assert_eq!(second["value"].as_array().unwrap().len(), 1000);
    assert_eq!(
        c.invoke("Get-MobileDevice", params).await.unwrap().len(),
        2500
    );
    let left: Value = reqwest::get(format!("{}/_lab/exchange-faults", lab.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        left,
        json!({"expire_next_links": 0, "cmdlet": "get-mobiledevice"})
    );
    let r = control(
        &lab,
        reqwest::Method::PUT,
        "/_lab/exchange-faults",
        json!({"expire_links": 1}),
    )
    .await;
    assert!(r.status().is_client_error(), "unknown fields are refused");
}
