//! Throttling: a burst above the limit gets 429 with `Retry-After`, and a client that honours
//! it completes. Both limits are set small through the control API so the tests stay short.

use std::sync::Arc;
use std::time::{Duration, Instant};

use easgate_lab::{GraphLimits, LatencyModel};
use serde_json::json;
use tokio::task::JoinSet;

use crate::{Client, Failure, lab};

/// Runs `n` copies of `call` at once; returns how many failed with 429 (each with a
/// `Retry-After` of at least one second) and how many succeeded.
async fn burst<F, Fut>(n: usize, call: F) -> (usize, usize)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(call());
    }
    let (mut throttled, mut ok) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(f) => {
                assert_eq!(f.status, 429, "{:?}", f.body);
                assert!(f.retry_after.unwrap() >= 1);
                throttled += 1;
            }
        }
    }
    (throttled, ok)
}

/// Calls until not throttled, sleeping `Retry-After` between attempts (at most 20 tries).
async fn politely<F, Fut>(call: F) -> Result<(), Failure>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    for _ in 0..20 {
        match call().await {
            Err(f) if f.status == 429 => {
                tokio::time::sleep(Duration::from_secs(f.retry_after.unwrap())).await;
            }
            other => return other,
        }
    }
    panic!("still throttled after 20 attempts");
}

#[tokio::test]
async fn graph_burst_is_throttled_and_a_polite_client_completes() {
    let lab = lab(50).await;
    let c = Arc::new(Client::new(&lab).await);
    lab.control().set_graph_limits(GraphLimits {
        tenant_requests: 40,
        app_requests: 20,
        window_ms: 1000,
    });
    let get = {
        let c = c.clone();
        move || {
            let c = c.clone();
            async move {
                let url = format!("{}/v1.0/deviceManagement/managedDevices?$top=1", c.graph);
                c.graph_get(&url).await.map(drop)
            }
        }
    };
    let (throttled, ok) = burst(60, get.clone()).await;
    assert!(throttled > 0, "a burst of 60 exceeds 20 per second");
    assert!(ok >= 20);
    assert_eq!(lab.control().counters().graph.throttled as usize, throttled);

    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..60 {
        let get = get.clone();
        set.spawn(async move { politely(get).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    // 60 requests at 20 per second, after a burst that emptied the bucket.
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn exchange_concurrency_limit_refuses_and_a_polite_client_completes() {
    let lab = lab(50).await;
    let c = Arc::new(Client::new(&lab).await);
    lab.control().set_exchange_concurrency(3);
    lab.control().set_latency(LatencyModel::uniform(800, 0));
    let call = {
        let c = c.clone();
        move || {
            let c = c.clone();
            async move {
                c.invoke("Get-ActiveSyncOrganizationSettings", json!({}))
                    .await
                    .map(drop)
            }
        }
    };
    let probe = c
        .invoke("Get-ActiveSyncOrganizationSettings", json!({}))
        .await
        .map(drop);
    assert!(probe.is_ok());

    let (throttled, ok) = burst(9, call.clone()).await;
    assert_eq!((throttled, ok), (6, 3), "three slots held for 800 ms each");
    let counters = lab.control().counters();
    assert_eq!(counters.exchange.throttled, 6);
    assert_eq!(
        counters.exchange.peak_in_flight, 3,
        "the gate admits up to its limit"
    );

    // The refusal says what Exchange says.
    let mut set = JoinSet::new();
    for _ in 0..4 {
        set.spawn(call());
    }
    let mut messages = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Err(f) = r.unwrap() {
            messages.push(f.body["error"]["message"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        messages
            .iter()
            .all(|m| m.contains("maximum number of concurrent requests"))
    );

    let mut set = JoinSet::new();
    for _ in 0..9 {
        let call = call.clone();
        set.spawn(async move { politely(call).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert!(
        lab.control()
            .counters()
            .calls("Get-ActiveSyncOrganizationSettings")
            >= 1 + 3 + 1 + 9
    );
}
