//! Microsoft Graph: the Intune records of devices (`managedDevices`) and the directory (group
//! members, users), with a client-credentials token.
//!
//! Every request passes the connector's own budget (`budget`) and carries a cached token renewed
//! before it expires; a 401 renews it once and resends. 429 and 503/504 wait `Retry-After` (or
//! back off) and resend; connection failures and other 5xx back off and resend a few times (all
//! requests here are reads). Listings follow `@odata.nextLink` as an opaque URL — checked to be
//! on the Graph host, so the token never travels elsewhere — and start over when a link has
//! expired (`Directory_ExpiredPageToken`), at most twice. Answers that don't fit (`models`)
//! are [`GraphError::BadResponse`]s naming the endpoint and the field.

mod budget;
pub mod models;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::Organization;
use crate::metrics::{Metrics, RequestStatus, ServiceCounters};
use crate::net::record::Checked;
use crate::net::token::{TokenCache, TokenError};
use crate::net::{self, BadField, HttpSettings, SetupError};
use crate::timestamp::Timestamp;
pub use budget::WINDOW as BUDGET_WINDOW;
use models::{
    DirectoryObject, MANAGED_DEVICE_SELECT, MANAGED_DEVICE_STATE_SELECT, ManagedDevice,
    ManagedDeviceState, User,
};

/// Attempts of one request (throttled or failed) before giving up.
const ATTEMPTS: u32 = 8;
/// Times a listing starts over after a page link expired, before giving up.
const LISTING_RESTARTS: u32 = 2;

/// Why a Graph request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("no Graph token: {0}")]
    Token(#[from] TokenError),
    #[error("GET {endpoint}: failed after {attempts} attempts: {reason}")]
    Unavailable {
        endpoint: String,
        attempts: u32,
        reason: String,
    },
    #[error("GET {endpoint}: still throttled after {attempts} attempts")]
    Throttled { endpoint: String, attempts: u32 },
    /// Graph refused the request (`error.code`, `error.message`).
    #[error("GET {endpoint}: HTTP {status} {code}: {message}")]
    Service {
        endpoint: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("GET {endpoint}: bad response: {field}: {problem}")]
    BadResponse {
        endpoint: String,
        field: String,
        problem: String,
    },
}

impl GraphError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, GraphError::Service { status: 404, .. })
    }

    /// Graph refused a page link because its token expired.
    pub fn is_expired_page(&self) -> bool {
        matches!(self, GraphError::Service { status: 400, code, .. } if code == "Directory_ExpiredPageToken")
    }
}

#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// The Graph client of one organization.
#[derive(Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    settings: HttpSettings,
    /// `https://graph.microsoft.com`, no trailing slash.
    base: String,
    origin: String,
    tokens: TokenCache,
    budget: budget::RequestBudget,
    /// The organization's request and throttling series, resolved once; set once by the
    /// daemon ([`GraphClient::observe`]), unset for one-off CLI syncs.
    observer: OnceLock<ServiceCounters>,
    /// HTTP requests sent (every attempt, the token endpoint's not included), for a sync's
    /// summary.
    requests: AtomicU64,
}

/// Percent-encodes a query value or path segment (RFC 3986 unreserved characters and `$,:'`
/// stay as they are, which keeps OData expressions readable in logs).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~$,:'".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl GraphClient {
    /// Resolves the client secret and builds the HTTP client.
    pub fn new(org: &Organization, http: &HttpSettings) -> Result<Self, SetupError> {
        let g = &org.graph;
        for (field, url) in [("graph_url", &g.graph_url), ("login_url", &g.login_url)] {
            http.check_url(url).map_err(|message| SetupError::Url {
                field: format!("organization `{}`: graph.{field}", org.name),
                message,
            })?;
        }
        let base = g.graph_url.trim_end_matches('/').to_owned();
        let origin = reqwest::Url::parse(&base)
            .map_err(|e| SetupError::Url {
                field: format!("organization `{}`: graph.graph_url", org.name),
                message: e.to_string(),
            })?
            .origin()
            .ascii_serialization();
        let secret = g
            .client_secret
            .resolve()
            .map_err(|source| SetupError::Secret {
                field: format!("organization `{}`: graph.client_secret", org.name),
                source,
            })?;
        let client = http.client()?;
        Ok(GraphClient {
            tokens: TokenCache::new(
                client.clone(),
                &g.login_url,
                &g.tenant,
                &g.client_id,
                secret,
                &g.scope,
            ),
            http: client,
            settings: http.clone(),
            base,
            origin,
            budget: budget::RequestBudget::new(g.request_budget),
            observer: OnceLock::new(),
            requests: AtomicU64::new(0),
        })
    }

    /// HTTP requests this client has sent to Graph: every attempt, throttled ones included.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts this client's requests and throttling answers in `metrics` under `org` from now
    /// on; a second call changes nothing.
    pub fn observe(&self, metrics: Arc<Metrics>, org: &str) {
        let _ = self.observer.set(metrics.service(org, "graph"));
    }

    /// Counts an attempt by what it came to (`easgate_requests_total`).
    fn count_request(&self, status: RequestStatus) {
        if let Some(counters) = self.observer.get() {
            counters.request(status);
        }
    }

    /// Every managed device, with only the fields the connector reads.
    pub async fn managed_devices(&self) -> Result<Vec<ManagedDevice>, GraphError> {
        self.list(&managed_path(ManagedDevices::All)).await
    }

    /// The managed devices that synced with Intune at or after `since` (quick sync).
    pub async fn managed_devices_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<ManagedDevice>, GraphError> {
        self.list(&managed_path(ManagedDevices::SyncedSince(since)))
            .await
    }

    /// The managed devices whose `easDeviceId` is `eas_device_id` (a quick sync's new
    /// partnership whose Intune record did not change lately). Intune compares ignoring case.
    pub async fn managed_devices_by_eas_id(
        &self,
        eas_device_id: &str,
    ) -> Result<Vec<ManagedDevice>, GraphError> {
        self.list(&managed_path(ManagedDevices::EasDeviceId(eas_device_id)))
            .await
    }

    /// Every managed device's id, `easDeviceId`, compliance and management state: a quick
    /// sync's look for what Intune changed without the device checking in (those changes
    /// leave `lastSyncDateTime` where it was). Four short fields of the fifteen the sync reads.
    pub async fn managed_device_states(&self) -> Result<Vec<ManagedDeviceState>, GraphError> {
        self.list(&format!(
            "/v1.0/deviceManagement/managedDevices?$select={}",
            encode(MANAGED_DEVICE_STATE_SELECT)
        ))
        .await
    }

    /// The managed devices `which` selects, read one record at a time: a record that cannot be
    /// read is returned as such instead of failing its page (see `net::record`).
    pub async fn managed_device_records(
        &self,
        which: ManagedDevices<'_>,
    ) -> Result<Vec<Checked<ManagedDevice>>, GraphError> {
        self.list(&managed_path(which)).await
    }

    /// Every member of a group, nested groups' members included (and the nested groups).
    pub async fn group_members(&self, group_id: &str) -> Result<Vec<DirectoryObject>, GraphError> {
        self.list(&format!(
            "/v1.0/groups/{}/transitiveMembers?$select=id,userPrincipalName,displayName,preferredLanguage&$top=999",
            encode(group_id)
        ))
        .await
    }

    /// The groups a user is in, directly or through nested groups.
    pub async fn member_of(&self, user: &str) -> Result<Vec<DirectoryObject>, GraphError> {
        self.list(&format!(
            "/v1.0/users/{}/transitiveMemberOf?$select=id,displayName",
            encode(user)
        ))
        .await
    }

    /// A user by object id or UPN.
    pub async fn user(&self, user: &str) -> Result<User, GraphError> {
        let url = format!(
            "{}/v1.0/users/{}?$select=id,userPrincipalName,mail,displayName,preferredLanguage",
            self.base,
            encode(user)
        );
        self.get(&url).await
    }

    /// Every page of a listing. A next link found expired starts the listing over (a page
    /// token cannot be renewed, and the records already read may have moved on).
    async fn list<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<Vec<T>, GraphError> {
        let first = format!("{}{path_and_query}", self.base);
        let mut restarts = 0;
        'listing: loop {
            let mut url = first.clone();
            let mut out = Vec::new();
            loop {
                let page: Page<T> = match self.get(&url).await {
                    Ok(page) => page,
                    Err(e)
                        if url != first && e.is_expired_page() && restarts < LISTING_RESTARTS =>
                    {
                        restarts += 1;
                        tracing::warn!(
                            endpoint = %endpoint(&first),
                            "a Graph page link expired; starting the listing over: {e}"
                        );
                        continue 'listing;
                    }
                    Err(e) => return Err(e),
                };
                crate::model::progress::page_listed();
                out.extend(page.value);
                match page.next {
                    None => return Ok(out),
                    Some(next) => {
                        self.check_next(&url, &next)?;
                        url = next;
                    }
                }
            }
        }
    }

    /// A next link is followed as given, but only on the Graph host.
    fn check_next(&self, from: &str, next: &str) -> Result<(), GraphError> {
        let bad = |problem: String| GraphError::BadResponse {
            endpoint: endpoint(from),
            field: "@odata.nextLink".into(),
            problem,
        };
        let url = reqwest::Url::parse(next).map_err(|e| bad(format!("not a URL: {e}")))?;
        let origin = url.origin().ascii_serialization();
        if !origin.eq_ignore_ascii_case(&self.origin) {
            return Err(bad(format!(
                "`{origin}` is not the Graph host {}",
                self.origin
            )));
        }
        self.settings.check_url(next).map_err(bad)
    }

    /// One GET, retried through throttling, token expiry and transient failures.
    async fn get<T: DeserializeOwned>(&self, url: &str) -> Result<T, GraphError> {
        let endpoint = endpoint(url);
        // A 401 renews the token once; two in a row (a fresh token refused too) is an error.
        let mut renewed: Option<crate::net::token::Token> = None;
        let mut attempt = 0u32;
        let mut throttled = 0u32;
        loop {
            attempt += 1;
            self.budget.take().await;
            // From the cache on every attempt: a throttling wait may outlast the token.
            let (token, just_renewed) = match renewed.take() {
                Some(fresh) => (fresh, true),
                None => (self.tokens.token().await?, false),
            };
            self.requests.fetch_add(1, Ordering::Relaxed);
            let (status, headers, body) = match self.send(url, &token).await {
                Exchanged::Answered(status, headers, body) => (status, headers, body),
                Exchanged::NotSent(reason) => {
                    self.count_request(RequestStatus::Failed);
                    if attempt >= ATTEMPTS {
                        return Err(GraphError::Unavailable {
                            endpoint,
                            attempts: attempt,
                            reason,
                        });
                    }
                    tracing::debug!(%endpoint, "Graph request failed, retrying: {reason}");
                    pause_before_retry(attempt).await;
                    continue;
                }
                Exchanged::BrokeOff(reason) if attempt < ATTEMPTS => {
                    self.count_request(RequestStatus::Failed);
                    tracing::debug!(%endpoint, "Graph answer broke off, retrying: {reason}");
                    continue;
                }
                Exchanged::BrokeOff(reason) => {
                    self.count_request(RequestStatus::Failed);
                    return Err(GraphError::Unavailable {
                        endpoint,
                        attempts: attempt,
                        reason,
                    });
                }
            };
            self.count_request(request_status(status));
            if status.is_success() {
                return page(endpoint, &headers, &body[..]);
            }
            let code = status.as_u16();
            if code == 401 && !just_renewed {
                renewed = Some(self.tokens.renew(&token).await?);
                attempt -= 1;
                continue;
            }
            if matches!(code, 429 | 503 | 504) {
                if let Some(counters) = self.observer.get() {
                    counters.throttled();
                }
                throttled += 1;
                if throttled >= ATTEMPTS {
                    return Err(GraphError::Throttled {
                        endpoint,
                        attempts: throttled,
                    });
                }
                let wait = net::throttle_delay(net::retry_after(&headers), throttled - 1);
                tracing::debug!(%endpoint, ?wait, "Graph throttled");
                tokio::time::sleep(wait).await;
                attempt -= 1;
                continue;
            }
            if status.is_server_error() && attempt < ATTEMPTS {
                pause_before_retry(attempt).await;
                continue;
            }
            return Err(service_error(endpoint, code, &headers, &body[..]));
        }
    }

    /// Sends one GET of `url` with `token` and reads the answer whole.
    async fn send(
        &self,
        url: &str,
        token: &crate::net::token::Token,
    ) -> Exchanged<impl std::ops::Deref<Target = [u8]> + use<>> {
        let sent = self
            .http
            .get(url)
            .bearer_auth(token.value.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Exchanged::NotSent(net::describe(&e)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        match response.bytes().await {
            Ok(body) => Exchanged::Answered(status, headers, body),
            Err(e) => Exchanged::BrokeOff(net::describe(&e)),
        }
    }
}

/// What became of one GET (`B`: the body's bytes, as the HTTP client holds them).
enum Exchanged<B> {
    /// The status, headers and whole body of the answer.
    Answered(reqwest::StatusCode, reqwest::header::HeaderMap, B),
    /// No answer (connection refused, timed out, …), and why.
    NotSent(String),
    /// The answer broke off before its body was read, and why.
    BrokeOff(String),
}

/// What an answer with `status` counts as (`easgate_requests_total`).
fn request_status(status: reqwest::StatusCode) -> RequestStatus {
    match status.as_u16() {
        200..=299 => RequestStatus::Ok,
        401 => RequestStatus::Unauthorized,
        429 | 503 | 504 => RequestStatus::Throttled,
        500..=599 => RequestStatus::Failed,
        _ => RequestStatus::Refused,
    }
}

/// The pause before retrying a request that failed `attempt` times.
async fn pause_before_retry(attempt: u32) {
    let wait = net::backoff(
        attempt - 1,
        Duration::from_millis(200),
        Duration::from_secs(10),
    );
    tokio::time::sleep(wait).await;
}

/// A successful answer's page. Records whose bytes are not JSON text fail the whole page,
/// unless the listing reads its records one at a time (`net::record`).
fn page<T: DeserializeOwned>(
    endpoint: String,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<T, GraphError> {
    let bad = |b: BadField| GraphError::BadResponse {
        endpoint: endpoint.clone(),
        field: b.field,
        problem: b.problem,
    };
    net::expect_json(headers).map_err(bad)?;
    crate::net::record::decode_page::<T>(body).map_err(bad)
}

/// The error of an answer with status `code` that is neither success nor retried: Graph's
/// own error object, or a bad answer saying what came instead.
fn service_error(
    endpoint: String,
    code: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> GraphError {
    match net::decode::<ErrorBody>(body) {
        Ok(e) => GraphError::Service {
            endpoint,
            status: code,
            code: e.error.code,
            message: net::first_line(&e.error.message),
        },
        Err(_) => GraphError::BadResponse {
            endpoint,
            field: "error".into(),
            problem: format!(
                "HTTP {code} without Graph's error object ({} bytes of {})",
                body.len(),
                headers
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("no content type")
            ),
        },
    }
}

/// Which managed devices to list.
#[derive(Debug, Clone, Copy)]
pub enum ManagedDevices<'a> {
    All,
    /// Those that synced with Intune at or after this time.
    SyncedSince(Timestamp),
    /// Those whose `easDeviceId` is this one.
    EasDeviceId(&'a str),
}

fn managed_path(which: ManagedDevices<'_>) -> String {
    let filter = match which {
        ManagedDevices::All => None,
        ManagedDevices::SyncedSince(since) => Some(format!("lastSyncDateTime ge {since}")),
        ManagedDevices::EasDeviceId(id) => {
            Some(format!("easDeviceId eq '{}'", id.replace('\'', "''")))
        }
    };
    let mut path = format!(
        "/v1.0/deviceManagement/managedDevices?$select={}",
        encode(MANAGED_DEVICE_SELECT)
    );
    if let Some(f) = filter {
        path.push_str("&$filter=");
        path.push_str(&encode(&f));
    }
    path
}

/// The path of a URL, without its query (which can be long and carries skip tokens).
fn endpoint(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.path().to_owned(),
        Err(_) => url.split('?').next().unwrap_or(url).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_odata_and_upns() {
        assert_eq!(
            encode("lastSyncDateTime ge 2025-01-01T00:00:00Z"),
            "lastSyncDateTime%20ge%202025-01-01T00:00:00Z"
        );
        assert_eq!(encode("a_b#EXT#@x.com"), "a_b%23EXT%23%40x.com");
        assert_eq!(
            endpoint("http://h/v1.0/users/x?$select=id"),
            "/v1.0/users/x"
        );
    }
}
