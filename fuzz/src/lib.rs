//! What the decoder targets share: a listing page decoded the way the Exchange and Graph clients
//! decode it, so that the fuzzer reaches the code the clients run, isolation of unreadable records
//! included.

/// A page as the Exchange and Graph clients decode it (isolation of unreadable records
/// included).
pub use easgate::net::record::decode_page;

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
