//! A deliberately misbehaving access policy, for the host's containment tests. Never embedded
//! and never shipped.
//!
//! The settings select one behaviour: `{"mode": "<mode>"}` plus, for some modes, one more key.
//! Every mode that does not break the call answers each device with verdict `allow`, reason
//! `ok`, notify `false`, so a test can tell a contained failure from a served answer.
//!
//! | mode              | behaviour                                                          |
//! |-------------------|--------------------------------------------------------------------|
//! | `ok`              | a well-behaved policy                                              |
//! | `trap`            | panics (traps) in `decide`                                         |
//! | `trap-on`         | panics only if a device's `device-id` equals setting `device_id`   |
//! | `loop`            | never returns from `decide`                                        |
//! | `alloc`           | allocates and fills 1 MiB after 1 MiB until memory runs out        |
//! | `wrong-count`     | one decision fewer than devices (one for an empty batch)           |
//! | `too-many`        | ten decisions per device (ten for an empty batch)                  |
//! | `huge-reason`     | the first reason is 10 MiB (10,485,760 bytes) of `x`               |
//! | `bad-reason`      | every reason is `Not Valid!`                                       |
//! | `log-flood`       | calls `host.log` 1,000,000 times (level info), then answers        |
//! | `stdout`          | prints 10,000 lines to stdout, then answers                        |
//! | `configure-fails` | `configure` returns an error                                       |
//! | `probe`           | tries what the sandbox must deny (see [`probe`]), then answers     |
//! |                   | with reason `probe-denied`, or `probe-leaked` if anything got out  |
//!
//! A mode that breaks the call (`trap`, `loop`, `sleep`, `alloc`, `wrong-count`, `too-many`,
//! `huge-reason`, `bad-reason`) answers a what-if call (the host's rehearsal before activation,
//! `policy test`) well, so that the version loads and misbehaves in real syncs, as a time bomb
//! would; with `"rehearsals": true` it misbehaves there too, and is rejected at load.
//!
//! Settings keys: `mode` (required), `device_id` (string, required by `trap-on`), `port`
//! (0–65535, for `probe`, default 9), `rehearsals` (bool, default false). Any other key, or a
//! key a mode does not use, is a configure error, so that a typo cannot turn a failure test
//! into a passing one.

mod probe;

use std::hint::black_box;
use std::sync::{Mutex, PoisonError};

use easgate::policy::host::{Level, log};
use easgate::policy::types::{SyncKind, Verdict};
use serde_json::Value;

wit_bindgen::generate!({ path: "../../wit", world: "access-policy" });

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Ok,
    Trap,
    TrapOn { device_id: String },
    Loop,
    Sleep,
    Alloc,
    WrongCount,
    TooMany,
    HugeReason,
    BadReason,
    LogFlood,
    Stdout,
    Probe { port: u16 },
}

impl Mode {
    /// Whether the mode makes the call fail (rather than answer after its antics).
    fn breaks_the_call(&self) -> bool {
        matches!(
            self,
            Mode::Trap
                | Mode::Loop
                | Mode::Sleep
                | Mode::Alloc
                | Mode::WrongCount
                | Mode::TooMany
                | Mode::HugeReason
                | Mode::BadReason
        )
    }
}

/// The configured mode, and whether it misbehaves in what-if calls too.
static MODE: Mutex<Option<(Mode, bool)>> = Mutex::new(None);

struct Faulty;

impl Guest for Faulty {
    fn configure(settings: String) -> Result<(), String> {
        let mode = parse(&settings)?;
        *MODE.lock().unwrap_or_else(PoisonError::into_inner) = Some(mode);
        Ok(())
    }

    fn decide(info: SyncInfo, devices: Vec<DeviceContext>) -> Vec<Decision> {
        let (mode, rehearsals) = MODE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .expect("faulty: the host calls configure before decide");
        let answer =
            |reason: &str| -> Vec<Decision> { devices.iter().map(|_| allow(reason)).collect() };
        if info.kind == SyncKind::WhatIf && !rehearsals && mode.breaks_the_call() {
            return answer("ok");
        }
        match mode {
            Mode::Ok => answer("ok"),
            Mode::Trap => panic!("faulty: trap in decide, as mode trap asks"),
            Mode::TrapOn { device_id } => {
                if devices
                    .iter()
                    .any(|device| device.eas.device_id == device_id)
                {
                    panic!("faulty: trap on device {device_id}, as mode trap-on asks");
                }
                answer("ok")
            }
            Mode::Loop => {
                let mut spins = 0_u64;
                // `black_box` keeps the optimizer from proving the loop side-effect free and
                // deleting it (an infinite loop without side effects is undefined behaviour).
                loop {
                    spins = black_box(spins.wrapping_add(1));
                }
            }
            Mode::Sleep => {
                // Blocks inside the host, where an epoch deadline cannot interrupt it; the
                // host must refuse the wait instead.
                std::thread::sleep(std::time::Duration::from_secs(3600));
                answer("ok")
            }
            Mode::Alloc => {
                const MIB: usize = 1 << 20;
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Filled with data, not zeroes, so every page is really touched.
                    hoard.push(vec![0xA5; MIB]);
                    black_box(&hoard);
                }
            }
            Mode::WrongCount => {
                let mut decisions = answer("ok");
                if decisions.pop().is_none() {
                    decisions.push(allow("ok"));
                }
                decisions
            }
            Mode::TooMany => {
                let count = devices.len().max(1) * 10;
                (0..count).map(|_| allow("ok")).collect()
            }
            Mode::HugeReason => {
                let mut decisions = answer("ok");
                let huge = "x".repeat(10 << 20);
                match decisions.first_mut() {
                    Some(first) => first.reason = huge,
                    None => decisions.push(allow(&huge)),
                }
                decisions
            }
            Mode::BadReason => answer("Not Valid!"),
            Mode::LogFlood => {
                for i in 0..1_000_000 {
                    log(Level::Info, &format!("faulty: log line {i} of 1000000"));
                }
                answer("ok")
            }
            Mode::Stdout => {
                for i in 0..10_000 {
                    println!("faulty: stdout line {i} of 10000");
                }
                answer("ok")
            }
            Mode::Probe { port } => {
                let reason = if probe::run(port, info.now) {
                    "probe-leaked"
                } else {
                    "probe-denied"
                };
                answer(reason)
            }
        }
    }
}

export!(Faulty);

fn allow(reason: &str) -> Decision {
    Decision {
        verdict: Verdict::Allow,
        reason: reason.to_owned(),
        notify: false,
    }
}

fn parse(settings: &str) -> Result<(Mode, bool), String> {
    let value: Value =
        serde_json::from_str(settings).map_err(|err| format!("faulty: settings: {err}"))?;
    let Value::Object(mut settings) = value else {
        return Err("faulty: settings: expected an object".into());
    };
    let rehearsals = match settings.remove("rehearsals") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err("faulty: rehearsals: expected true or false".into()),
    };
    let mode = match settings.remove("mode") {
        Some(Value::String(mode)) => mode,
        _ => return Err("faulty: mode: expected a string, e.g. \"ok\" or \"trap\"".into()),
    };
    let mode = match mode.as_str() {
        "ok" => Mode::Ok,
        "trap" => Mode::Trap,
        "trap-on" => match settings.remove("device_id") {
            Some(Value::String(device_id)) => Mode::TrapOn { device_id },
            _ => return Err("faulty: device_id: mode trap-on needs it, as a string".into()),
        },
        "loop" => Mode::Loop,
        "sleep" => Mode::Sleep,
        "alloc" => Mode::Alloc,
        "wrong-count" => Mode::WrongCount,
        "too-many" => Mode::TooMany,
        "huge-reason" => Mode::HugeReason,
        "bad-reason" => Mode::BadReason,
        "log-flood" => Mode::LogFlood,
        "stdout" => Mode::Stdout,
        "configure-fails" => {
            return Err("faulty: configure refused by mode configure-fails".into());
        }
        "probe" => {
            let port = match settings.remove("port") {
                None => 9,
                Some(port) => port
                    .as_u64()
                    .and_then(|port| u16::try_from(port).ok())
                    .ok_or("faulty: port: expected a number from 0 to 65535")?,
            };
            Mode::Probe { port }
        }
        other => return Err(format!("faulty: mode: unknown mode {other:?}")),
    };
    if let Some(key) = settings.keys().next() {
        return Err(format!("faulty: {key}: not a setting of mode {mode:?}"));
    }
    Ok((mode, rehearsals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes_and_their_keys() {
        assert_eq!(parse(r#"{"mode": "ok"}"#), Ok((Mode::Ok, false)));
        assert_eq!(
            parse(r#"{"mode": "trap-on", "device_id": "D1"}"#),
            Ok((
                Mode::TrapOn {
                    device_id: "D1".into()
                },
                false
            ))
        );
        assert_eq!(
            parse(r#"{"mode": "probe"}"#),
            Ok((Mode::Probe { port: 9 }, false))
        );
        assert_eq!(
            parse(r#"{"mode": "probe", "port": 8080}"#),
            Ok((Mode::Probe { port: 8080 }, false))
        );
        assert_eq!(
            parse(r#"{"mode": "loop", "rehearsals": true}"#),
            Ok((Mode::Loop, true))
        );
        let errors = [
            ("{}", "faulty: mode: expected a string"),
            (
                r#"{"mode": "explode"}"#,
                "faulty: mode: unknown mode \"explode\"",
            ),
            (
                r#"{"mode": "trap-on"}"#,
                "faulty: device_id: mode trap-on needs it",
            ),
            (
                r#"{"mode": "trap", "device_id": "D1"}"#,
                "faulty: device_id: not a setting",
            ),
            (
                r#"{"mode": "probe", "port": 70000}"#,
                "faulty: port: expected a number",
            ),
            (
                r#"{"mode": "configure-fails"}"#,
                "faulty: configure refused by mode configure-fails",
            ),
        ];
        for (settings, want) in errors {
            let err = parse(settings).unwrap_err();
            assert!(err.starts_with(want), "{settings}: got {err:?}");
        }
    }
}
