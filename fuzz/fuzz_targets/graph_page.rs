//! Microsoft Graph answers: a listing page (`value`, `@odata.nextLink`) of managed devices or
//! directory objects, or a single user, through the client's decoder (`net::decode`). The first
//! byte picks the type. Any bytes give values or a `BadField` with a field path, never a panic.
#![no_main]

use easgate::graph::models::{DirectoryObject, ManagedDevice, User};
use easgate::net::{self, BadField};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// The shape of a listing page as Graph sends it.
#[derive(serde::Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    #[allow(dead_code)]
    next: Option<String>,
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match net::decode::<T>(body) {
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
            let _ = decode::<Page<ManagedDevice>>(body);
        }
        1 => {
            if let Some(p) = decode::<Page<DirectoryObject>>(body) {
                for o in &p.value {
                    let _ = (o.is_user(), o.is_group());
                }
            }
        }
        _ => {
            let _ = decode::<User>(body);
        }
    }
});
