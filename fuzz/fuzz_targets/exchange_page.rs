//! Exchange's `InvokeCommand` answers: one page (`value`, `@odata.nextLink`,
//! `adminapi.warnings`) decoded into each cmdlet's object type through the client's decoder
//! (`net::decode`, which names the failing field). The first byte picks the type. Any bytes give
//! objects or a `BadField` with a field path, never a panic.
#![no_main]

use easgate::exchange::models::{
    CasMailbox, ClientAccessService, ExchangeServer, Mailbox, MobileDevice, OrganizationSettings,
};
use easgate::net::{self, BadField};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// The shape of a page as Exchange sends it.
#[derive(serde::Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    #[allow(dead_code)]
    next: Option<String>,
    #[serde(rename = "adminapi.warnings", default)]
    #[allow(dead_code)]
    warnings: Option<Vec<String>>,
}

fn page<T: DeserializeOwned>(body: &[u8]) {
    match net::decode::<Page<T>>(body) {
        Ok(p) => {
            let _ = p.value.len();
        }
        Err(BadField { field, problem }) => {
            // The path may be empty: a document whose top-level key is "" fails at path "" (found
            // by this target; see RELIABILITY.md). What went wrong must always be said.
            assert!(
                !problem.is_empty(),
                "a bad field without a problem at {field:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            page::<MobileDevice>(body);
            if let Ok(p) = net::decode::<Page<MobileDevice>>(body) {
                for d in &p.value {
                    let _ = d.mailbox();
                }
            }
        }
        1 => page::<CasMailbox>(body),
        2 => page::<Mailbox>(body),
        3 => page::<OrganizationSettings>(body),
        4 => page::<ExchangeServer>(body),
        _ => {
            page::<ClientAccessService>(body);
            if let Ok(p) = net::decode::<Page<ClientAccessService>>(body) {
                for s in &p.value {
                    let _ = s.base_url();
                }
            }
        }
    }
});
