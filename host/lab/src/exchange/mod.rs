//! The lab's Exchange: the admin API endpoint `POST /adminapi/beta/{tenantId}/InvokeCommand`
//! served by each CAS listener, in front of the cmdlets of `cmdlets`.
//!
//! One request goes through the steps the real service takes, in the same order, so that a client
//! meets the same failures: the CAS may be down or failing (control API); the tenant in the path
//! and the bearer token (audience Exchange) are checked; the body `{"CmdletInput":{"CmdletName":…,
//! "Parameters":{…}}}` is parsed and bound; a `$skiptoken` continues an earlier listing (or has
//! expired, when the control API says so); the tenant's concurrency slot is taken or the request
//! refused with 429 and `Retry-After`; the cmdlet runs; the answer waits until the modelled latency has elapsed since admission
//! (the lab's own work counted within it); the page is returned as
//! `{"@odata.context":…,"adminapi.warnings":[…],"value":[…],"@odata.nextLink":…}`.
//!
//! Submodules: `access` (how Exchange computes a device's access state), `filter` (OPATH
//! `-Filter`), `params` (parameter binding), `cmdlets`, `views` (the returned objects), `cost`
//! (latency model and concurrency limit), `timer` (when modelled latencies end), `error` (Exchange's error shape), `faults` (injected
//! by the control API), `powershell` (the same cmdlets behind on-premises remote PowerShell,
//! `/PowerShell/`, on the same listener).

pub(crate) mod access;
mod cmdlets;
pub mod cost;
mod error;
pub mod faults;
pub(crate) mod filter;
mod params;
pub(crate) mod powershell;
pub(crate) mod timer;
mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::login::{Audience, AuthError};
use crate::paging::{Position, query_hash};
use crate::random::Guid;
use crate::server::{CasMode, Shared};
use crate::utc::Utc;
use error::CmdletError;

/// A Client Access Server as `Get-ExchangeServer` / `Get-ClientAccessService` list it.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub name: String,
    pub fqdn: String,
    /// `http://127.0.0.1:port`, where this CAS listens.
    pub base_url: String,
    pub guid: Guid,
}

/// The largest page Exchange returns, and the default without `Prefer: odata.maxpagesize`.
const MAX_PAGE: usize = 1000;

#[derive(Clone)]
struct Cas {
    shared: Arc<Shared>,
    index: usize,
}

/// The router of CAS `index`.
pub(crate) fn router(shared: Arc<Shared>, index: usize) -> Router {
    Router::new()
        .route("/adminapi/beta/{tenant}/InvokeCommand", post(invoke))
        // IIS matches paths ignoring case; clients write both spellings, with or without the slash.
        .route("/PowerShell", post(powershell::handle))
        .route("/PowerShell/", post(powershell::handle))
        .route("/powershell", post(powershell::handle))
        .route("/powershell/", post(powershell::handle))
        .fallback(|| async {
            CmdletError::malformed("The requested resource does not exist.".to_owned())
                .with_status(StatusCode::NOT_FOUND)
        })
        .with_state(Cas { shared, index })
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "CmdletInput")]
    cmdlet_input: CmdletInput,
}

#[derive(Deserialize)]
struct CmdletInput {
    #[serde(rename = "CmdletName")]
    cmdlet_name: String,
    #[serde(rename = "Parameters", default)]
    parameters: Option<Map<String, Value>>,
}

/// `Prefer: odata.maxpagesize=N` (among other preferences), if given.
fn max_page_size(headers: &HeaderMap) -> Option<usize> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("odata.maxpagesize")
                .then(|| v.trim().trim_matches('"').parse::<usize>().ok())
                .flatten()
        })
}

impl CmdletError {
    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

async fn invoke(
    State(cas): State<Cas>,
    Path(tenant): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &cas.shared;
    let server = &shared.servers[cas.index];
    let mode = shared.cas_mode(cas.index);
    if let CasMode::Failing { status } = mode {
        shared.counters.exchange_faulted();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return CmdletError::server_fault(status, &server.fqdn).into_response();
    }
    let extra = match mode {
        CasMode::Slow { extra_ms } => Duration::from_millis(extra_ms),
        _ => Duration::ZERO,
    };
    // A flaky CAS draws once per request whether this one fails, and when.
    let (fail_before, fail_after) = match mode {
        CasMode::Flaky {
            status,
            fail_per_mille,
            seed,
            after_apply,
        } => {
            let n = shared.cas[cas.index]
                .flaky_draws
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let fails =
                crate::random::mix(seed ^ crate::random::mix(n)) % 1000 < u64::from(fail_per_mille);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match (fails, after_apply) {
                (false, _) => (None, None),
                (true, false) => (Some(status), None),
                (true, true) => (None, Some(status)),
            }
        }
        _ => (None, None),
    };
    if let Some(status) = fail_before {
        shared.counters.exchange_faulted();
        return CmdletError::server_fault(status, &server.fqdn).into_response();
    }

    let rejected = |e: CmdletError| {
        shared.counters.exchange_rejected();
        e.into_response()
    };
    if !shared.tenant.is(&tenant) {
        return rejected(CmdletError::unauthorized(&format!(
            "The tenant '{tenant}' in the request URL is not the tenant of the access token."
        )));
    }
    if let Err(e) = shared.tokens.check(&headers, Audience::Exchange) {
        return rejected(CmdletError::unauthorized(match e {
            AuthError::Missing => "The request has no bearer token.",
            AuthError::Unknown => "The access token is invalid.",
            AuthError::Expired => "The access token has expired.",
            AuthError::WrongAudience => {
                "The access token's audience is not the Exchange admin API."
            }
        }));
    }
    let input = match serde_json::from_slice::<Body>(&body) {
        Ok(b) => b.cmdlet_input,
        Err(e) => {
            return rejected(CmdletError::malformed(format!(
                "The request body is not a valid CmdletInput: {e}"
            )));
        }
    };
    if let Err(e) = client_headers(shared, &headers, &input) {
        return rejected(e);
    }

    let Some(_slot) = shared.gate.try_enter() else {
        shared.counters.exchange_throttled();
        let base = shared.latency().cost(&input.cmdlet_name, 0) + extra;
        let retry = base.as_secs().max(1);
        return CmdletError::too_many_concurrent(shared.gate.limit(), retry).into_response();
    };

    // The model's latency is the whole time the command takes on the server, its own work
    // included: the answer is due that long after admission, however long the lab itself took
    // to run the cmdlet (the lab's CPU time is not Exchange's, nor the client's), and on time
    // to a fraction of a millisecond (`timer`).
    let admitted = std::time::Instant::now();
    let page_size = max_page_size(&headers).map(|n| n.clamp(1, MAX_PAGE));
    let (name, result) = execute(shared, &cas, &input, &query, page_size.unwrap_or(MAX_PAGE));
    let objects = result.as_ref().map_or(0, |o| o.count);
    let latency = shared.latency().cost(&name, objects);
    shared.timer.sleep_until(admitted + latency + extra).await;
    shared
        .counters
        .command(cas.index, &name, objects, latency, result.is_err());

    if let Some(status) = fail_after {
        // The cmdlet ran (and is counted); its answer is what gets lost.
        shared.counters.exchange_faulted();
        return CmdletError::server_fault(status, &server.fqdn).into_response();
    }
    let mut out = match result {
        Ok(out) => out,
        Err(e) => return e.into_response(),
    };
    if name == "Get-MobileDevice"
        && let Some(broken) = shared
            .malformed
            .rewrite_array(crate::malformed::Service::Exchange, &out.value)
    {
        out.value = broken;
    }
    let mut json = Vec::with_capacity(out.value.len() + 512);
    let context = format!(
        "{}/adminapi/beta/{tenant}/$metadata#Collection(Exchange.GenericHashTable)",
        server.base_url
    );
    json.extend_from_slice(b"{\"@odata.context\":");
    json.extend_from_slice(&serde_json::to_vec(&context).expect("string"));
    json.extend_from_slice(
        b",\"adminapi.warnings@odata.type\":\"#Collection(String)\",\"adminapi.warnings\":",
    );
    json.extend_from_slice(&serde_json::to_vec(&out.warnings).expect("strings"));
    json.extend_from_slice(b",\"value\":");
    json.extend_from_slice(&out.value);
    if let Some(next) = out.next {
        let token = shared.pages.encode(next, request_hash(&name, &input));
        let link = format!(
            "{}/adminapi/beta/{tenant}/InvokeCommand?$skiptoken={token}",
            server.base_url
        );
        json.extend_from_slice(b",\"@odata.nextLink\":");
        json.extend_from_slice(&serde_json::to_vec(&link).expect("string"));
    }
    json.push(b'}');
    let mut response = (
        [(
            header::CONTENT_TYPE,
            "application/json;odata.metadata=minimal",
        )],
        json,
    )
        .into_response();
    if let Some(n) = page_size {
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_str(&format!("odata.maxpagesize={n}")).expect("ascii"),
        );
    }
    response
}

/// The headers the ExchangeOnlineManagement module sends beside the body.
const CLIENT_HEADERS: [&str; 4] = [
    "X-AnchorMailbox",
    "X-CmdletName",
    "X-ResponseFormat",
    "X-ClientApplication",
];

/// Records the module's client headers and checks them: an `X-CmdletName` that names another
/// cmdlet than the body is refused (a client bug whatever the real service makes of it: the
/// header is read without the body, so the two must agree), and the lab answers only
/// `X-ResponseFormat: json` (the module's other format, `clixml`, is for its own
/// deserializer). Absent headers are accepted, as clients that send none are served by the
/// real service.
fn client_headers(
    shared: &Shared,
    headers: &HeaderMap,
    input: &CmdletInput,
) -> Result<(), CmdletError> {
    let sent = CLIENT_HEADERS.map(|name| (name, headers.get(name).and_then(|v| v.to_str().ok())));
    shared.counters.client_headers(sent);
    if let Some(named) = headers.get("X-CmdletName") {
        let named = named.to_str().unwrap_or_default();
        if !named.eq_ignore_ascii_case(&input.cmdlet_name) {
            return Err(CmdletError::malformed(format!(
                "The X-CmdletName header '{named}' does not match the CmdletName '{}' of the request body.",
                input.cmdlet_name
            )));
        }
    }
    if let Some(format) = headers.get("X-ResponseFormat") {
        let format = format.to_str().unwrap_or_default();
        if !format.eq_ignore_ascii_case("json") {
            return Err(CmdletError::malformed(format!(
                "The lab answers X-ResponseFormat 'json' only, not '{format}'."
            )));
        }
    }
    Ok(())
}

/// Identifies a listing for its page tokens: the cmdlet and its parameters as sent.
fn request_hash(name: &str, input: &CmdletInput) -> u64 {
    let params = serde_json::to_string(&input.parameters).expect("json value");
    query_hash(&[&name.to_ascii_lowercase(), &params])
}

/// Binds and runs the cmdlet; returns its canonical name (for counters and latency) and result.
fn execute(
    shared: &Shared,
    cas: &Cas,
    input: &CmdletInput,
    query: &HashMap<String, String>,
    page_size: usize,
) -> (String, Result<cmdlets::Output, CmdletError>) {
    let Some(spec) = cmdlets::spec(&input.cmdlet_name) else {
        return (
            input.cmdlet_name.clone(),
            Err(CmdletError::unknown_cmdlet(&input.cmdlet_name)),
        );
    };
    let name = spec.name.to_owned();
    let run = || {
        let args = params::bind(spec, input.parameters.as_ref())?;
        let position = match query.get("$skiptoken") {
            None => Position::default(),
            Some(_) if shared.exchange_faults.expire_link(spec.name) => {
                return Err(CmdletError::expired_skip_token());
            }
            Some(token) => shared
                .pages
                .decode(token, request_hash(spec.name, input))
                .ok_or_else(|| {
                    CmdletError::malformed(
                        "The skip token is not valid for this request.".to_owned(),
                    )
                })?,
        };
        let env = cmdlets::Env {
            servers: &shared.servers,
            server: &shared.servers[cas.index].fqdn,
            now: Utc::now(),
            position,
            page_size,
            settings_guid: shared.settings_guid,
        };
        cmdlets::run(&shared.org, spec, &args, &env)
    };
    (name, run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_page_size_among_other_preferences() {
        let mut h = HeaderMap::new();
        h.insert(
            "prefer",
            HeaderValue::from_static("return=minimal, odata.maxpagesize=250"),
        );
        assert_eq!(max_page_size(&h), Some(250));
        h.insert(
            "prefer",
            HeaderValue::from_static("odata.maxpagesize=\"7\""),
        );
        assert_eq!(max_page_size(&h), Some(7));
        assert_eq!(max_page_size(&HeaderMap::new()), None);
    }
}
