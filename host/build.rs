//! Builds the plugin workspace (`../plugins`) for `wasm32-wasip2` so that the `easgate` binary can
//! embed the built-in plugins and the tests can load the example and faulty ones.
//!
//! The plugins get a target directory of their own (`<target>/wasm-plugins`) so that the nested
//! cargo never waits on the lock of the build that runs this script. They are always built with
//! the release profile: they are small, and Wasm speed is what the benchmarks measure.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root");
    let plugins = root.join("plugins");
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    emit_rerun_for_sources(&plugins);

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy, coverage, a host --target) are not meant
    // for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        build.env_remove(var);
    }
    let status = build.status().unwrap_or_else(|err| {
        panic!(
            "could not start cargo to build the plugins in {}: {err}",
            plugins.display()
        )
    });
    if !status.success() {
        panic!(
            "building the plugins in {} for {TARGET} failed (see the output above); \
             if the target is missing, `rustup target add {TARGET}` (rust-toolchain.toml lists it)",
            plugins.display()
        );
    }

    let wasm_dir = target_dir.join(TARGET).join("release");
    for name in ["access_policy", "notice_template"] {
        let path = wasm_dir.join(format!("{name}.wasm"));
        assert!(
            path.is_file(),
            "the plugin build did not produce {}",
            path.display()
        );
    }
    // Read by `include_bytes!` for the built-in plugins and by the tests for the others.
    println!(
        "cargo:rustc-env=EASGATE_PLUGIN_WASM_DIR={}",
        wasm_dir.display()
    );
}

/// Reruns this script when a plugin's sources change, without walking build output or packages.
fn emit_rerun_for_sources(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Build output, and the JavaScript example's npm packages (thousands of files that are
        // no plugin source; watching them made every build stat them all).
        if path
            .file_name()
            .is_some_and(|name| name == "target" || name == "node_modules" || name == "__pycache__")
        {
            continue;
        }
        if path.is_dir() {
            emit_rerun_for_sources(&path);
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
