//! The control API, over HTTP and in process.

use std::time::Duration;

use easgate_lab::{ComplianceState, DeviceTruth, Lab, LabError, LabInfo, LabOptions, OrgError};
use serde_json::{Value, json};

use crate::{lab, options};

#[tokio::test]
async fn http_control_matches_the_in_process_handle() {
    let lab = lab(300).await;
    let http = reqwest::Client::new();
    let base = lab.control_url().to_owned();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.get(url).send().await.unwrap() }
    };
    let post = |path: &str, body: Value| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.post(url).json(&body).send().await.unwrap() }
    };

    let info: LabInfo = get("/_lab/info").await.json().await.unwrap();
    assert_eq!(info, lab.control().info());
    assert_eq!(info.cas_urls, lab.cas_urls());
    assert_eq!(info.client_secret, lab.client_secret());

    let r = post("/_lab/cas/1/stop", json!({})).await;
    let status: Value = r.json().await.unwrap();
    assert_eq!(status[1]["running"], false);
    let r = post("/_lab/cas/1/slow", json!({"extra_ms": 50})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        lab.control().cas_status()[1].mode,
        easgate_lab::CasMode::Slow { extra_ms: 50 }
    );
    post("/_lab/cas/1/start", json!({})).await;
    assert!(lab.control().cas_status()[1].running);
    assert_eq!(post("/_lab/cas/9/stop", json!({})).await.status(), 404);

    let added: Value = post(
        "/_lab/devices",
        json!({"count": 2, "enroll": "inGracePeriod"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let ids: Vec<String> = serde_json::from_value(added["device_ids"].clone()).unwrap();
    let truth: Vec<DeviceTruth> = get("/_lab/truth").await.json().await.unwrap();
    assert_eq!(truth, lab.control().truth());
    for id in &ids {
        let t = truth.iter().find(|t| &t.device_id == id).unwrap();
        assert_eq!(t.compliance_state, Some(ComplianceState::InGracePeriod));
    }
    let r = post(
        &format!("/_lab/devices/{}/compliance", ids[0]),
        json!({"complianceState": "noncompliant"}),
    )
    .await;
    assert_eq!(r.status(), 204);
    // Whether `lastSyncDateTime` moves is checked in the Graph tests.
    let r = post(
        &format!("/_lab/devices/{}/compliance", ids[0]),
        json!({"complianceState": "compliant", "checkedIn": true}),
    )
    .await;
    assert_eq!(r.status(), 204);

    // An admin's Retire keeps the record, retirePending.
    let r = post(
        &format!("/_lab/devices/{}/retire", ids[1]),
        json!({"pending": true}),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        post(
            &format!("/_lab/devices/{}/enroll", ids[0]),
            json!({"complianceState": "compliant"})
        )
        .await
        .status(),
        409
    );
    assert_eq!(
        post(&format!("/_lab/devices/{}/retire", ids[0]), json!({}))
            .await
            .status(),
        204
    );
    assert_eq!(
        post(&format!("/_lab/devices/{}/retire", ids[0]), json!({}))
            .await
            .status(),
        404
    );
    assert_eq!(
        lab.control().retire(&ids[0]),
        Err(OrgError::NotEnrolled(ids[0].clone()))
    );
    assert_eq!(
        post(
            &format!("/_lab/devices/{}/enroll", ids[0]),
            json!({"complianceState": "compliant"})
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        post(
            "/_lab/devices/NOPE/enroll",
            json!({"complianceState": "compliant"})
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        post(
            "/_lab/devices/x/compliance",
            json!({"complianceState": "great"})
        )
        .await
        .status(),
        422
    );

    let r = http
        .put(format!("{base}/_lab/throttling"))
        .json(&json!({"exchange_concurrency": 4}))
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["exchange_concurrency"], 4);
    assert_eq!(t["graph"]["app_requests"], 2000);
    assert_eq!(lab.control().exchange_concurrency(), 4);
    let r = http
        .put(format!("{base}/_lab/latency"))
        .json(&json!({"base_ms": 5, "cmdlets": {"Set-CASMailbox": {"base_ms": 40}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        lab.control().latency().cmdlets["Set-CASMailbox"].base_ms,
        40
    );

    let counters: easgate_lab::CounterSnapshot = get("/_lab/counters").await.json().await.unwrap();
    assert_eq!(counters, lab.control().counters());
}

#[tokio::test(start_paused = true)]
async fn devices_arrive_over_time_when_asked() {
    let lab = Lab::start(options(100)).await.unwrap();
    let before = lab.control().info().devices;
    lab.control().set_arrivals(60.0);
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(lab.control().info().devices, before + 10);
    lab.control().set_arrivals(0.0);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(lab.control().info().devices, before + 10);
    lab.shutdown().await;
}

#[tokio::test]
async fn the_written_connector_config_points_at_the_lab() {
    let lab = lab(10).await;
    let dir = std::env::temp_dir().join(format!("easgate-lab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lab.toml");
    let secret_path = lab.write_connector_config(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&secret_path).unwrap(),
        lab.client_secret()
    );
    let config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let org = &config["organization"].as_array().unwrap()[0];
    let cas: Vec<&str> = org["exchange"]["cas_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cas, lab.cas_urls());
    assert_eq!(org["graph"]["client_id"].as_str().unwrap(), lab.client_id());
    assert_eq!(
        org["graph"]["client_secret"]["file"].as_str().unwrap(),
        "lab.secret"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn listens_on_loopback_only_and_within_the_port_range() {
    let outside = LabOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..options(1)
    };
    assert!(matches!(
        Lab::start(outside).await,
        Err(LabError::NotLoopback(_))
    ));
    let too_high = LabOptions {
        listen: "127.0.0.1:65534".parse().unwrap(),
        ..options(1)
    };
    // Two CAS, Graph, control and SMTP need five ports from 65534.
    let e = Lab::start(too_high).await.unwrap_err();
    assert!(matches!(e, LabError::Bind { .. }), "{e}");
}
