//! Hot reload: the plugin directory is watched; good versions replace the active one
//! atomically, bad ones are rejected with a reason while the last good one keeps serving.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use easgate::plugin::{Digest, PluginRegistry};

use crate::support::{
    device, plugin_registry, sync_info, wait_for_active, wasm_bytes, with_custom_section,
};

/// How long a written plugin may take to become active.
const RELOAD_LIMIT: Duration = Duration::from_secs(20);

#[test]
fn swaps_under_load_fail_no_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let registry = plugin_registry(dir.path());
    let _watcher = registry.watch().unwrap();
    let builtin = wasm_bytes("access_policy.wasm");
    let builtin_digest = registry.access_policy().meta.digest;
    let target = dir.path().join("access-policy.wasm");

    let stop = Arc::new(AtomicBool::new(false));
    let evaluator = {
        let (registry, stop) = (registry.clone(), stop.clone());
        thread::spawn(move || {
            let batch: Vec<_> = (0..200).map(|i| device(&format!("D{i}"))).collect();
            let mut seen = Vec::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Pinned once per batch, as a sync pins one version from start to end.
                let policy = registry.access_policy();
                match policy.decide(&sync_info(), &batch) {
                    Ok(verdicts) => {
                        assert_eq!(verdicts.decisions.len(), batch.len());
                        seen.push(policy.meta.digest);
                    }
                    Err(err) => failures.push(err.to_string()),
                }
            }
            (seen, failures)
        })
    };

    let mut good = HashSet::from([builtin_digest]);
    for round in 0..24 {
        let bytes = match round % 4 {
            // Garbage, a truncated component, and a core module: each must be rejected.
            1 => b"definitely not wasm".to_vec(),
            2 => builtin[..builtin.len() / 2].to_vec(),
            3 => b"\0asm\x01\0\0\0".to_vec(),
            _ => {
                let bytes = with_custom_section(&builtin, &format!("round {round}"));
                good.insert(Digest::of(&bytes));
                bytes
            }
        };
        std::fs::write(&target, &bytes).unwrap();
        thread::sleep(Duration::from_millis(40));
    }
    // The watcher coalesces writes that come quickly: on a loaded machine it may have read
    // only good versions of the storm. One bad write it surely reads, before the final one.
    std::fs::write(&target, b"definitely not wasm").unwrap();
    let rejected = |registry: &PluginRegistry| {
        registry
            .status()
            .iter()
            .any(|s| s.name == "access-policy" && !s.rejections.is_empty())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !rejected(&registry) && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let final_bytes = with_custom_section(&builtin, "final");
    let final_digest = Digest::of(&final_bytes);
    good.insert(final_digest);
    std::fs::write(&target, &final_bytes).unwrap();
    wait_for_active(&registry, final_digest, RELOAD_LIMIT);

    stop.store(true, Ordering::Relaxed);
    let (seen, failures) = evaluator.join().unwrap();
    assert!(
        failures.is_empty(),
        "evaluations failed during swaps: {failures:#?}"
    );
    assert!(!seen.is_empty());
    for digest in &seen {
        assert!(
            good.contains(digest),
            "an evaluation ran on {digest:?}, which is no good version"
        );
    }
    let status = registry.status();
    let entry = status.iter().find(|s| s.name == "access-policy").unwrap();
    assert!(entry.active);
    assert!(
        !entry.rejections.is_empty(),
        "the bad versions were recorded"
    );
}

#[test]
fn a_rejected_version_keeps_the_last_good_one_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = wasm_bytes("access_policy.wasm");
    let good = with_custom_section(&builtin, "good");
    std::fs::write(dir.path().join("access-policy.wasm"), &good).unwrap();
    let registry = plugin_registry(dir.path());
    assert_eq!(registry.access_policy().meta.digest, Digest::of(&good));

    // Settings the policy refuses: configure fails, so the version is rejected.
    std::fs::write(
        dir.path().join("access-policy.toml"),
        "world = \"access-policy\"\n[settings]\naccessRules = \"all\"\n",
    )
    .unwrap();
    registry.rescan();
    assert_eq!(
        registry.access_policy().meta.digest,
        Digest::of(&good),
        "the last good version serves"
    );
    let status = registry.status();
    let rejection = status[0]
        .rejections
        .last()
        .expect("the rejection is recorded");
    assert!(
        rejection.reason.contains("accessRules"),
        "{}",
        rejection.reason
    );
    assert!(
        rejection.reason.contains(&Digest::of(&good).short()),
        "{}",
        rejection.reason
    );

    // A failing self-check rejects a version too.
    std::fs::write(
        dir.path().join("access-policy.toml"),
        "world = \"access-policy\"\n[[test]]\nname = \"expects the impossible\"\n\
         input = { eas = { device-id = \"A\" } }\nexpect = { verdict = \"allow\" }\n",
    )
    .unwrap();
    registry.rescan();
    let status = registry.status();
    let reason = &status[0].rejections.last().unwrap().reason;
    assert!(
        reason.contains("self-check \"expects the impossible\" failed"),
        "{reason}"
    );
    assert_eq!(registry.access_policy().meta.digest, Digest::of(&good));
}

#[test]
fn deleting_the_plugin_falls_back_to_the_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let registry = plugin_registry(dir.path());
    let _watcher = registry.watch().unwrap();
    let builtin_digest = registry.access_policy().meta.digest;
    let custom = with_custom_section(&wasm_bytes("access_policy.wasm"), "custom");
    let path = dir.path().join("access-policy.wasm");
    std::fs::write(&path, &custom).unwrap();
    wait_for_active(&registry, Digest::of(&custom), RELOAD_LIMIT);
    std::fs::remove_file(&path).unwrap();
    wait_for_active(&registry, builtin_digest, RELOAD_LIMIT);
    assert!(registry.status().is_empty());
}

#[test]
fn a_plugin_that_is_not_selected_is_loaded_but_not_active() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::support::wasm_path("byod_strict.wasm"),
        dir.path().join("byod-strict.wasm"),
    )
    .unwrap();
    let registry = plugin_registry(dir.path());
    let status = registry.status();
    assert_eq!(status.len(), 1);
    assert!(
        status[0].loaded.is_some() && !status[0].active,
        "{status:#?}"
    );
    assert_eq!(registry.access_policy().meta.name, "access-policy");
}

/// Regression: reading a plugin file is itself an inotify event (open, close), so the watcher
/// reloaded the file it had just read, about fifty times a second for as long as it ran.
#[test]
fn a_loaded_plugin_is_not_read_again_until_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let registry = plugin_registry(dir.path());
    let _watcher = registry.watch().unwrap();
    let bytes = with_custom_section(&wasm_bytes("access_policy.wasm"), "quiet");
    std::fs::write(dir.path().join("access-policy.wasm"), &bytes).unwrap();
    wait_for_active(&registry, Digest::of(&bytes), RELOAD_LIMIT);
    // Let the events of the write and of the load's own read settle (the debounce is 20 ms).
    thread::sleep(Duration::from_millis(300));
    let generation = *registry.subscribe().borrow();
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        *registry.subscribe().borrow(),
        generation,
        "reloads while nothing changed"
    );
}
