//! Several CAS endpoints serve one organization; each can be stopped, slowed or made to fail.

use std::time::{Duration, Instant};

use easgate_lab::LabOptions;
use serde_json::json;

use crate::{Client, options};

#[tokio::test]
async fn a_stopped_cas_refuses_connections_and_the_others_serve_the_same_state() {
    let lab = easgate_lab::Lab::start(LabOptions {
        cas: 3,
        ..options(200)
    })
    .await
    .unwrap();
    let c = Client::new(&lab).await;
    let mailbox = c
        .invoke("Get-CASMailbox", json!({"ResultSize": 1}))
        .await
        .unwrap()[0]["Identity"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = lab.cas_urls()[1].trim_start_matches("http://").to_owned();

    lab.control().stop_cas(1).await.unwrap();
    let refused = tokio::net::TcpStream::connect(&addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // The stopped CAS keeps its port: no other socket (one without `SO_REUSEADDR`, as the
    // kernel's own choice of a free port for a connection or a port-0 listener) takes it before
    // it starts again.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    let taken = other.bind(addr.parse().unwrap()).unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    drop(other);
    // A client with no pooled connection sees a connect error.
    let fresh = Client::new(&lab).await;
    let err = fresh
        .http
        .post(fresh.invoke_url(1))
        .bearer_auth(&fresh.exchange_token)
        .json(&json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(!lab.control().cas_status()[1].running);

    // A write on one CAS is what the others read.
    c.invoke_on(
        0,
        "Set-CASMailbox",
        json!({"Identity": mailbox, "ActiveSyncAllowedDeviceIDs": ["FAILOVER1"]}),
        None,
    )
    .await
    .unwrap();
    let read = |cas: usize| {
        let c = &c;
        let mailbox = mailbox.clone();
        async move {
            c.invoke_on(cas, "Get-CASMailbox", json!({"Identity": mailbox}), None)
                .await
                .unwrap()[0]["ActiveSyncAllowedDeviceIDs"]
                .clone()
        }
    };
    assert_eq!(read(2).await, json!(["FAILOVER1"]));

    lab.control().start_cas(1).await.unwrap();
    assert!(lab.control().cas_status()[1].running);
    assert_eq!(read(1).await, json!(["FAILOVER1"]));
    let by_cas = lab.control().counters().exchange.by_cas;
    assert_eq!(by_cas.len(), 3);
    assert!(by_cas.iter().all(|&n| n >= 1), "{by_cas:?}");
}

#[tokio::test]
async fn a_failing_cas_answers_503_and_a_slow_one_is_slower() {
    let lab = easgate_lab::Lab::start(options(100)).await.unwrap();
    let c = Client::new(&lab).await;
    lab.control().fail_cas(1, 503).unwrap();
    let e = c
        .invoke_on(1, "Get-Mailbox", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(e.status, 503);
    assert_eq!(e.body["error"]["code"], "ServiceUnavailable");
    assert!(c.invoke_on(0, "Get-Mailbox", json!({}), None).await.is_ok());
    assert_eq!(lab.control().counters().exchange.faulted, 1);

    lab.control()
        .slow_cas(1, Duration::from_millis(300))
        .unwrap();
    let started = Instant::now();
    c.invoke_on(1, "Get-ActiveSyncOrganizationSettings", json!({}), None)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    lab.control().heal_cas(1).unwrap();
    assert_eq!(lab.control().cas_status()[1].mode, easgate_lab::CasMode::Up);
}
