//! Microsoft Graph answers: a listing page (`value`, `@odata.nextLink`) of managed devices or
//! directory objects, or a single user, decoded the way the client decodes every answer
//! (`easgate_fuzz::decode_page`: `net::decode`, then again after isolating unreadable records).
//! The first byte picks the type. Any bytes give values or a `BadField` that says what is wrong,
//! never a panic. Managed devices read one record at a time (`Checked<ManagedDevice>`) are the
//! `record_page` target's.
#![no_main]

use easgate::graph::models::{DirectoryObject, ManagedDevice, User};
use easgate::net::BadField;
use easgate_fuzz::{GraphPage, decode_page};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

fn decode<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match decode_page::<T>(body) {
        Ok(v) => Some(v),
        Err(BadField { field, problem }) => {
            // The path may be empty: a document whose top-level key is "" fails at path "" (found
            // by this target; see RELIABILITY.md). What went wrong must always be said.
            assert!(
                !problem.is_empty(),
                "a bad field without a problem at {field:?}"
            );
            None
        }
    }
}

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
