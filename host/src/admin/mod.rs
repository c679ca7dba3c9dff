//! The admin HTTP API, the status page and `/metrics`, for operators and their monitoring.
//!
//! Everything here reads the store, the plugin registry and the scheduler; the only changes it
//! makes are a sync trigger (handed to the [`Scheduler`]) and the approval or rejection of a
//! held plan (recorded in the store; applying an approved plan is the sync runner's job).
//!
//! Every route but `/healthz` and the status page's static shell at `/` needs
//! `Authorization: Bearer TOKEN` (compared in constant time). The shell holds no data: it asks
//! for the token and calls the API with it. The API is described in `openapi.yaml` at the
//! repository root. Listen on loopback unless a proxy with TLS is in front: the token travels
//! in clear over plain HTTP (the configuration refuses another address without
//! `allow_remote = true`).
//!
//! Cross-site requests: the page sends the token in a header, never a cookie, so a page on
//! another site that makes the browser send a request sends it without the token (401). On
//! top of that a POST with a body must say `Content-Type: application/json` (a form can only
//! send form or plain-text types), no CORS header is ever sent, and every answer forbids
//! framing and content sniffing.

pub mod actions;
mod api;
mod error;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

pub use error::ApiError;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::plugin::PluginRegistry;
use crate::schedule::Scheduler;
use crate::store::Store;

/// The status page: one static file, no build step. It escapes everything it shows.
const STATUS_PAGE: &str = include_str!("page.html");

/// What the admin server serves from.
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<Store>,
    pub registry: Arc<PluginRegistry>,
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
    /// The bearer token every API call must carry.
    pub token: Secret,
    /// Wall clock in Unix seconds (injected so tests control it).
    pub now: fn() -> i64,
    /// Each organization's means to wipe or remove a device, by name.
    pub actions: Arc<std::collections::HashMap<String, actions::OrgActions>>,
    /// Device actions requested and waiting for their confirmation.
    pub confirmations: Arc<actions::Confirmations>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/organizations/{org}/sync", post(api::trigger_sync))
        .route("/api/v1/organizations/{org}/history", get(api::history))
        .route("/api/v1/organizations/{org}/notices", get(api::notices))
        .route(
            "/api/v1/organizations/{org}/device-actions",
            post(actions::request),
        )
        .route(
            "/api/v1/organizations/{org}/device-actions/confirm",
            post(actions::confirm),
        )
        .route("/api/v1/device-actions", get(actions::audit))
        .route("/api/v1/devices", get(api::devices))
        .route("/api/v1/devices/{id}", get(api::device))
        .route("/api/v1/plugins", get(api::plugins))
        .route("/api/v1/plans/{id}", get(api::plan))
        .route("/api/v1/plans/{id}/approve", post(api::approve))
        .route("/api/v1/plans/{id}/reject", post(api::reject))
        .route("/metrics", get(metrics::metrics))
        .fallback(api::not_found)
        .layer(middleware::from_fn(require_json_body))
        // `layer`, not `route_layer`: a wrong method or an unknown path is a 401 too without
        // the token, so that nothing about the API shows before authentication.
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .merge(api)
        .layer(middleware::map_response(protective_headers))
        .with_state(state)
}

/// Refuses a request body that is not JSON: a cross-site form can send
/// `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`, never
/// `application/json` (which a browser only sends cross-site after a CORS preflight this server
/// never grants). A request without a body (`approve`, `reject`) needs no type.
async fn require_json_body(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or("").trim());
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length != "0");
    let json = content_type.is_some_and(|t| t.eq_ignore_ascii_case("application/json"));
    if (has_body || content_type.is_some()) && !json {
        return ApiError::UnsupportedMediaType.into_response();
    }
    next.run(request).await
}

/// Headers on every answer: no framing (clickjacking of the page's buttons), no content-type
/// sniffing, and API answers are not kept in caches.
async fn protective_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "admin API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        // The scheme is case-insensitive (RFC 9110); the token is not.
        .and_then(|value| value.split_once(' '))
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token));
    let expected = state.token.expose().as_bytes();
    // Constant time over the token's bytes: only its length can leak, not how much matched.
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected)) => next.run(request).await,
        Some(_) => ApiError::Unauthorized("the bearer token is wrong").into_response(),
        None => ApiError::Unauthorized(
            "this needs an Authorization: Bearer header with the admin token",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page shows device names, plugin errors and user names: any of them may hold markup.
    /// It writes them with `textContent` only; none of the HTML-parsing sinks may creep in.
    #[test]
    fn the_status_page_never_parses_data_as_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!STATUS_PAGE.contains(sink), "the status page uses {sink}");
        }
        assert!(
            STATUS_PAGE.contains("sessionStorage"),
            "the token stays in the tab"
        );
    }

    /// Every route of [`router`] is described in the repository's `openapi.yaml`.
    #[test]
    fn every_route_is_in_the_openapi_description() {
        let spec = include_str!("../../../openapi.yaml");
        for path in [
            "/healthz",
            "/",
            "/api/v1/status",
            "/api/v1/organizations/{org}/sync",
            "/api/v1/organizations/{org}/device-actions",
            "/api/v1/organizations/{org}/device-actions/confirm",
            "/api/v1/device-actions",
            "/api/v1/devices",
            "/api/v1/devices/{id}",
            "/api/v1/plugins",
            "/api/v1/plans/{id}/approve",
            "/api/v1/plans/{id}/reject",
            "/metrics",
        ] {
            assert!(
                spec.contains(&format!("\n  {path}:\n")),
                "{path} is not in openapi.yaml"
            );
        }
    }
}
