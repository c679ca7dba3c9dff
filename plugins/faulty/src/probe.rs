//! Mode `probe`: tries, through the standard library as any plugin author would, every
//! capability the host must deny (a file, the environment, the arguments, a TCP connection,
//! name resolution) and logs each outcome through `host.log`, one line per attempt:
//! `probe <what>: denied: <error>` (or `: empty`), or `probe <what>: GOT DATA …` at warn level.
//! It also reads the clocks, which must say the sync's `now` and stand still, and logs
//! `probe random: <n>`, a hash keyed by the standard library's random seed, which must be the
//! same in every call (the test compares two).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::easgate::policy::host::{Level, log};

/// Runs every probe; true if any of them got through. `now` is the sync's.
pub fn run(port: u16, now: i64) -> bool {
    let attempts = [
        ("clock wall", wall_clock(now)),
        ("clock monotonic", monotonic_clock()),
        ("file /etc/hostname", read_file("/etc/hostname")),
        ("env PATH", env_var("PATH")),
        ("env HOME", env_var("HOME")),
        ("env list", listed("variables", std::env::vars_os().count())),
        ("args", listed("arguments", std::env::args_os().count())),
        (
            "tcp 127.0.0.1",
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(_) => Err(format!("connected to port {port}")),
                Err(err) => Ok(format!("denied: {err}")),
            },
        ),
        (
            "dns localhost",
            match ("localhost", port).to_socket_addrs() {
                Ok(addrs) => listed("addresses", addrs.count()),
                Err(err) => Ok(format!("denied: {err}")),
            },
        ),
    ];
    log(
        Level::Info,
        &format!("probe random: {}", RandomState::new().hash_one(0u64)),
    );
    let mut leaked = false;
    // Ok: the sandbox held; Err: what got through.
    for (what, outcome) in attempts {
        match outcome {
            Ok(denied) => log(Level::Info, &format!("probe {what}: {denied}")),
            Err(got) => {
                leaked = true;
                log(Level::Warn, &format!("probe {what}: GOT DATA: {got}"));
            }
        }
    }
    leaked
}

fn read_file(path: &str) -> Result<String, String> {
    match std::fs::read(path) {
        Ok(data) => Err(format!("{} bytes", data.len())),
        Err(err) => Ok(format!("denied: {err}")),
    }
}

fn env_var(name: &str) -> Result<String, String> {
    match std::env::var_os(name) {
        Some(value) => Err(format!("{} bytes", value.len())),
        None => Ok("denied: not set".into()),
    }
}

fn listed(what: &str, count: usize) -> Result<String, String> {
    match count {
        0 => Ok("empty".into()),
        count => Err(format!("{count} {what}")),
    }
}

fn wall_clock(now: i64) -> Result<String, String> {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(t) if t.as_secs() as i64 == now => Ok(format!("stopped at the sync's now ({now})")),
        Ok(t) => Err(format!(
            "{} s since 1970, not the sync's {now}",
            t.as_secs()
        )),
        Err(err) => Err(format!("before 1970: {err}")),
    }
}

fn monotonic_clock() -> Result<String, String> {
    let start = Instant::now();
    // Work that takes real time, so that a running clock shows it.
    let mut x = 0u64;
    for i in 0..1_000_000u64 {
        x = black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    match start.elapsed().as_nanos() {
        0 => Ok("stands still".into()),
        n => Err(format!("moved {n} ns")),
    }
}
