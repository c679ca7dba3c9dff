//! The `/api/v1` handlers. Answers are plain JSON shapes built here (described in
//! `openapi.yaml`), so the store's types can change without changing the API.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::model::SyncKind;
use crate::model::{AccessState, DeviceKey, Verdict};
use crate::plugin::Source;
use crate::schedule::Triggered;
use crate::store::{OrgId, RunId, RunRecord, StoreError, VerdictCounts};

/// Devices per page when the caller does not say.
const DEFAULT_PAGE: usize = 50;
/// The largest page: keeps one answer small whatever the organization's size.
const MAX_PAGE: usize = 500;

/// Runs store work off the async threads (a device listing reads the whole organization).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
}

pub(super) fn org_id(state: &AdminState, name: &str) -> Result<OrgId, ApiError> {
    if !state.scheduler.organizations().any(|o| o == name) {
        return Err(ApiError::NotFound(format!(
            "no organization named {name:?} is configured"
        )));
    }
    Ok(state.store.organization(name, (state.now)())?)
}

fn run_json(run: &RunRecord) -> Value {
    json!({
        "id": run.id,
        "kind": run.kind.as_str(),
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "outcome": run.outcome.as_str(),
        "plugin_digest": run.plugin_digest,
        "counts": run.counts,
        "devices_changed": run.devices_changed,
        "commands_issued": run.commands_issued,
        "approval": run.approval,
        // Whole seconds, as the store keeps the times; `null` while the run goes on.
        "duration_s": run.ended_at.map(|end| end - run.started_at),
        "error": run.error,
    })
}

fn digest_json(name: &str, digest: &crate::plugin::Digest, source: &Source) -> Value {
    json!({
        "name": name,
        "digest": digest.hex(),
        "source": match source {
            Source::Builtin => "built-in".to_owned(),
            Source::File(path) => path.display().to_string(),
        },
    })
}

fn active_plugins(state: &AdminState) -> Value {
    let access = state.registry.access_policy();
    let notice = state.registry.notice_template();
    json!({
        "access_policy": digest_json(&access.meta.name, &access.meta.digest, &access.meta.source),
        "notice_template": digest_json(&notice.meta.name, &notice.meta.digest, &notice.meta.source),
    })
}

/// The policy that decides organization `name`'s syncs: its own (`[organization.policy]`,
/// with why it cannot serve, if it cannot) or the `[sync]` policy.
fn org_policy_json(state: &AdminState, name: &str) -> Value {
    let own = state
        .registry
        .org_policies()
        .into_iter()
        .find(|p| p.organization == name);
    let Some(own) = own else {
        let access = state.registry.access_policy();
        let mut policy = digest_json(&access.meta.name, &access.meta.digest, &access.meta.source);
        policy["settings"] = json!("[sync]");
        policy["error"] = Value::Null;
        policy["state"] = json!("ready");
        return policy;
    };
    let mut policy = match &own.active {
        Some(p) => digest_json(&p.meta.name, &p.meta.digest, &p.meta.source),
        None => json!({ "name": own.plugin, "digest": null, "source": null }),
    };
    policy["settings"] = json!(own.settings);
    policy["error"] = json!(own.failure.as_ref().map(|f| &f.reason));
    policy["error_kind"] = json!(own.failure.as_ref().map(|f| f.kind.as_str()));
    policy["state"] = json!(match (&own.active, &own.failure) {
        (Some(_), None) => "ready",
        // The last good binding serves while the newer version or settings are refused.
        (Some(_), Some(_)) => "degraded",
        (None, _) => "unavailable",
    });
    policy
}

/// Notices that did not go out and will not be retried, newest first, shown at most.
const UNSENT_SHOWN: usize = 10;

/// The outbox of an organization: counts per status, and the latest notices that failed or
/// were given up, with the reason.
fn notices_json(store: &crate::store::Store, org: crate::store::OrgId) -> Result<Value, ApiError> {
    use crate::store::NoticeStatus;
    let unsent: Vec<Value> = store
        .notices(org, 1000)?
        .into_iter()
        .filter(|n| matches!(n.status, NoticeStatus::Failed | NoticeStatus::GivenUp))
        .take(UNSENT_SHOWN)
        .map(|n| {
            json!({
                "id": n.id.as_str(),
                "device": n.key.as_str(),
                "recipient": n.recipient,
                "state": n.state.as_str(),
                "status": n.status.as_str(),
                "attempts": n.attempts,
                "error": n.last_error,
                "created_at": n.created_at,
            })
        })
        .collect();
    Ok(json!({ "counts": store.notice_counts(org)?, "unsent": unsent }))
}

/// Whether organization `name`'s Exchange answers, as the MDM console shows it: connected
/// unless the last attempt failed. An organization whose own policy cannot serve fails every
/// attempt without reaching Exchange; its connection is what Exchange last answered (the
/// daemon asks it once per such attempt), and the policy's state is shown beside it.
fn connection(
    state: &AdminState,
    name: &str,
    last: Option<&crate::schedule::LastRun>,
) -> &'static str {
    let observed = || match state.metrics.exchange_reached(name) {
        Some(true) => "connected",
        Some(false) => "disconnected",
        None => "unknown",
    };
    match last {
        None => "unknown",
        Some(last) if last.error.is_some() && policy_unavailable(state, name) => observed(),
        Some(last) if last.error.is_some() => "disconnected",
        Some(_) => "connected",
    }
}

/// Whether organization `name` has a policy of its own and none of its versions serves.
fn policy_unavailable(state: &AdminState, name: &str) -> bool {
    state
        .registry
        .org_policies()
        .iter()
        .any(|p| p.organization == name && p.active.is_none())
}

/// `GET /api/v1/status`
pub async fn status(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let plugins = active_plugins(&state);
    let orgs = blocking(move || {
        let names: Vec<String> = state.scheduler.organizations().map(str::to_owned).collect();
        names
            .iter()
            .map(|name| {
                let id = org_id(&state, name)?;
                let runs = state
                    .scheduler
                    .state(name)
                    .expect("a configured organization");
                let connection = connection(&state, name, runs.last.as_ref());
                let held: Vec<Value> = state.store.held_runs(id)?.iter().map(run_json).collect();
                let recent: Vec<Value> = state
                    .store
                    .recent_runs(id, 5)?
                    .iter()
                    .map(run_json)
                    .collect();
                let counts: VerdictCounts = state.store.verdict_counts(id)?;
                Ok(json!({
                    "name": name,
                    "connection": connection,
                    "last_successful_sync": state.store.last_successful_sync(id)?,
                    "current_run": runs.current,
                    "queued": runs.queued,
                    "last_attempt": runs.last,
                    "devices": state.store.device_count(id)?,
                    "verdicts": counts,
                    "held_plans": held,
                    "recent_runs": recent,
                    "notices": notices_json(&state.store, id)?,
                    "policy": org_policy_json(&state, name),
                }))
            })
            .collect::<Result<Vec<Value>, ApiError>>()
    })
    .await?;
    Ok(Json(json!({ "organizations": orgs, "plugins": plugins })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    kind: SyncKind,
}

#[derive(Serialize)]
struct SyncAnswer<'a> {
    org: &'a str,
    kind: SyncKind,
    status: Triggered,
}

/// `POST /api/v1/organizations/{org}/sync`
pub async fn trigger_sync(
    State(state): State<AdminState>,
    Path(org): Path<String>,
    body: Result<Json<SyncBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|err| {
        // A body over the limit is no malformed trigger: say what is wrong with it.
        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::PayloadTooLarge;
        }
        ApiError::BadRequest(format!(
            "the body must be {{\"kind\": \"quick\"}} or {{\"kind\": \"full\"}}: {}",
            err.body_text()
        ))
    })?;
    let status = state.scheduler.trigger(&org, body.kind)?;
    let answer = SyncAnswer {
        org: &org,
        kind: body.kind,
        status,
    };
    Ok((StatusCode::ACCEPTED, Json(json!(answer))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    org: Option<String>,
    verdict: Option<String>,
    state: Option<String>,
    user: Option<String>,
    q: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

fn device_json(org: &str, record: &crate::store::DeviceRecord) -> Value {
    let d = &record.decision;
    json!({
        "org": org,
        "id": record.key.as_str(),
        "device_id": record.exchange.device_id,
        "user": record.exchange.mailbox,
        "upn": record.managed.as_ref().map(|m| m.user_principal_name.clone()),
        "model": record.exchange.device_model,
        "os": record.exchange.device_os,
        "state": record.exchange.access_state.as_str(),
        "managed": record.managed.is_some(),
        "verdict": d.as_ref().map(|d| d.verdict.as_str()),
        "reason": d.as_ref().map(|d| d.reason.clone()),
        "plugin_digest": d.as_ref().map(|d| d.plugin_digest.clone()),
        "decided_at": d.as_ref().map(|d| d.decided_at),
        "seen_at": record.seen_at,
    })
}

fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(needle)
}

/// `GET /api/v1/devices`
pub async fn devices(
    State(state): State<AdminState>,
    query: Result<Query<DeviceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    let filter = DeviceFilter::of(&query)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let offset = query.offset.unwrap_or(0);
    let orgs: Vec<String> = match &query.org {
        Some(org) => {
            org_id(&state, org)?;
            vec![org.clone()]
        }
        None => state.scheduler.organizations().map(str::to_owned).collect(),
    };
    let answer = blocking(move || {
        let mut total = 0usize;
        let mut page = Vec::new();
        for org in &orgs {
            let id = org_id(&state, org)?;
            for record in state.store.devices(id)? {
                if filter.keeps(&record) {
                    if total >= offset && page.len() < limit {
                        page.push(device_json(org, &record));
                    }
                    total += 1;
                }
            }
        }
        Ok(json!({ "total": total, "offset": offset, "limit": limit, "devices": page }))
    })
    .await?;
    Ok(Json(answer))
}

/// What `GET /api/v1/devices` selects devices by; `None`: any.
struct DeviceFilter {
    verdict: Option<Option<Verdict>>,
    access: Option<AccessState>,
    /// Lower-cased, part of the mailbox or the Intune user.
    user: Option<String>,
    /// Lower-cased, part of any field shown.
    q: Option<String>,
}

impl DeviceFilter {
    fn of(query: &DeviceQuery) -> Result<DeviceFilter, ApiError> {
        // `undecided` selects devices without a verdict.
        let verdict: Option<Option<Verdict>> = match query.verdict.as_deref() {
            None | Some("") => None,
            Some("undecided") => Some(None),
            Some(text) => Some(Some(Verdict::parse(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown verdict {text:?}: use allow, block, quarantine, exempt or undecided"
                ))
            })?)),
        };
        let access: Option<AccessState> = match query.state.as_deref() {
            None | Some("") => None,
            Some(text) => Some(AccessState::parse(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown access state {text:?}: use Allowed, Blocked, Quarantined, DeviceDiscovery or Unknown"
                ))
            })?),
        };
        let user = query
            .user
            .as_ref()
            .map(|u| u.to_lowercase())
            .filter(|u| !u.is_empty());
        let q = query
            .q
            .as_ref()
            .map(|q| q.to_lowercase())
            .filter(|q| !q.is_empty());
        Ok(DeviceFilter {
            verdict,
            access,
            user,
            q,
        })
    }

    fn keeps(&self, record: &crate::store::DeviceRecord) -> bool {
        let DeviceFilter {
            verdict,
            access,
            user,
            q,
        } = self;
        let v = record.decision.as_ref().map(|d| d.verdict);
        verdict.is_none_or(|want| want == v)
            && access.is_none_or(|want| want == record.exchange.access_state)
            && user.as_deref().is_none_or(|u| {
                record
                    .exchange
                    .mailbox
                    .as_deref()
                    .is_some_and(|m| contains(m, u))
                    || record
                        .managed
                        .as_ref()
                        .is_some_and(|m| contains(&m.user_principal_name, u))
            })
            && q.as_deref().is_none_or(|q| {
                [
                    record.key.as_str(),
                    &record.exchange.device_id,
                    &record.exchange.device_model,
                    &record.exchange.device_os,
                    record.exchange.mailbox.as_deref().unwrap_or(""),
                    record.decision.as_ref().map_or("", |d| d.reason.as_str()),
                ]
                .iter()
                .any(|field| contains(field, q))
            })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeviceLookup {
    org: Option<String>,
}

/// `GET /api/v1/devices/{id}`: the device (its partnership key, as the list gives it) and its
/// history from the audit.
pub async fn device(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    query: Result<Query<DeviceLookup>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    let orgs: Vec<String> = match &query.org {
        Some(org) => {
            org_id(&state, org)?;
            vec![org.clone()]
        }
        None => state.scheduler.organizations().map(str::to_owned).collect(),
    };
    blocking(move || {
        let key = DeviceKey::new(&id);
        for org in &orgs {
            let org_row = org_id(&state, org)?;
            if let Some(record) = state.store.device(org_row, &key)? {
                let history: Vec<Value> = state
                    .store
                    .audit(org_row, &key)?
                    .iter()
                    .map(|entry| {
                        json!({
                            "run": entry.run,
                            "old_state": entry.old_state,
                            "old_verdict": entry.old_verdict.map(Verdict::as_str),
                            "verdict": entry.verdict.as_str(),
                            "reason": entry.reason,
                            "plugin_digest": entry.plugin_digest,
                            "decided_at": entry.decided_at,
                        })
                    })
                    .collect();
                return Ok(Json(json!({
                    "device": device_json(org, &record),
                    "history": history,
                })));
            }
        }
        Err(ApiError::NotFound(format!(
            "no device {id:?} in {}",
            orgs.join(", ")
        )))
    })
    .await
}

/// `GET /api/v1/plugins`
pub async fn plugins(State(state): State<AdminState>) -> Json<Value> {
    let directory: Vec<Value> = state
        .registry
        .status()
        .into_iter()
        .map(|p| {
            let rejections: Vec<Value> = p
                .rejections
                .iter()
                .map(|r| {
                    json!({
                        "digest": r.digest.map(|d| d.hex()),
                        "reason": r.reason,
                        "at": r.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).ok(),
                    })
                })
                .collect();
            json!({
                "name": p.name,
                "path": p.path.display().to_string(),
                "world": p.loaded.map(|(world, _)| world.as_str()),
                "digest": p.loaded.map(|(_, digest)| digest.hex()),
                "active": p.active,
                "rejections": rejections,
            })
        })
        .collect();
    Json(json!({
        "active": active_plugins(&state),
        "reloads": *state.registry.subscribe().borrow(),
        "directory": directory,
    }))
}

fn decide_plan(state: AdminState, id: i64, approve: bool) -> Result<Json<Value>, ApiError> {
    let run = RunId(id);
    let now = (state.now)();
    let result = if approve {
        state.store.approve(run, now)
    } else {
        state.store.reject(run, now)
    };
    match result {
        Ok(commands) => Ok(Json(json!({
            "run": run,
            "decision": if approve { "approved" } else { "rejected" },
            "commands": commands,
        }))),
        Err(StoreError::UnknownRun(_)) => Err(ApiError::NotFound(format!("no sync run {run}"))),
        Err(err @ (StoreError::RunState { .. } | StoreError::Superseded { .. })) => {
            Err(ApiError::Conflict(err.to_string()))
        }
        Err(err) => Err(err.into()),
    }
}

fn plan_id(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("{text:?} is not a run id (a number)")))
}

/// `POST /api/v1/plans/{id}/approve`
pub async fn approve(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = plan_id(&id)?;
    blocking(move || decide_plan(state, id, true)).await
}

/// `POST /api/v1/plans/{id}/reject`
pub async fn reject(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = plan_id(&id)?;
    blocking(move || decide_plan(state, id, false)).await
}

/// Any other path behind the token.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

/// Runs of the history shown when the caller does not say, and the most it may ask for.
const DEFAULT_HISTORY: usize = 50;
const MAX_HISTORY: usize = 1000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/organizations/{org}/history`: the latest runs (newest first) with their
/// duration and errors, and the trend of devices per verdict (oldest first).
pub async fn history(
    State(state): State<AdminState>,
    Path(org): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY);
    if limit == 0 || limit > MAX_HISTORY {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_HISTORY}"
        )));
    }
    blocking(move || {
        let id = org_id(&state, &org)?;
        let runs: Vec<Value> = state
            .store
            .recent_runs(id, limit)?
            .iter()
            .map(run_json)
            .collect();
        let trend: Vec<Value> = state
            .store
            .verdict_trend(id, limit)?
            .iter()
            .map(|p| json!({ "run": p.run, "at": p.at, "counts": p.counts }))
            .collect();
        Ok(Json(json!({ "org": org, "runs": runs, "trend": trend })))
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoticeQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/organizations/{org}/notices`: the outbox's counts per status and its latest
/// notices, of one status (`pending`, `sent`, `failed`, `given-up`) or all.
pub async fn notices(
    State(state): State<AdminState>,
    Path(org): Path<String>,
    query: Result<Query<NoticeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    use crate::store::NoticeStatus;
    let Query(query) = query.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            [
                NoticeStatus::Pending,
                NoticeStatus::Sent,
                NoticeStatus::Failed,
                NoticeStatus::GivenUp,
            ]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown notice status {text:?}: use pending, sent, failed or given-up"
                ))
            })?,
        ),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    blocking(move || {
        let id = org_id(&state, &org)?;
        let notices = match status {
            Some(status) => state.store.notices_in(id, status, limit)?,
            None => state.store.notices(id, limit)?,
        };
        let notices: Vec<Value> = notices
            .iter()
            .map(|n| {
                json!({
                    "id": n.id.as_str(),
                    "device": n.key.as_str(),
                    "device_id": n.device_id,
                    "identity": n.exchange.identity,
                    "recipient": n.recipient,
                    "state": n.state.as_str(),
                    "reason": n.reason,
                    "status": n.status.as_str(),
                    "attempts": n.attempts,
                    "next_attempt_at": n.next_attempt_at,
                    "error": n.last_error,
                    "created_at": n.created_at,
                    "sent_at": n.sent_at,
                })
            })
            .collect();
        Ok(Json(json!({
            "org": org,
            "counts": state.store.notice_counts(id)?,
            "notices": notices,
        })))
    })
    .await
}

/// Devices of a held plan listed one by one, at most; the transitions count them all.
const PLAN_DEVICES_SHOWN: usize = 500;

/// The state a held plan's command leaves a device in, in Exchange's words.
fn held_target(change: &crate::store::HeldChange) -> &'static str {
    use crate::model::AccessLevel;
    use crate::sync::plan::REMOVE_MOBILE_DEVICE;
    // The default's switch names the devices that fall to the new default.
    let level = change.default_level.or(match change.verdict {
        Some(Verdict::Allow) => Some(AccessLevel::Allow),
        Some(Verdict::Block) => Some(AccessLevel::Block),
        _ => None,
    });
    match (change.cmdlet.as_str(), level) {
        (REMOVE_MOBILE_DEVICE, _) => "Removed",
        (_, Some(AccessLevel::Allow)) => "Allowed",
        (_, Some(AccessLevel::Block)) => "Blocked",
        // Off both lists: the organization default the connector manages.
        _ => "Quarantined",
    }
}

/// `GET /api/v1/plans/{id}`: what a held plan would do: each device's Exchange state now → the
/// state after the plan, counted per transition, and the devices (the first 500).
pub async fn plan(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = RunId(plan_id(&id)?);
    blocking(move || {
        let record = match state.store.run(run)? {
            Some(record) => record,
            None => return Err(ApiError::NotFound(format!("no sync run {run}"))),
        };
        let changes = state.store.held_changes(run)?;
        let mut transitions: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
        for change in &changes {
            let from = change.state.map_or("Unknown", AccessState::as_str);
            *transitions.entry((from, held_target(change))).or_default() += 1;
        }
        let transitions: Vec<Value> = transitions
            .into_iter()
            .map(|((from, to), count)| json!({ "from": from, "to": to, "count": count }))
            .collect();
        let devices: Vec<Value> = changes
            .iter()
            .take(PLAN_DEVICES_SHOWN)
            .map(|c| {
                let exchange = c.exchange.as_ref();
                json!({
                    "id": c.key.as_str(),
                    "identity": exchange.map(|e| e.identity.clone()),
                    "device_id": exchange.map(|e| e.device_id.clone()),
                    "mailbox": exchange.and_then(|e| e.mailbox.clone()),
                    "from": c.state.map(AccessState::as_str),
                    "to": held_target(c),
                    "verdict": c.verdict.map(Verdict::as_str),
                    "reason": c.reason,
                    "cmdlet": c.cmdlet,
                })
            })
            .collect();
        Ok(Json(json!({
            "run": run_json(&record),
            "devices_total": changes.len(),
            "transitions": transitions,
            "devices": devices,
        })))
    })
    .await
}
