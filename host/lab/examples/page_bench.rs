//! Requests per second the lab serves for `managedDevices` paging: `workers` clients each page
//! through every managed device (following `@odata.nextLink`) again and again for `seconds`.
//!
//! Point it at a running lab's control URL (it reads URLs and credentials from `/_lab/info`
//! and lifts Graph throttling, so the lab itself is measured, not Intune's limits):
//! `cargo run --release -p easgate-lab --example page_bench -- http://127.0.0.1:PORT 4 10 ''`
//! Arguments: control URL, workers (4), seconds (10), extra query (e.g. `$select=id,easDeviceId`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// Just what paging needs; records are skipped without being built, so that the client's
/// parsing costs little next to the lab's rendering.
#[derive(Deserialize)]
struct Page {
    value: Vec<IgnoredAny>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let control = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: page_bench CONTROL_URL [WORKERS] [SECONDS] [QUERY]")
    })?;
    let workers: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let query = args.next().unwrap_or_default();

    let http = reqwest::Client::new();
    let info: easgate_lab::LabInfo = http
        .get(format!("{control}/_lab/info"))
        .send()
        .await?
        .json()
        .await?;
    http.put(format!("{control}/_lab/throttling"))
        .json(&json!({"graph": easgate_lab::GraphLimits::unlimited()}))
        .send()
        .await?
        .error_for_status()?;
    let token: Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            info.login_url, info.tenant_id
        ))
        .form(&[
            ("client_id", info.client_id.as_str()),
            ("client_secret", info.client_secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = Arc::new(
        token["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let first = format!(
        "{}/v1.0/deviceManagement/managedDevices{}{query}",
        info.graph_url,
        if query.is_empty() { "" } else { "?" }
    );

    let requests = Arc::new(AtomicU64::new(0));
    let records = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (http, token, first) = (http.clone(), token.clone(), first.clone());
        let (requests, records, bytes) = (requests.clone(), records.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            let mut url = first.clone();
            while Instant::now() < deadline {
                let body = http
                    .get(&url)
                    .bearer_auth(&*token)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                let page: Page = serde_json::from_slice(&body)?;
                requests.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                records.fetch_add(page.value.len() as u64, Ordering::Relaxed);
                url = page.next.unwrap_or_else(|| first.clone());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let r = requests.load(Ordering::Relaxed) as f64;
    println!(
        "{workers} workers, {secs:.1} s, query '{query}': {:.0} requests/s, {:.0} records/s, {:.1} MB/s",
        r / secs,
        records.load(Ordering::Relaxed) as f64 / secs,
        bytes.load(Ordering::Relaxed) as f64 / secs / 1e6
    );
    Ok(())
}
