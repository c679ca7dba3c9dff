//! easgate's built-in access policy, a Wasm component of the `access-policy` world.
//!
//! It reproduces Intune's on-premises Exchange access settings: users outside the included
//! groups (or in an excluded one) are left alone, enrolled devices are allowed while compliant
//! and blocked otherwise, and devices that are not enrolled get the level of the first device
//! rule that matches their model or family, else quarantine. The table itself is in
//! [`policy`]; the settings are described in [`settings`] and in `plugins/README.md`.

#[cfg(target_arch = "wasm32")]
mod bump;
mod policy;
mod settings;
mod stale;

use std::sync::{Mutex, PoisonError};

use policy::{Outcome, Policy};

wit_bindgen::generate!({ path: "../../wit", world: "access-policy" });

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: bump::BumpAllocator = bump::BumpAllocator::new();

/// The policy `configure` parsed. The host calls `configure` on every fresh instance before
/// its one `decide`, so the settings are parsed once per batch, never per device.
static POLICY: Mutex<Option<Policy>> = Mutex::new(None);

struct AccessPolicy;

impl Guest for AccessPolicy {
    fn configure(settings: String) -> Result<(), String> {
        let policy = settings::parse(&settings)?;
        *POLICY.lock().unwrap_or_else(PoisonError::into_inner) = Some(policy);
        Ok(())
    }

    fn decide(info: SyncInfo, devices: Vec<DeviceContext>) -> Vec<Decision> {
        let policy = POLICY.lock().unwrap_or_else(PoisonError::into_inner);
        // Deciding with some default instead would ignore the operator's scope and rules; a
        // trap makes the host's mistake visible and applies nothing.
        let policy = policy
            .as_ref()
            .expect("the host calls configure before decide");
        devices
            .iter()
            .map(|device| decision(policy.decide(device, info.now)))
            .collect()
    }
}

fn decision(outcome: Outcome) -> Decision {
    Decision {
        verdict: outcome.verdict,
        reason: outcome.reason.code().to_owned(),
        notify: outcome.notify,
    }
}

export!(AccessPolicy);
