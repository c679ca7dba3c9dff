//! How fast the lab's remote PowerShell face lists devices: one `Get-MobileDevice -ResultSize
//! Unlimited` over `/PowerShell/` (WS-Management, PSRP fragments, CLIXML objects), received to
//! the end by a small Rust client, with the latency model off, so that the lab's work is what is
//! measured.
//!
//! `cargo run --release -p easgate-lab --example powershell_listing -- 100000`
//!
//! The lab runs in a child process pinned to one core (`taskset -c 0`, when taskset exists) and
//! the client in this one; the figure is objects per second of wall time and per second of the
//! lab process's CPU time (read from `/proc/PID/stat` around the listing), i.e. what one core of
//! the lab sustains. `… -- serve N` is the child's mode.

#[path = "../tests/powershell/client.rs"]
mod client;

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use easgate_lab::{Lab, LabOptions, LatencyModel};

/// CPU seconds process `pid` has used (user + system), from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15, the 12th and 13th after the command name; Linux
    // counts them in 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

/// The child: a lab with `devices` devices, one CAS, no modelled latency, until stdin closes.
fn serve(devices: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let lab = Lab::start(LabOptions {
            devices,
            cas: 1,
            latency: LatencyModel::uniform(0, 0),
            ..LabOptions::default()
        })
        .await?;
        let (user, password) = lab.powershell_account();
        println!("{} {user} {password}", lab.powershell_urls()[0]);
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
        lab.shutdown().await;
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return serve(args.get(1).map_or(Ok(100_000), |a| a.parse())?);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(measure(&args))
}

/// The client: starts the lab child, lists, reports.
async fn measure(args: &[String]) -> anyhow::Result<()> {
    let devices: usize = args.first().map_or(Ok(100_000), |a| a.parse())?;
    let exe = std::env::current_exe()?;
    let pinned = Command::new("taskset").arg("-V").output().is_ok();
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let mut child = cmd
        .args(["serve", &devices.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(url), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("the lab did not start: {line:?}");
    };

    let mut c = client::Client::new(url, user, password);
    // Windows PowerShell's default (WinRM MaxEnvelopeSizekb = 500).
    c.max_envelope = 512_000;
    c.open().await.map_err(|f| anyhow::anyhow!("open: {f:?}"))?;
    let pipeline = easgate_psrp::CreatePipeline::single(
        easgate_psrp::Command::cmdlet("Get-MobileDevice").param("ResultSize", "Unlimited"),
    );
    let (wall, cpu) = (Instant::now(), cpu_seconds(child.id()));
    let o = c
        .run(&pipeline, false)
        .await
        .map_err(|f| anyhow::anyhow!("run: {f:?}"))?;
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds(child.id()) - cpu);
    c.close()
        .await
        .map_err(|f| anyhow::anyhow!("close: {f:?}"))?;
    drop(child.stdin.take());
    child.wait()?;
    anyhow::ensure!(
        o.count == devices,
        "listed {} of {devices} devices",
        o.count
    );
    println!(
        "{} devices, {:.0} MB of CLIXML, in {wall:.2} s: {:.0} objects/s wall; the lab{} used {cpu:.2} s CPU: {:.0} objects/s per CPU second",
        o.count,
        o.bytes as f64 / 1e6,
        o.count as f64 / wall,
        if pinned { " (pinned to core 0)" } else { "" },
        o.count as f64 / cpu.max(1e-9),
    );
    Ok(())
}
