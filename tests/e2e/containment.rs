//! Faulty plugins are contained: the call fails with a reason naming the plugin version, the
//! host goes on, and nothing of the failed call is returned.

use std::time::{Duration, Instant};

use easgate::plugin::engine::Limits;
use easgate::plugin::{Digest, PluginEngine, PluginError, PluginErrorKind};
use serde_json::json;

use crate::support::{device, faulty, sync_info, wasm_bytes};

fn engine() -> PluginEngine {
    PluginEngine::builder()
        .default_limits(Limits {
            timeout: Duration::from_millis(300),
            memory_bytes: 32 << 20,
        })
        .build()
        .unwrap()
}

fn faulty_digest() -> String {
    Digest::of(&wasm_bytes("faulty.wasm")).short()
}

/// Every failure names the plugin and its digest.
fn assert_names_plugin(err: &PluginError) {
    let message = err.to_string();
    assert!(
        message.contains("\"faulty\"") && message.contains(&faulty_digest()),
        "{message}"
    );
}

#[test]
fn a_trap_fails_that_call_only() {
    let engine = engine();
    let policy = faulty(&engine, json!({"mode": "trap-on", "device_id": "BAD"})).unwrap();
    let err = policy
        .decide(&sync_info(), &[device("A"), device("BAD")])
        .unwrap_err();
    assert!(
        matches!(err, PluginError::Trap { call: "decide", .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("trap on device BAD"),
        "the guest's panic message is kept: {err}"
    );
    assert_names_plugin(&err);
    // The same version keeps serving the next batch.
    let verdicts = policy
        .decide(&sync_info(), &[device("A"), device("B")])
        .unwrap();
    assert_eq!(verdicts.decisions.len(), 2);
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline() {
    let engine = engine();
    let policy = faulty(&engine, json!({"mode": "loop"})).unwrap();
    let started = Instant::now();
    let err = policy.decide(&sync_info(), &[device("A")]).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::Timeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{err}"
    );
    assert_names_plugin(&err);
    // Bounded, not timed: the deadline is 300 ms; ten times that means it was not enforced.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let engine = engine();
    let policy = faulty(&engine, json!({"mode": "alloc"})).unwrap();
    let err = policy.decide(&sync_info(), &[device("A")]).unwrap_err();
    assert!(
        matches!(err, PluginError::MemoryLimit { limit_mib: 32, .. }),
        "{err}"
    );
    assert_names_plugin(&err);
}

#[test]
fn a_wrong_number_of_decisions_rejects_the_batch() {
    let engine = engine();
    for mode in ["wrong-count", "too-many"] {
        let policy = faulty(&engine, json!({"mode": mode})).unwrap();
        let err = policy
            .decide(&sync_info(), &[device("A"), device("B")])
            .unwrap_err();
        assert!(
            matches!(err, PluginError::WrongCount { expected: 2, .. }),
            "{mode}: {err}"
        );
        assert_names_plugin(&err);
    }
}

#[test]
fn an_invalid_reason_rejects_the_batch() {
    let engine = engine();
    for mode in ["bad-reason", "huge-reason"] {
        let policy = faulty(&engine, json!({"mode": mode})).unwrap();
        let err = policy.decide(&sync_info(), &[device("A")]).unwrap_err();
        assert!(
            matches!(err, PluginError::InvalidReason { index: 0, .. }),
            "{mode}: {err}"
        );
        // A 10 MiB reason is not copied into the error message.
        assert!(
            err.to_string().len() < 1000,
            "{mode}: message of {} bytes",
            err.to_string().len()
        );
    }
}

#[test]
fn a_configure_error_rejects_the_plugin_at_load() {
    let err = faulty(&engine(), json!({"mode": "configure-fails"})).expect_err("rejected");
    assert!(matches!(err, PluginError::Configure { .. }), "{err}");
    assert!(err.to_string().contains("configure refused"), "{err}");
    assert_names_plugin(&err);
}

#[test]
fn log_floods_and_stdout_are_bounded() {
    // A generous deadline: this is about what is kept, not how fast a million calls run in a
    // debug build on a busy machine.
    let engine = PluginEngine::builder()
        .default_limits(Limits {
            timeout: Duration::from_secs(20),
            memory_bytes: 64 << 20,
        })
        .build()
        .unwrap();
    for mode in ["log-flood", "stdout"] {
        let policy = faulty(&engine, json!({"mode": mode})).unwrap();
        let verdicts = policy.decide(&sync_info(), &[device("A")]).unwrap();
        assert_eq!(verdicts.decisions[0].reason, "ok", "{mode}");
        assert!(
            verdicts.log.len() <= 101,
            "{mode}: {} lines kept",
            verdicts.log.len()
        );
        assert!(
            verdicts.log.last().unwrap().message.contains("dropped"),
            "{mode}"
        );
    }
}

#[test]
fn the_capability_probe_gets_denials_not_data() {
    let engine = engine();
    // A real listener, so that a connection would succeed if the sandbox allowed it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let policy = faulty(&engine, json!({"mode": "probe", "port": port})).unwrap();
    let verdicts = policy.decide(&sync_info(), &[device("A")]).unwrap();
    let log: Vec<&str> = verdicts
        .log
        .iter()
        .map(|line| line.message.as_str())
        .collect();
    assert_eq!(
        verdicts.decisions[0].reason, "probe-denied",
        "probe log: {log:#?}"
    );
    assert!(
        log.iter().any(|line| line.contains("file")),
        "the probe tried the file system: {log:#?}"
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the plugin reached a host socket"
    );
}

/// Regression (hostile run, hole 5): plugins got the host's wall clock, a running monotonic
/// clock and secure randomness, so a plugin could be a time bomb that `policy test` misses.
#[test]
fn plugins_see_the_syncs_now_a_stopped_clock_and_the_same_random_numbers() {
    let engine = engine();
    let policy = faulty(&engine, json!({"mode": "probe"})).unwrap();
    let random_line = |info: &easgate::plugin::types::SyncInfo| {
        let verdicts = policy.decide(info, &[device("A")]).unwrap();
        let log: Vec<String> = verdicts.log.iter().map(|l| l.message.clone()).collect();
        assert_eq!(verdicts.decisions[0].reason, "probe-denied", "{log:#?}");
        for what in [
            "probe clock wall: stopped",
            "probe clock monotonic: stands still",
        ] {
            assert!(log.iter().any(|l| l.starts_with(what)), "{what}: {log:#?}");
        }
        log.into_iter()
            .find(|l| l.starts_with("probe random: "))
            .expect("the probe logs its random number")
    };
    let first = random_line(&sync_info());
    let mut later = sync_info();
    later.now += 86_400 * 365;
    assert_eq!(
        random_line(&later),
        first,
        "randomness differs between calls"
    );
}

/// Regression (hostile run, hole 4): a version that loaded but failed every decision (it
/// loops, exhausts memory, answers the wrong count) became active and every run ended with
/// all devices undecided. The host's rehearsal batch now rejects it at load.
#[test]
fn a_version_that_fails_the_rehearsal_batch_is_rejected_at_load() {
    let engine = engine();
    for mode in ["trap", "loop", "alloc", "wrong-count", "bad-reason"] {
        let loaded = faulty(&engine, json!({"mode": mode, "rehearsals": true}));
        let Err(err) = loaded else {
            panic!("{mode}: a version that fails every decision loaded");
        };
        assert_eq!(err.kind(), PluginErrorKind::SelfCheck, "{mode}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("rehearsal batch of 16 sample devices"),
            "{mode}: {text}"
        );
        assert_eq!(
            text.matches("plugin \"faulty\"").count(),
            1,
            "named once: {text}"
        );
    }
    // The same modes outside rehearsals load: the rehearsal is what rejects them.
    assert!(faulty(&engine, json!({"mode": "loop"})).is_ok());
}

#[test]
fn sleeping_through_wasi_clocks_is_refused_not_waited_out() {
    // A sleep blocks in host code, out of the epoch deadline's reach; the host refuses to
    // wait at all. If this takes the full hour, the refusal is not linked.
    let engine = engine();
    let policy = faulty(&engine, json!({"mode": "sleep"})).unwrap();
    let started = Instant::now();
    let err = policy.decide(&sync_info(), &[device("A")]).unwrap_err();
    assert!(err.to_string().contains("may not wait or sleep"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}
