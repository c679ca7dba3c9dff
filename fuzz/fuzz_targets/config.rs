//! The configuration parser: any text is either a `Config` or a `ConfigError` whose message
//! renders, never a panic.
#![no_main]

use std::path::Path;

use easgate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            // What start-up does next with a parsed file (secrets are not resolved: that reads
            // files and the environment); none of it may panic either.
            let _ = config.sync.builtin_policy_json();
            if let Some(notify) = &config.notify {
                for org in &config.organizations {
                    let _ = notify.for_organization(org);
                }
            }
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
