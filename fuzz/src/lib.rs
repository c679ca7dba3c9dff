//! What the decoder targets share: a listing page decoded the way the Exchange and Graph clients
//! decode it, so that the fuzzer reaches the code the clients run, isolation of unreadable records
//! included.

use easgate::net::{self, BadField, record};
use serde::de::DeserializeOwned;

/// A page as `ExchangeClient::decode_page` and `GraphClient::get` decode it: whole, or — when that
/// fails — once more after [`record::isolate_unreadable`] replaced the records whose bytes are not
/// JSON text, and the page's own error when that does not help either. Mirrors the clients' code
/// (private there); keep the two in step.
pub fn decode_page<P: DeserializeOwned>(raw: &[u8]) -> Result<P, BadField> {
    net::decode::<P>(raw).or_else(|b| {
        record::isolate_unreadable(raw)
            .and_then(|isolated| net::decode::<P>(&isolated).ok())
            .ok_or(b)
    })
}

/// The shape of an `InvokeCommand` page as Exchange sends it.
#[derive(serde::Deserialize)]
pub struct ExchangePage<T> {
    pub value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next: Option<String>,
    #[serde(rename = "adminapi.warnings", default)]
    pub warnings: Option<Vec<String>>,
}

/// The shape of a listing page as Graph sends it.
#[derive(serde::Deserialize)]
pub struct GraphPage<T> {
    pub value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next: Option<String>,
}
