//! `easgate policy check|eval|test`, run as the real binary.

use std::path::{Path, PathBuf};

use crate::support::{easgate, json_stdout, repo_file, stderr, stdout, succeeded, wasm_path};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn check_describes_the_builtin_policy() {
    let output = easgate(&["policy", "check", "builtin:access-policy"]);
    let out = succeeded(&output);
    assert!(out.contains("world        access-policy"), "{out}");
    assert!(out.contains("digest       sha256:"), "{out}");
    assert!(out.contains("configure, decide"), "{out}");
}

#[test]
fn check_refuses_what_is_not_a_policy_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let notice = std::fs::read(wasm_path("notice_template.wasm")).unwrap();
    let cases = [
        (
            write(dir.path(), "random.wasm", &random),
            "is not a valid WebAssembly component",
        ),
        (
            write(dir.path(), "core.wasm", b"\0asm\x01\0\0\0"),
            "is a core WebAssembly module, not a component",
        ),
        (
            write(dir.path(), "empty.wasm", b"\0asm\x0d\0\x01\0"),
            "does not implement the access-policy world",
        ),
        (
            write(dir.path(), "template.wasm", &notice),
            "the manifest says world access-policy, but the component exports notice-template",
        ),
    ];
    std::fs::write(
        dir.path().join("template.toml"),
        "world = \"access-policy\"\n",
    )
    .unwrap();
    for (path, expected) in cases {
        let output = easgate(&["policy", "check", path.to_str().unwrap()]);
        assert!(!output.status.success(), "{} was accepted", path.display());
        let err = stderr(&output);
        assert!(
            err.contains(expected),
            "{}: expected {expected:?} in:\n{err}",
            path.display()
        );
    }
}

#[test]
fn check_names_a_bad_manifest_line() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(wasm_path("access_policy.wasm")).unwrap();
    let path = write(dir.path(), "p.wasm", &wasm);
    std::fs::write(
        dir.path().join("p.toml"),
        "world = \"access-policy\"\n[limits]\ntimeout_ms = \"fast\"\n",
    )
    .unwrap();
    let output = easgate(&["policy", "check", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("p.toml") && err.contains("line 3") && err.contains("timeout_ms"),
        "{err}"
    );
}

#[test]
fn test_runs_the_builtin_cases() {
    let settings =
        std::fs::read_to_string(repo_file("plugins/access-policy/example-settings.json")).unwrap();
    let cases = repo_file("plugins/access-policy/CASES.json");
    let output = easgate(&[
        "policy",
        "test",
        "builtin:access-policy",
        &cases,
        "--settings",
        &settings,
    ]);
    let out = succeeded(&output);
    assert!(
        out.lines().last().unwrap().ends_with(" passed, 0 failed"),
        "{out}"
    );
}

#[test]
fn test_fails_on_a_wrong_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = write(
        dir.path(),
        "cases.json",
        br#"[{"name": "wrong on purpose", "input": {"eas": {"device-id": "A"}}, "expect": {"verdict": "allow"}},
             {"name": "right", "input": {"eas": {"device-id": "B"}}, "expect": {"verdict": "quarantine", "reason": "not-enrolled", "notify": true}}]"#,
    );
    let output = easgate(&[
        "policy",
        "test",
        "builtin:access-policy",
        cases.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(
        out.contains("FAIL  wrong on purpose: verdict Quarantine, expected Allow"),
        "{out}"
    );
    assert!(
        out.contains("ok    right") && out.contains("1 passed, 1 failed"),
        "{out}"
    );
}

#[test]
fn eval_prints_one_decision_per_device_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "devices.json",
        br#"[{"eas": {"device-id": "A"}, "managed": {"compliance-state": "compliant"}},
             {"eas": {"device-id": "B"}, "managed": {"compliance-state": "noncompliant"}, "user": null},
             {"eas": {"device-id": "C"}}]"#,
    );
    let output = easgate(&[
        "policy",
        "eval",
        "builtin:access-policy",
        "--input",
        input.to_str().unwrap(),
    ]);
    succeeded(&output);
    let decisions = json_stdout(&output);
    assert_eq!(
        decisions,
        serde_json::json!([
            {"verdict": "allow", "reason": "compliant", "notify": false},
            {"verdict": "block", "reason": "noncompliant", "notify": true},
            {"verdict": "quarantine", "reason": "not-enrolled", "notify": true}
        ])
    );
}

#[test]
fn eval_names_a_misspelt_input_field() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "devices.json",
        br#"[{"eas": {"device-id": "A", "devcie-type": "iPhone"}}]"#,
    );
    let output = easgate(&[
        "policy",
        "eval",
        "builtin:access-policy",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("devices.json") && err.contains("devcie-type"),
        "{err}"
    );
}

#[test]
fn the_third_party_example_passes_its_cases_and_self_checks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        wasm_path("byod_strict.wasm"),
        dir.path().join("byod-strict.wasm"),
    )
    .unwrap();
    std::fs::copy(
        repo_file("plugins/examples/byod-strict/byod-strict.toml"),
        dir.path().join("byod-strict.toml"),
    )
    .unwrap();
    let wasm = dir.path().join("byod-strict.wasm");
    let output = easgate(&["policy", "check", wasm.to_str().unwrap()]);
    assert!(
        !succeeded(&output).contains("self-checks  0 passed"),
        "the manifest has self-checks"
    );
    let cases = repo_file("plugins/examples/byod-strict/CASES.json");
    let output = easgate(&["policy", "test", wasm.to_str().unwrap(), &cases]);
    succeeded(&output);
}

/// Regression (hostile run, hole 7): at `EASGATE_LOG=debug`, wasmtime-wasi logged every byte a
/// plugin printed (a 235 MB log from one daemon run), past the sandbox's caps.
#[test]
fn a_plugins_output_stays_capped_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let cases = write(
        dir.path(),
        "cases.json",
        br#"[{"name": "chatty", "input": {"eas": {"device-id": "A"}}, "expect": {"verdict": "allow"}}]"#,
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_easgate"))
        .args(["policy", "test", wasm_path("faulty.wasm").to_str().unwrap()])
        .arg(&cases)
        .args(["--settings", r#"{"mode": "stdout"}"#])
        .env("EASGATE_LOG", "debug")
        .output()
        .unwrap();
    let out = succeeded(&output);
    assert!(out.contains("1 passed, 0 failed"), "{out}");
    // Two calls (the load's rehearsal batch and the case) printed 10 000 lines each; the
    // sandbox forwards at most 100 lines of a call's output to the log (without the cap at
    // debug level, 10 100 of one call got there).
    let printed = stderr(&output).matches("faulty: stdout line").count();
    assert!(printed <= 200, "{printed} printed lines reached the log");
}
