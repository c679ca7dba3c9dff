//! Mode `probe`: tries, through the standard library as any plugin author would, every
//! capability the host must deny (a file, the environment, the arguments, a TCP connection,
//! name resolution) and logs each outcome through `host.log`, one line per attempt:
//! `probe <what>: denied: <error>` (or `: empty`), or `probe <what>: GOT DATA …` at warn level.

use std::net::{TcpStream, ToSocketAddrs};

use crate::easgate::policy::host::{Level, log};

/// Runs every probe; true if any of them got through.
pub fn run(port: u16) -> bool {
    let attempts = [
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
