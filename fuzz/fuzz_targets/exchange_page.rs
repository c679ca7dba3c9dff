//! Exchange's `InvokeCommand` answers: one page (`value`, `@odata.nextLink`,
//! `adminapi.warnings`) decoded into each cmdlet's object type the way the client decodes it
//! (`net::record::decode_page`: `net::decode`, which names the failing field, then again after
//! isolating unreadable records). The first byte picks the type. Any bytes give objects or a
//! `BadField` that says what is wrong, never a panic. Device records read one at a time
//! (`Checked<MobileDevice>`) are the `record_page` target's.
#![no_main]

use easgate::exchange::models::{
    CasMailbox, ClientAccessService, ExchangeServer, Mailbox, MobileDevice, OrganizationSettings,
};
use easgate_fuzz::{ExchangePage, decode_or_say_why};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

fn page<T: DeserializeOwned>(body: &[u8]) -> Option<Vec<T>> {
    decode_or_say_why::<ExchangePage<T>>(body).map(|p| p.value)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            for d in page::<MobileDevice>(body).unwrap_or_default() {
                let _ = d.mailbox();
            }
        }
        1 => {
            let _ = page::<CasMailbox>(body);
        }
        2 => {
            let _ = page::<Mailbox>(body);
        }
        3 => {
            let _ = page::<OrganizationSettings>(body);
        }
        4 => {
            let _ = page::<ExchangeServer>(body);
        }
        _ => {
            for s in page::<ClientAccessService>(body).unwrap_or_default() {
                let _ = s.base_url();
            }
        }
    }
});
