//! Microsoft's own Graph SDK (PyPI `msgraph-sdk`, with `azure-identity` signing in) against the
//! lab, unmodified: pointed at it only through the SDKs' settings (authority host, request
//! adapter base URL, CA bundle), it discovers the authority over OpenID Connect, takes a
//! client-credentials token and pages through every managed device
//! (`tests/graph_sdk/msgraph_client.py`). What the SDK parsed must be the lab's truth.
//!
//! Without the SDK its test says so on stderr and passes, unless `EASGATE_REQUIRE_POLYGLOT=1`
//! (set by `.ci/test`, whose `.ci/install-plugin-toolchains` installs the pinned packages) makes
//! that a failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use easgate_lab::{Lab, LabOptions};
use serde_json::Value;

use crate::options;

const REQUIRE: &str = "EASGATE_REQUIRE_POLYGLOT";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/graph_sdk/msgraph_client.py")
}

/// Why the SDK cannot run here, or `None` when it can.
fn missing_sdk() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import msgraph, azure.identity"])
        .output()
    {
        Err(e) => Some(format!("python3 cannot run: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "msgraph-sdk or azure-identity is not installed ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_graph_sdk_signs_in_and_pages_every_managed_device() {
    let test = "microsofts_graph_sdk_signs_in_and_pages_every_managed_device";
    match missing_sdk() {
        None => {}
        Some(why) if std::env::var(REQUIRE).is_ok_and(|v| v == "1") => {
            panic!("{test}: {why}, and {REQUIRE}=1 requires it (run .ci/install-plugin-toolchains)")
        }
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            return;
        }
    }
    let lab = Lab::start(LabOptions {
        tls: true,
        ..options(2500)
    })
    .await
    .expect("lab starts");
    assert!(
        lab.graph_url().starts_with("https://"),
        "{}",
        lab.graph_url()
    );
    let ca = std::env::temp_dir().join(format!(
        "easgate-lab-ca-{}-{}.pem",
        std::process::id(),
        lab.graph_url().rsplit(':').next().unwrap()
    ));
    std::fs::write(&ca, lab.tls_ca_pem().expect("a TLS lab has a CA")).unwrap();

    let mut cmd = Command::new("python3");
    cmd.arg(script())
        .args([
            lab.login_url(),
            lab.graph_url(),
            lab.tenant_domain(),
            &lab.client_id(),
            lab.client_secret(),
        ])
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("SSL_CERT_FILE", &ca);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("joined")
        .expect("python3 runs");
    let _ = std::fs::remove_file(&ca);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Graph SDK failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the client printed no JSON ({e}): {stdout}"));

    // Every Intune record, once, with the compliance state the lab holds.
    let devices = listed["devices"].as_array().unwrap();
    let info = lab.control().info();
    assert_eq!(devices.len(), info.managed_devices);
    let truth: HashMap<String, Value> = lab
        .control()
        .truth()
        .into_iter()
        .filter_map(|t| {
            let id = t.managed_device_id?;
            Some((id, serde_json::to_value(t.compliance_state).unwrap()))
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for d in devices {
        let id = d["id"].as_str().expect("an id");
        assert!(seen.insert(id.to_owned()), "{id} listed twice");
        if let Some(state) = truth.get(id) {
            assert_eq!(&d["complianceState"], state, "{d}");
        }
    }
    assert!(truth.keys().all(|id| seen.contains(id)));
    // Paged at Graph's default 1000, the authority discovered, one token.
    assert_eq!(
        listed["pages"].as_u64().unwrap(),
        info.managed_devices.div_ceil(1000) as u64
    );
    let graph = lab.control().counters().graph;
    assert_eq!(graph.by_endpoint.get("openid-configuration"), Some(&1));
    assert_eq!(graph.tokens_issued, 1);
    lab.shutdown().await;
}
