//! How fast the lab's remote PowerShell face lists devices: one `Get-MobileDevice -ResultSize
//! Unlimited` over `/PowerShell/` (WS-Management, PSRP fragments, CLIXML), received to the end by
//! a small Rust client in the same process, with the latency model off, so that only the lab's
//! work (and the client's decoding) is measured.
//!
//! `taskset -c 0 cargo run --release -p easgate-lab --example powershell_listing -- 100000`
//! pins every thread (server, client, blocking pool) to one core; the figure is objects per
//! second of wall time, and per second of the process's CPU time.

#[path = "../tests/powershell/client.rs"]
mod client;

use std::time::Instant;

use easgate_lab::{Lab, LabOptions, LatencyModel};

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name; ticks are
    // 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let devices: usize = std::env::args().nth(1).map_or(Ok(100_000), |a| a.parse())?;
    let lab = Lab::start(LabOptions {
        devices,
        cas: 1,
        latency: LatencyModel::uniform(0, 0),
        ..LabOptions::default()
    })
    .await?;
    let (user, password) = lab.powershell_account();
    let mut c = client::Client::new(&lab.powershell_urls()[0], &user, &password);
    // Windows PowerShell's default (WinRM MaxEnvelopeSizekb = 500).
    c.max_envelope = 512_000;
    c.open().await.map_err(|f| anyhow::anyhow!("open: {f:?}"))?;
    let pipeline = easgate_psrp::CreatePipeline::single(
        easgate_psrp::Command::cmdlet("Get-MobileDevice").param("ResultSize", "Unlimited"),
    );
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let o = c
        .run(&pipeline, false)
        .await
        .map_err(|f| anyhow::anyhow!("run: {f:?}"))?;
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    anyhow::ensure!(
        o.count == devices,
        "listed {} of {devices} devices",
        o.count
    );
    println!(
        "{} devices as CLIXML ({:.0} MB) in {wall:.2} s wall, {cpu:.2} s CPU: {:.0} objects/s wall, {:.0} objects/s per CPU second",
        o.count,
        o.bytes as f64 / 1e6,
        o.count as f64 / wall,
        o.count as f64 / cpu.max(1e-9),
    );
    c.close()
        .await
        .map_err(|f| anyhow::anyhow!("close: {f:?}"))?;
    lab.shutdown().await;
    Ok(())
}
