//! The lab's Entra ID: `POST /{tenant}/oauth2/v2.0/token` (client credentials) and the bearer
//! tokens it issues, which both the Exchange and the Graph side check; and the discovery
//! documents an MSAL-based client (azure-identity, the Graph SDKs) reads before it asks for a
//! token: OpenID Connect discovery `GET /{tenant}/v2.0/.well-known/openid-configuration` (where
//! the token endpoint is) and instance discovery `GET /common/discovery/instance` (whether an
//! authority host is known; MSAL asks it of its own well-known host unless told otherwise, so
//! only a client pointed at it explicitly reaches the lab's).
//!
//! As with the real services a token is for one resource: a token asked for with scope
//! `https://graph.microsoft.com/.default` opens Graph, one for
//! `https://outlook.office365.com/.default` opens the Exchange admin API, and neither opens the
//! other. Tokens are opaque random strings with a lifetime (`expires_in` 3599 s by default; tests
//! shorten it to exercise renewal). Failures answer with Entra's error shape: `error`,
//! `error_description` starting with the `AADSTS` code, `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use crate::random::{Guid, Rng, mix};
use crate::server::Shared;
use crate::utc::Utc;

/// The resource a token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Graph,
    Exchange,
}

impl Audience {
    /// The client-credentials scope that asks for a token of this audience.
    pub fn scope(self) -> &'static str {
        match self {
            Audience::Graph => "https://graph.microsoft.com/.default",
            Audience::Exchange => "https://outlook.office365.com/.default",
        }
    }

    fn resource(self) -> &'static str {
        self.scope().trim_end_matches("/.default")
    }
}

#[derive(Debug, Clone, Copy)]
struct Issued {
    audience: Audience,
    /// `None`: never expires (the static Exchange token handed to `bearer` configs).
    expires: Option<Instant>,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthError {
    Missing,
    Unknown,
    Expired,
    WrongAudience,
}

/// Every token the lab issued.
#[derive(Debug)]
pub(crate) struct TokenStore {
    issued: Mutex<HashMap<String, Issued>>,
    next: AtomicU64,
    key: u64,
    lifetime_secs: AtomicU64,
}

/// Entra's default access token lifetime as `expires_in` reports it.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

impl TokenStore {
    pub fn new(seed: u64, lifetime: Duration) -> Self {
        Self {
            issued: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            key: mix(seed ^ 0x70c3_e000_0000_0007),
            lifetime_secs: AtomicU64::new(lifetime.as_secs().max(1)),
        }
    }

    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lifetime_secs
            .store(lifetime.as_secs().max(1), Ordering::Release);
    }

    fn lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetime_secs.load(Ordering::Acquire))
    }

    /// Issues a token; `expires` false for the static token of `bearer` configs.
    pub fn issue(&self, audience: Audience, expires: bool) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let token = format!("lab-{:016x}{:016x}", mix(self.key ^ n), mix(!self.key ^ n));
        let now = Instant::now();
        let mut issued = self.issued.lock().expect("token map");
        // Keep the map bounded for clients that fetch a token per request.
        if n % 4096 == 4095 {
            issued.retain(|_, i| i.expires.is_none_or(|e| e > now));
        }
        issued.insert(
            token.clone(),
            Issued {
                audience,
                expires: expires.then(|| now + self.lifetime()),
            },
        );
        token
    }

    /// Checks the `Authorization: Bearer …` header for a live token of `audience`.
    pub fn check(&self, headers: &HeaderMap, audience: Audience) -> Result<(), AuthError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let issued = *self
            .issued
            .lock()
            .expect("token map")
            .get(token)
            .ok_or(AuthError::Unknown)?;
        if issued.expires.is_some_and(|e| e <= Instant::now()) {
            return Err(AuthError::Expired);
        }
        if issued.audience != audience {
            return Err(AuthError::WrongAudience);
        }
        Ok(())
    }

    fn trace_ids(&self) -> (Guid, Guid) {
        let mut rng = Rng::stream(self.key, self.next.fetch_add(1, Ordering::Relaxed));
        (rng.guid(), rng.guid())
    }
}

/// An Entra token endpoint error.
fn aad_error(
    store: &TokenStore,
    status: StatusCode,
    error: &str,
    code: u32,
    text: String,
) -> Response {
    let (trace, correlation) = store.trace_ids();
    let now = Utc::now();
    let stamp = now.to_string().replace('T', " ");
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {stamp}"
        ),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace.to_string(),
        "correlation_id": correlation.to_string(),
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, axum::Json(body)).into_response()
}

/// The tenant segment of a login path: the tenant's GUID or one of its domains (Entra's
/// `common` / `organizations` are for user sign-in, which the lab does not do).
fn tenant_not_found(store: &TokenStore, tenant: &str) -> Response {
    aad_error(
        store,
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90_002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`: Entra's v2.0 OpenID Connect metadata
/// for the tenant, its endpoints on the lab's login listener and named by the tenant's GUID
/// whichever name the request used, as Entra does. The lab issues opaque tokens, not signed
/// JWTs, so `jwks_uri` lists no keys.
pub(crate) async fn openid_configuration(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    shared.counters.graph_request("openid-configuration");
    if !shared.tenant.is(&tenant) {
        return tenant_not_found(&shared.tokens, &tenant);
    }
    let base = &shared.graph_url;
    let tid = shared.tenant.tenant_id;
    let host = base.split_once("://").map_or(base.as_str(), |(_, h)| h);
    axum::Json(json!({
        "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tid}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "tid", "ver"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": host,
        "cloud_graph_host_name": host,
        "msgraph_host": host,
    }))
    .into_response()
}

/// `GET /{tenant}/discovery/v2.0/keys`: no keys (the lab's tokens are opaque).
pub(crate) async fn keys(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    shared.counters.graph_request("keys");
    if !shared.tenant.is(&tenant) {
        return tenant_not_found(&shared.tokens, &tenant);
    }
    axum::Json(json!({"keys": []})).into_response()
}

/// `GET /common/discovery/instance?api-version=…&authorization_endpoint=…`: Entra's answer to
/// "is this authority known", for an authorization endpoint on the lab's own login host; any
/// other host is `invalid_instance`, as Entra answers an authority it does not know.
pub(crate) async fn instance_discovery(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    shared.counters.graph_request("instance-discovery");
    let store = &shared.tokens;
    let base = &shared.graph_url;
    let Some(endpoint) = query.get("authorization_endpoint") else {
        return aad_error(
            store,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_144,
            "The request body must contain the following parameter: 'authorization_endpoint'."
                .to_owned(),
        );
    };
    // `{base}/{tenant}/oauth2/v2.0/authorize`, `{base}/{tenant}/oauth2/authorize`.
    let tenant = endpoint
        .strip_prefix(base.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split('/').next())
        .filter(|t| !t.is_empty());
    let Some(tenant) = tenant else {
        return aad_error(
            store,
            StatusCode::BAD_REQUEST,
            "invalid_instance",
            50_049,
            "Unknown or invalid instance.".to_owned(),
        );
    };
    let host = base.split_once("://").map_or(base.as_str(), |(_, h)| h);
    axum::Json(json!({
        "tenant_discovery_endpoint": format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": query.get("api-version").map_or("1.1", String::as_str),
        "metadata": [{
            "preferred_network": host,
            "preferred_cache": host,
            "aliases": [host],
        }],
    }))
    .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    shared.counters.graph_request("token");
    // Entra reads a missing or non-form body as a body without parameters.
    let form = form.map(|f| f.0).unwrap_or_default();
    let store = &shared.tokens;
    let t = &shared.tenant;
    let bad = StatusCode::BAD_REQUEST;
    if shared.graph_faults.fail_token() {
        return aad_error(
            store,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90_033,
            "A transient error has occurred. Please try again.".to_owned(),
        );
    }
    let missing = |name: &str| {
        aad_error(
            store,
            bad,
            "invalid_request",
            900_144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    if !t.is(&tenant) {
        return aad_error(
            store,
            bad,
            "invalid_request",
            90_002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let Some(grant) = form.get("grant_type") else {
        return missing("grant_type");
    };
    if grant != "client_credentials" {
        return aad_error(
            store,
            bad,
            "unsupported_grant_type",
            70_003,
            format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let Some(client_id) = form.get("client_id") else {
        return missing("client_id");
    };
    if Guid::parse(client_id) != Some(t.client_id) {
        return aad_error(
            store,
            bad,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                t.organization
            ),
        );
    }
    let Some(secret) = form.get("client_secret") else {
        return aad_error(
            store,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_owned(),
        );
    };
    if *secret != t.client_secret {
        return aad_error(
            store,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                t.client_id
            ),
        );
    }
    let Some(scope) = form.get("scope") else {
        return missing("scope");
    };
    let Some(resource) = scope.strip_suffix("/.default") else {
        return aad_error(
            store,
            bad,
            "invalid_scope",
            1_002_012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let audience = [Audience::Graph, Audience::Exchange]
        .into_iter()
        .find(|a| a.resource().eq_ignore_ascii_case(resource));
    let Some(audience) = audience else {
        return aad_error(
            store,
            bad,
            "invalid_resource",
            500_011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                t.organization
            ),
        );
    };
    shared.counters.token_issued();
    let expires_in = store.lifetime().as_secs();
    let access_token = store.issue(audience, true);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access_token,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_open_one_audience_until_they_expire() {
        let store = TokenStore::new(1, Duration::from_secs(60));
        let g = store.issue(Audience::Graph, true);
        let x = store.issue(Audience::Exchange, false);
        assert_eq!(store.check(&bearer(&g), Audience::Graph), Ok(()));
        assert_eq!(
            store.check(&bearer(&g), Audience::Exchange),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            store.check(&bearer("nope"), Audience::Graph),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            store.check(&HeaderMap::new(), Audience::Graph),
            Err(AuthError::Missing)
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            store.check(&bearer(&g), Audience::Graph),
            Err(AuthError::Expired)
        );
        assert_eq!(store.check(&bearer(&x), Audience::Exchange), Ok(()));
    }
}
