//! Microsoft Graph answers: a listing page (`value`, `@odata.nextLink`) of managed devices or
//! directory objects, or a single user, decoded the way the client decodes every answer
//! (`net::record::decode_page`: `net::decode`, then again after isolating unreadable records).
//! The first byte picks the type. Any bytes give values or a `BadField` that says what is wrong,
//! never a panic. Managed devices read one record at a time (`Checked<ManagedDevice>`) are the
//! `record_page` target's.
#![no_main]

use easgate::graph::models::{DirectoryObject, ManagedDevice, User};
use easgate_fuzz::{GraphPage, decode_or_say_why as decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let _ = decode::<GraphPage<ManagedDevice>>(body);
        }
        1 => {
            for o in decode::<GraphPage<DirectoryObject>>(body).map_or_else(Vec::new, |p| p.value) {
                let _ = (o.is_user(), o.is_group());
            }
        }
        _ => {
            let _ = decode::<User>(body);
        }
    }
});
