//! What the decoder targets share: a listing page decoded the way the Exchange and Graph clients
//! decode it, so that the fuzzer reaches the code the clients run, isolation of unreadable records
//! included.

/// A page as the Exchange and Graph clients decode it (isolation of unreadable records
/// included).
pub use easgate::net::record::decode_page;

/// [`decode_page`], asserting that a failure says what went wrong: a value, or `None` for a
/// `BadField` with a problem. (The field path may be empty: a document whose top-level key is
/// "" fails at path "", found by the page targets; see docs/reliability.md.)
pub fn decode_or_say_why<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    match decode_page::<T>(body) {
        Ok(value) => Some(value),
        Err(easgate::net::BadField { field, problem }) => {
            assert!(
                !problem.is_empty(),
                "a bad field without a problem at {field:?}"
            );
            None
        }
    }
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
