//! The plugin manifest parser (`NAME.toml`): a `Manifest` or a `ManifestError`, never a panic;
//! an accepted manifest's limits and settings are usable.
#![no_main]

use easgate::plugin::Limits;
use easgate::plugin::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Manifest::parse(text, "fuzz.toml") {
        Ok(manifest) => {
            let _ = manifest.limits(Limits::default());
            let settings = manifest.settings_json();
            assert!(
                settings.starts_with('{'),
                "settings are not a JSON object: {settings}"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
