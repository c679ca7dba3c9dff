//! Benchmark of the Exchange and Graph clients against the lab with its latency model on:
//! listing 100 000 mobile devices and 100 000 managed devices, and 10 000 `Set-CASMailbox`
//! commands at parallelism 1, 4 and 16 against a lab concurrency limit of 16, each beside the
//! lower bound the lab's latency model gives.
//!
//! ```text
//! cargo run --release -p easgate --example clients_bench [-- --devices N --commands N --set-ms N]
//! ```

use std::time::{Duration, Instant};

use easgate::config::{Config, Network};
use easgate::exchange::ExchangeClient;
use easgate::exchange::cmdlets::{GetCasMailbox, GetMobileDevice, HashTableEdit, SetCasMailbox};
use easgate::graph::GraphClient;
use easgate::net::HttpSettings;
use easgate_lab::{CmdletLatency, Lab, LabOptions, LatencyModel, SecretSource};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devices = arg("--devices", 100_000) as usize;
    let commands = arg("--commands", 10_000) as usize;
    let set_ms = arg("--set-ms", 10);
    let limit = 16;

    // Latency model: a page of Get-MobileDevice costs 20 ms + 10 µs per device (30 ms for
    // 1000); every other cmdlet 5 ms; Set-CASMailbox `set_ms`.
    let mut latency = LatencyModel::uniform(5, 0);
    latency.cmdlets.insert(
        "Get-MobileDevice".into(),
        CmdletLatency {
            base_ms: 20,
            per_object_us: 10,
        },
    );
    latency.cmdlets.insert(
        "Set-CASMailbox".into(),
        CmdletLatency {
            base_ms: set_ms,
            per_object_us: 0,
        },
    );
    let started = Instant::now();
    let lab = Lab::start(LabOptions {
        devices,
        cas: 1,
        latency,
        exchange_concurrency: limit,
        ..LabOptions::default()
    })
    .await?;
    println!(
        "lab: {devices} devices, {} managed, {} mailboxes, started in {}",
        lab.control().info().managed_devices,
        lab.control().info().mailboxes,
        secs(started.elapsed())
    );
    let text = lab.connector_config(&SecretSource::Inline);
    let mut org = Config::from_toml(&text, std::path::Path::new("lab.toml"))?
        .organizations
        .remove(0);
    let http = HttpSettings::from_config(&Network::default())?;

    // Listing: pages come one after another, so the bound is the sum of their latencies.
    org.exchange.parallel_commands = 1;
    let x = ExchangeClient::builder(&org, &http).build()?;
    x.run(&GetCasMailbox {
        result_size: easgate::exchange::cmdlets::ResultSize::Limit(1),
        ..Default::default()
    })
    .await?;
    lab.control().reset_counters();
    let t = Instant::now();
    let listed = x.run(&GetMobileDevice::default()).await?;
    let took = t.elapsed();
    let bound = lab.control().counters().exchange_lower_bound(1);
    println!(
        "Get-MobileDevice: {} devices in {}; lower bound {} ({:.2}×)",
        listed.len(),
        secs(took),
        secs(bound),
        took.as_secs_f64() / bound.as_secs_f64()
    );
    drop(listed);

    let g = GraphClient::new(&org, &http)?;
    let t = Instant::now();
    let managed = g.managed_devices().await?;
    println!(
        "managedDevices: {} devices in {} (the lab models no Graph latency: bound 0)",
        managed.len(),
        secs(t.elapsed())
    );
    drop(managed);

    let mailboxes: Vec<String> = x
        .run(&GetCasMailbox::default())
        .await?
        .into_iter()
        .map(|m| m.identity)
        .take(commands)
        .collect();
    assert_eq!(mailboxes.len(), commands, "enough mailboxes");
    for parallel in [1usize, 4, 16] {
        org.exchange.parallel_commands = parallel;
        let x = ExchangeClient::builder(&org, &http).build()?;
        x.run(&GetCasMailbox {
            result_size: easgate::exchange::cmdlets::ResultSize::Limit(1),
            ..Default::default()
        })
        .await?;
        let batch: Vec<SetCasMailbox> = mailboxes
            .iter()
            .map(|m| SetCasMailbox {
                identity: m.clone(),
                allowed: Some(HashTableEdit::new(
                    vec![format!("BENCH{parallel}-{m}")],
                    vec![],
                )),
                blocked: None,
            })
            .collect();
        lab.control().reset_counters();
        let t = Instant::now();
        let results = x.run_all(batch).await;
        let took = t.elapsed();
        let failed = results.iter().filter(|r| r.is_err()).count();
        let c = lab.control().counters();
        let at_limit = c.exchange_lower_bound(limit);
        let at_parallel = c.exchange_lower_bound(parallel.min(limit));
        println!(
            "Set-CASMailbox ×{commands} at parallelism {parallel:>2}: {} ({failed} failed, {} throttled); \
             bound at the lab's limit {limit}: {} ({:.2}×); at parallelism {parallel}: {} ({:.2}×)",
            secs(took),
            c.exchange.throttled,
            secs(at_limit),
            took.as_secs_f64() / at_limit.as_secs_f64(),
            secs(at_parallel),
            took.as_secs_f64() / at_parallel.as_secs_f64(),
        );
    }
    lab.shutdown().await;
    Ok(())
}
