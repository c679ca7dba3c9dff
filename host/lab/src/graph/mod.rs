//! The lab's Microsoft Graph (Intune and directory), served with the login endpoint on one
//! listener:
//! - `GET /v1.0/deviceManagement/managedDevices[?$select&$filter&$top]` and `…/{id}`,
//! - `GET /v1.0/groups/{id}/transitiveMembers`,
//! - `GET /v1.0/users/{id|upn}` and `…/transitiveMemberOf`,
//! - `POST /{tenant}/oauth2/v2.0/token`, `GET /{tenant}/v2.0/.well-known/openid-configuration`,
//!   `GET /{tenant}/discovery/v2.0/keys` and `GET /common/discovery/instance` (see `login`).
//!
//! Every Graph request passes the token bucket of `throttle` (429 + `Retry-After` when empty) and
//! needs a bearer token of audience Graph. Lists page with an opaque `$skiptoken` in
//! `@odata.nextLink` (default page 1000 for managed devices, 100 for members). Errors use Graph's
//! shape `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
//! On top of the budget, `faults` injects what the control API asks for: 429 on every n-th
//! call for a while, failing token requests, expired next links.

pub mod faults;
pub(crate) mod odata;
pub mod throttle;
mod views;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;

use crate::login::{self, Audience, AuthError};
use crate::org::{Org, Owner};
use crate::paging::{self, Position, query_hash, resume_at};
use crate::random::{Guid, Rng};
use crate::server::Shared;
use crate::utc::Utc;
use odata::{Clause, ODataError, TimeOp};
use views::{GroupView, ManagedDeviceView, UserView};

const MANAGED_PAGE: usize = 1000;
const MEMBER_PAGE: usize = 100;
const MEMBER_MAX_PAGE: usize = 999;

/// A Graph error response.
struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(0);

impl GraphError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request((code, message): ODataError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut ids = Rng::stream(0x6a_0000, REQUEST_IDS.fetch_add(1, Ordering::Relaxed));
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": Utc::now(),
                    "request-id": ids.guid(),
                    "client-request-id": ids.guid(),
                },
            }
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\""),
            );
        }
        r
    }
}

/// The Graph + login router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(login::token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(login::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(login::keys))
        .route("/common/discovery/instance", get(login::instance_discovery))
        .route(
            "/v1.0/deviceManagement/managedDevices",
            get(managed_devices),
        )
        .route(
            "/v1.0/deviceManagement/managedDevices/{id}",
            get(managed_device),
        )
        .route(
            "/v1.0/groups/{id}/transitiveMembers",
            get(transitive_members),
        )
        .route("/v1.0/users/{id}", get(user))
        .route(
            "/v1.0/users/{id}/transitiveMemberOf",
            get(transitive_member_of),
        )
        .fallback(|| async {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Resource not found for the segment.",
            )
        })
        .with_state(shared)
}

/// Throttling and authentication, in the order Graph applies them.
fn admit(shared: &Shared, headers: &HeaderMap, endpoint: &str) -> Result<(), GraphError> {
    shared.counters.graph_request(endpoint);
    // An injected fault first, then the tenant's own limit.
    let refused = shared
        .graph_faults
        .throttle()
        .or_else(|| shared.throttle.admit().err());
    if let Some(retry) = refused {
        shared.counters.graph_throttled();
        return Err(GraphError {
            retry_after: Some(retry),
            ..GraphError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests, please try again later.",
            )
        });
    }
    shared.tokens.check(headers, Audience::Graph).map_err(|e| {
        GraphError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            match e {
                AuthError::Missing => "Access token is empty.",
                AuthError::Unknown => "IDX14100: JWT is not well formed, there are no dots (.).",
                AuthError::Expired => "Lifetime validation failed, the token is expired.",
                AuthError::WrongAudience => "Access token validation failure. Invalid audience.",
            },
        )
    })
}

/// The query string as ordered pairs, decoded.
fn pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| char::from(b).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of query option `name` (system options match ignoring case).
fn option<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Rebuilds the query of a list request for its `@odata.nextLink`.
fn next_link(base: &str, path: &str, pairs: &[(String, String)], token: &str) -> String {
    let mut q: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(k, v)| format!("{}={}", odata::encode(k), odata::encode(v)))
        .collect();
    q.push(format!("$skiptoken={token}"));
    format!("{base}/v1.0/{path}?{}", q.join("&"))
}

fn resume(shared: &Shared, pairs: &[(String, String)], query: u64) -> Result<Position, GraphError> {
    match option(pairs, "$skiptoken") {
        None => Ok(Position::default()),
        Some(_) if shared.graph_faults.expire_link() => Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "Directory_ExpiredPageToken",
            "The specified page token value has expired and can no longer be included in your request.",
        )),
        Some(t) => shared.pages.decode(t, query).ok_or_else(|| {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The $skiptoken is not valid for this request.",
            )
        }),
    }
}

/// A collection page as Graph writes it.
#[derive(Serialize)]
struct Collection<'a, T> {
    #[serde(rename = "@odata.context")]
    context: &'a str,
    value: &'a [T],
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Renders a collection page, serialized straight from the views (no intermediate JSON tree:
/// pages of 1000 managed devices are the lab's hottest path).
fn collection<T: Serialize>(context: &str, items: &[T], next: Option<String>) -> Response {
    let body = serde_json::to_vec(&Collection {
        context,
        value: items,
        next,
    })
    .expect("views serialize");
    (
        [(
            header::CONTENT_TYPE,
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// A collection page around an already serialized `value` array (which the lab may have
/// broken on purpose, see `malformed`).
fn collection_bytes(context: &str, array: &[u8], next: Option<String>) -> Response {
    let mut body = Vec::with_capacity(array.len() + 256);
    body.extend_from_slice(b"{\"@odata.context\":");
    body.extend_from_slice(&serde_json::to_vec(context).expect("a string"));
    body.extend_from_slice(b",\"value\":");
    body.extend_from_slice(array);
    if let Some(next) = next {
        body.extend_from_slice(b",\"@odata.nextLink\":");
        body.extend_from_slice(&serde_json::to_vec(&next).expect("a string"));
    }
    body.push(b'}');
    (
        [(
            header::CONTENT_TYPE,
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn read(shared: &Shared) -> std::sync::RwLockReadGuard<'_, Org> {
    shared
        .org
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn clause_matches(org: &Org, c: &Clause, md: &crate::org::ManagedDevice) -> bool {
    let upn = || match &md.owner {
        Owner::Mailbox(ix) => &*org.mailboxes[*ix as usize].upn,
        Owner::Departed(d) => &*d.upn,
        Owner::Nobody => "",
    };
    match c {
        Clause::LastSync(op, t) => match op {
            TimeOp::Ge => md.last_sync >= *t,
            TimeOp::Gt => md.last_sync > *t,
            TimeOp::Le => md.last_sync <= *t,
            TimeOp::Lt => md.last_sync < *t,
        },
        Clause::EasDeviceId(id) => md.eas_device_id.eq_ignore_ascii_case(id),
        Clause::ComplianceState(s) => md.compliance.as_str().eq_ignore_ascii_case(s),
        Clause::OperatingSystem(s) => md.profile().platform.graph_os().eq_ignore_ascii_case(s),
        Clause::UserPrincipalName(s) => upn().eq_ignore_ascii_case(s),
    }
}

async fn managed_devices(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    match list_managed_devices(&shared, &headers, &raw) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn list_managed_devices(
    shared: &Shared,
    headers: &HeaderMap,
    raw: &Option<String>,
) -> Result<Response, GraphError> {
    admit(shared, headers, "managedDevices")?;
    let pairs = pairs(raw);
    odata::check_options(
        pairs.iter().map(|(k, _)| k.as_str()),
        &["$select", "$filter", "$top", "$skiptoken"],
    )
    .map_err(GraphError::bad_request)?;
    let select_text = option(&pairs, "$select");
    let select = odata::select(select_text, views::MANAGED_DEVICE_FIELDS, "managedDevice")
        .map_err(GraphError::bad_request)?;
    let filter_text = option(&pairs, "$filter");
    let clauses = match filter_text {
        Some(f) => odata::managed_device_filter(f).map_err(GraphError::bad_request)?,
        None => Vec::new(),
    };
    let top_text = option(&pairs, "$top");
    let top = odata::top(top_text, MANAGED_PAGE).map_err(GraphError::bad_request)?;
    let query = query_hash(&[
        "managedDevices",
        select_text.unwrap_or(""),
        filter_text.unwrap_or(""),
        top_text.unwrap_or(""),
    ]);
    let pos = resume(shared, &pairs, query)?;

    let org = read(shared);
    let keep =
        |md: &&crate::org::ManagedDevice| clauses.iter().all(|c| clause_matches(&org, c, md));
    // An `easDeviceId eq` clause is answered from the index, as Intune answers it.
    let by_id: Option<Vec<u32>> = clauses.iter().find_map(|c| match c {
        Clause::EasDeviceId(id) => Some(
            org.managed_by_eas
                .get(&Org::mailbox_key(id))
                .copied()
                .into_iter()
                .collect(),
        ),
        _ => None,
    });
    let slice = match by_id {
        Some(keys) => paging::slice(
            keys.into_iter()
                .filter(|&k| org.managed(k).is_some_and(|m| keep(&m))),
            pos,
            top.unwrap_or(MANAGED_PAGE),
            u32::MAX,
        ),
        None => paging::slice(
            // Resume at the position instead of scanning the pages before it again.
            org.managed[resume_at(pos, org.managed.len())..]
                .iter()
                .flatten()
                .filter(keep)
                .map(|m| m.seq),
            pos,
            top.unwrap_or(MANAGED_PAGE),
            u32::MAX,
        ),
    };
    let items: Vec<ManagedDeviceView<'_>> = slice
        .keys
        .iter()
        .map(|&k| ManagedDeviceView {
            org: &org,
            md: org.managed(k).expect("listed"),
            select,
        })
        .collect();
    let context = match select_text {
        Some(s) => format!(
            "{}/v1.0/$metadata#deviceManagement/managedDevices({s})",
            shared.graph_url
        ),
        None => format!(
            "{}/v1.0/$metadata#deviceManagement/managedDevices",
            shared.graph_url
        ),
    };
    let next = slice.next.map(|n| {
        next_link(
            &shared.graph_url,
            "deviceManagement/managedDevices",
            &pairs,
            &shared.pages.encode(n, query),
        )
    });
    let array = serde_json::to_vec(&items).expect("views serialize");
    drop(items);
    drop(org);
    match shared
        .malformed
        .rewrite_array(crate::malformed::Service::Graph, &array)
    {
        None => Ok(collection_bytes(&context, &array, next)),
        Some(broken) => Ok(collection_bytes(&context, &broken, next)),
    }
}

async fn managed_device(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = (|| {
        admit(&shared, &headers, "managedDevices")?;
        let pairs = pairs(&raw);
        select_only(&pairs)?;
        let select = odata::select(
            option(&pairs, "$select"),
            views::MANAGED_DEVICE_FIELDS,
            "managedDevice",
        )
        .map_err(GraphError::bad_request)?;
        let guid = Guid::parse(&id).ok_or_else(|| GraphError::not_found(&id))?;
        let org = read(&shared);
        let md = org
            .managed
            .iter()
            .flatten()
            .find(|m| m.id == guid)
            .ok_or_else(|| GraphError::not_found(&id))?;
        let view = ManagedDeviceView {
            org: &org,
            md,
            select,
        };
        Ok(entity(
            view,
            &shared,
            "deviceManagement/managedDevices/$entity",
        ))
    })();
    result.unwrap_or_else(GraphError::into_response)
}

/// One object as Graph answers `GET …/{id}`: its fields plus `@odata.context`
/// (`{graph}/v1.0/$metadata#{context}`).
fn entity(view: impl Serialize, shared: &Shared, context: &str) -> Response {
    let mut v = serde_json::to_value(view).expect("view");
    v.as_object_mut().expect("object").insert(
        "@odata.context".into(),
        json!(format!("{}/v1.0/$metadata#{context}", shared.graph_url)),
    );
    axum::Json(v).into_response()
}

/// A single-object request takes `$select` and no other query option.
fn select_only(pairs: &[(String, String)]) -> Result<(), GraphError> {
    odata::check_options(pairs.iter().map(|(k, _)| k.as_str()), &["$select"])
        .map_err(GraphError::bad_request)
}

/// A member of a group: a user (mailbox index) or a nested group (group index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Member {
    User(u32),
    Group(u32),
}

/// All transitive members of group `g`, nested groups included, each once, in a stable order.
fn transitive(org: &Org, g: usize) -> Vec<Member> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([g as u32]);
    let mut visited = HashSet::from([g as u32]);
    while let Some(gi) = queue.pop_front() {
        let group = &org.groups[gi as usize];
        for &u in &group.users {
            if seen.insert(Member::User(u)) {
                out.push(Member::User(u));
            }
        }
        for &sub in &group.groups {
            if visited.insert(sub) {
                out.push(Member::Group(sub));
                queue.push_back(sub);
            }
        }
    }
    out
}

fn member_select(pairs: &[(String, String)]) -> Result<(u64, u64), GraphError> {
    // One `$select` applies to users and groups alike; a property either type has is fine.
    match option(pairs, "$select") {
        None => Ok((views::USER_DEFAULT, u64::MAX)),
        Some(s) => {
            let mut user = 0;
            let mut group = 0;
            for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let u = views::USER_FIELDS
                    .iter()
                    .position(|f| f.eq_ignore_ascii_case(name));
                let g = views::GROUP_FIELDS
                    .iter()
                    .position(|f| f.eq_ignore_ascii_case(name));
                if u.is_none() && g.is_none() {
                    return Err(GraphError::new(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        format!(
                            "Could not find a property named '{name}' on type 'microsoft.graph.directoryObject'."
                        ),
                    ));
                }
                user |= u.map_or(0, |i| 1 << i);
                group |= g.map_or(0, |i| 1 << i);
            }
            Ok((user, group))
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum MemberView<'a> {
    User(UserView<'a>),
    Group(GroupView<'a>),
}

fn member_page(
    shared: &Shared,
    org: &Org,
    members: &[Member],
    pairs: &[(String, String)],
    endpoint: &str,
    path: &str,
    context: &str,
) -> Result<Response, GraphError> {
    odata::check_options(
        pairs.iter().map(|(k, _)| k.as_str()),
        &["$select", "$top", "$skiptoken"],
    )
    .map_err(GraphError::bad_request)?;
    let (user_select, group_select) = member_select(pairs)?;
    let top_text = option(pairs, "$top");
    let top = odata::top(top_text, MEMBER_MAX_PAGE).map_err(GraphError::bad_request)?;
    let query = query_hash(&[
        endpoint,
        path,
        option(pairs, "$select").unwrap_or(""),
        top_text.unwrap_or(""),
    ]);
    let pos = resume(shared, pairs, query)?;
    let slice = paging::slice(
        0..members.len() as u32,
        pos,
        top.unwrap_or(MEMBER_PAGE),
        u32::MAX,
    );
    let items: Vec<MemberView<'_>> = slice
        .keys
        .iter()
        .map(|&k| match members[k as usize] {
            Member::User(u) => MemberView::User(UserView {
                org,
                m: &org.mailboxes[u as usize],
                select: user_select,
                typed: true,
            }),
            Member::Group(g) => MemberView::Group(GroupView {
                org,
                index: g as usize,
                select: group_select,
            }),
        })
        .collect();
    let next = slice.next.map(|n| {
        next_link(
            &shared.graph_url,
            path,
            pairs,
            &shared.pages.encode(n, query),
        )
    });
    Ok(collection(context, &items, next))
}

async fn transitive_members(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = (|| {
        admit(&shared, &headers, "transitiveMembers")?;
        let pairs = pairs(&raw);
        let org = read(&shared);
        let g = Guid::parse(&id)
            .and_then(|guid| org.groups.iter().position(|g| g.id == guid))
            .ok_or_else(|| GraphError::not_found(&id))?;
        let members = transitive(&org, g);
        member_page(
            &shared,
            &org,
            &members,
            &pairs,
            "transitiveMembers",
            &format!("groups/{id}/transitiveMembers"),
            &format!("{}/v1.0/$metadata#directoryObjects", shared.graph_url),
        )
    })();
    result.unwrap_or_else(GraphError::into_response)
}

/// A Graph user by object id or UPN (not by mail or alias: Graph doesn't resolve those).
fn find_user(org: &Org, id: &str) -> Option<u32> {
    let ix = org.find_mailbox(id)?;
    let m = &org.mailboxes[ix as usize];
    (Guid::parse(id) == Some(m.user_id) || m.upn.eq_ignore_ascii_case(id)).then_some(ix)
}

async fn user(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = (|| {
        admit(&shared, &headers, "users")?;
        let pairs = pairs(&raw);
        select_only(&pairs)?;
        let select = match option(&pairs, "$select") {
            None => views::USER_DEFAULT,
            Some(s) => odata::select(Some(s), views::USER_FIELDS, "user")
                .map_err(GraphError::bad_request)?,
        };
        let org = read(&shared);
        let ix = find_user(&org, &id).ok_or_else(|| GraphError::not_found(&id))?;
        let view = UserView {
            org: &org,
            m: &org.mailboxes[ix as usize],
            select,
            typed: false,
        };
        Ok(entity(view, &shared, "users/$entity"))
    })();
    result.unwrap_or_else(GraphError::into_response)
}

async fn transitive_member_of(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = (|| {
        admit(&shared, &headers, "transitiveMemberOf")?;
        let pairs = pairs(&raw);
        let org = read(&shared);
        let ix = find_user(&org, &id).ok_or_else(|| GraphError::not_found(&id))?;
        let groups: Vec<Member> = org.groups_of(ix).into_iter().map(Member::Group).collect();
        member_page(
            &shared,
            &org,
            &groups,
            &pairs,
            "transitiveMemberOf",
            &format!("users/{id}/transitiveMemberOf"),
            &format!("{}/v1.0/$metadata#directoryObjects", shared.graph_url),
        )
    })();
    result.unwrap_or_else(GraphError::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_of_agrees_with_members() {
        let org = crate::dataset::generate(&crate::dataset::DatasetSpec {
            seed: 3,
            devices: 400,
            anchor: Utc::from_unix(1_700_000_000),
        });
        for ix in 0..org.mailboxes.len() as u32 {
            let by_members: Vec<u32> = (0..org.groups.len())
                .filter(|&g| transitive(&org, g).contains(&Member::User(ix)))
                .map(|g| g as u32)
                .collect();
            assert_eq!(org.groups_of(ix), by_members);
        }
    }

    #[test]
    fn decodes_and_reencodes_query_pairs() {
        let p = pairs(&Some(
            "$filter=lastSyncDateTime%20ge%202024-05-01T00:00:00Z&$top=5&x".into(),
        ));
        assert_eq!(
            option(&p, "$FILTER"),
            Some("lastSyncDateTime ge 2024-05-01T00:00:00Z")
        );
        assert_eq!(option(&p, "$top"), Some("5"));
        let link = next_link("http://h", "deviceManagement/managedDevices", &p, "TOK");
        assert_eq!(
            link,
            "http://h/v1.0/deviceManagement/managedDevices?$filter=lastSyncDateTime%20ge%202024-05-01T00:00:00Z&$top=5&x=&$skiptoken=TOK"
        );
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%41+b"), "A b");
    }
}
