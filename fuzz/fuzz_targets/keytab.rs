//! Keytab files (MIT format, as `ktpass`, `ktutil`, `msktutil` and `kadmin ktadd` write them):
//! any bytes give the entries or a format error naming the byte offset, never a panic or an
//! allocation the file chooses; picking the sign-in key from what was read never panics either.
#![no_main]

use easgate::exchange::psrp::keytab;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match keytab::parse(data) {
        Ok(entries) => {
            let _ = format!("{entries:?}");
            if let Some(first) = entries.first() {
                let account = first.components.join("/");
                let _ = keytab::pick(&entries, &account, &first.realm.to_ascii_lowercase());
            }
            let _ = keytab::pick(&entries, "svc-easgate", "CONTOSO.COM");
        }
        Err(e) => {
            assert!(!e.what.is_empty(), "a format error without a reason");
            assert!(e.offset <= data.len(), "an offset past the end: {e:?}");
        }
    }
});
