//! Administrators' device actions: a remote wipe (`Clear-MobileDevice`, or with `-AccountOnly`
//! the mail account only) and a partnership removal (`Remove-MobileDevice`).
//!
//! Only an administrator starts one — from the CLI (`easgate device wipe|remove`) or this API's
//! two steps — never a plugin: a policy's answer is a verdict, and plans hold only list edits,
//! removals of partnerships whose Intune record was retired, and the organization default.
//!
//! Each action: the device is looked up in Exchange and shown (user, model, last sync, what
//! will happen); the administrator confirms with a reason; the intent is journaled in the
//! store's audit (`issuing`) before the cmdlet is sent and finished with Exchange's answer; a
//! crash between the two leaves it `interrupted`, reported at the next start and never sent
//! again on its own. The user's notice (the notice template, with the decision `block` and
//! the action as the reason code: `admin-wipe`, `admin-account-wipe`, `admin-remove`) is
//! queued in the notice outbox in the transaction that records the action as done, one per
//! audit row, and tried at once; when the mail server fails it stays pending and a later
//! sync's notify stage retries it like any other notice.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AdminState, ApiError};
use crate::exchange::cmdlets::{
    ClearMobileDevice, GetCasMailbox, GetMobileDevice, RemoveMobileDevice,
};
use crate::exchange::models::{CasMailbox, DeviceAccessState, MobileDevice};
use crate::exchange::{Cmdlet, ExchangeClient, ExchangeError};
use crate::metrics::{Metrics, NoticeResult};
use crate::model::{AccessState, ExchangeDevice, Parameters};
use crate::notify::Retry;
use crate::store::{
    ActionEnd, ActionIntent, ActionNotice, ActionRecord, ActionResult, DeviceAction, NoticeAttempt,
    NoticeStatus, OrgId, Store,
};
use crate::sync::NoticeStage;
use crate::sync::notices::{TemplateSource, template_input};

/// How long a confirmation token stays good: long enough to read the device and type a
/// reason, short enough that a forgotten dialog cannot be confirmed tomorrow.
pub const CONFIRMATION_TTL: Duration = Duration::from_secs(300);

/// The device an action is about, as Exchange has it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub organization: String,
    pub identity: String,
    pub device_id: String,
    /// The mailbox part of the identity.
    pub user: String,
    pub user_display_name: Option<String>,
    pub device_type: Option<String>,
    pub model: Option<String>,
    /// `LastSuccessSync` (`Get-MobileDeviceStatistics`), Unix seconds.
    pub last_sync: Option<i64>,
    /// Where the user's notice goes (the mailbox's `PrimarySmtpAddress`); `None` when the
    /// mailbox could not be read, and then no notice is sent.
    pub recipient: Option<String>,
    #[serde(skip)]
    device: MobileDevice,
}

impl Target {
    /// The device as the notice template sees it.
    fn exchange_view(&self) -> ExchangeDevice {
        let dev = &self.device;
        ExchangeDevice {
            device_id: dev.device_id.clone(),
            identity: dev.identity.clone(),
            mailbox: Some(self.user.clone()),
            device_type: dev.device_type.clone().unwrap_or_default(),
            device_model: dev.device_model.clone().unwrap_or_default(),
            device_os: dev.device_os.clone().unwrap_or_default(),
            user_agent: dev.device_user_agent.clone().unwrap_or_default(),
            first_sync: dev.first_sync_time.map(|t| t.0),
            last_success_sync: self.last_sync,
            access_state: match dev.device_access_state {
                DeviceAccessState::Unknown => AccessState::Unknown,
                DeviceAccessState::Allowed => AccessState::Allowed,
                DeviceAccessState::Blocked => AccessState::Blocked,
                DeviceAccessState::Quarantined => AccessState::Quarantined,
                DeviceAccessState::DeviceDiscovery => AccessState::DeviceDiscovery,
            },
            access_state_reason: dev.device_access_state_reason.clone(),
        }
    }
}

/// What an action will do, in words an administrator confirms.
pub fn effect(action: DeviceAction) -> &'static str {
    match action {
        DeviceAction::Wipe => {
            "Clear-MobileDevice: the whole device is reset to factory settings the next time it syncs; its data cannot be recovered"
        }
        DeviceAction::AccountWipe => {
            "Clear-MobileDevice -AccountOnly: the mail account and its data are removed from the device the next time it syncs; the rest of the device is untouched"
        }
        DeviceAction::Remove => {
            "Remove-MobileDevice: the device partnership is deleted; the device must set up its mail account again and is decided afresh"
        }
    }
}

/// Why an action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("a reason is required: say why the device is {}", past(*.0))]
    NoReason(DeviceAction),
    #[error(
        "organization `{org}` has no device `{device}` (give its Exchange Identity or DeviceId)"
    )]
    UnknownDevice { org: String, device: String },
    #[error(
        "organization `{org}`: device `{device}` matches {count} partnerships; give its full Exchange Identity"
    )]
    Ambiguous {
        org: String,
        device: String,
        count: usize,
    },
    #[error("organization `{org}`: {source}")]
    Exchange {
        org: String,
        #[source]
        source: ExchangeError,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn past(action: DeviceAction) -> &'static str {
    match action {
        DeviceAction::Wipe => "wiped",
        DeviceAction::AccountWipe => "having its mail account wiped",
        DeviceAction::Remove => "removed",
    }
}

/// `Get-MobileDevice -Identity X`: the partnership of that Exchange Identity.
struct GetDevice<'a>(&'a str);

impl Cmdlet for GetDevice<'_> {
    const WRITE: bool = false;
    type Output = MobileDevice;
    fn name(&self) -> &str {
        "Get-MobileDevice"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(Parameters::new().text("Identity", self.0))
    }
}

/// `Get-MobileDeviceStatistics -Identity X`, for the last successful sync only.
struct GetStatistics<'a>(&'a str);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Statistics {
    #[serde(default)]
    last_success_sync: Option<crate::timestamp::Timestamp>,
}

impl Cmdlet for GetStatistics<'_> {
    const WRITE: bool = false;
    type Output = Statistics;
    fn name(&self) -> &str {
        "Get-MobileDeviceStatistics"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(Parameters::new().text("Identity", self.0))
    }
}

/// An organization's means to act on devices.
#[derive(Clone)]
pub struct OrgActions {
    pub exchange: ExchangeClient,
    /// `None` without `[notify]`: the action is taken and no notice sent.
    pub notices: Option<(NoticeStage, TemplateSource)>,
    /// The daemon's, so that the notice's first attempt is counted with the sync's
    /// (`easgate_notices_total`); `None` in the CLI, which exports none.
    pub metrics: Option<Arc<Metrics>>,
}

/// How long the process that queued an action's notice holds it for its first attempt before
/// a sync's notify stage may take it: longer than an SMTP attempt, so the two never send it
/// side by side, short enough that a notice whose sender died goes out soon after.
pub const NOTICE_HOLD: Duration = Duration::from_secs(600);

/// What an action came to.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub record: ActionRecord,
    /// The user's notice: `sent`; `pending: …` (the mail server failed: a sync retries it),
    /// `given-up: …` or `failed: …` with the reason; `not-configured` (no `[notify]`);
    /// `not-queued: …` (no address for the user); `skipped` (the action failed).
    pub notice: String,
}

impl OrgActions {
    /// Finds `device` (an Exchange Identity or a DeviceId) in Exchange.
    pub async fn lookup(&self, org: &str, device: &str) -> Result<Target, ActionError> {
        let device = device.trim();
        let exchange = |source| ActionError::Exchange {
            org: org.to_owned(),
            source,
        };
        let unknown = || ActionError::UnknownDevice {
            org: org.to_owned(),
            device: device.to_owned(),
        };
        if device.is_empty() {
            return Err(unknown());
        }
        // An Identity names one partnership; a bare DeviceId is looked up with a filter, as
        // `-Identity` does not take one, and may match a partnership per mailbox.
        let listed = if device.contains('\\') {
            self.exchange.run(&GetDevice(device)).await
        } else {
            let filter = format!("DeviceId -eq '{}'", device.replace('\'', "''"));
            self.exchange
                .run(&GetMobileDevice {
                    filter: Some(filter),
                    ..GetMobileDevice::default()
                })
                .await
        };
        let mut found = match listed {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Err(unknown()),
            Err(e) => return Err(exchange(e)),
        };
        let dev = match found.len() {
            0 => return Err(unknown()),
            1 => found.remove(0),
            count => {
                return Err(ActionError::Ambiguous {
                    org: org.to_owned(),
                    device: device.to_owned(),
                    count,
                });
            }
        };
        let last_sync = match self.exchange.run(&GetStatistics(&dev.identity)).await {
            Ok(stats) => stats
                .into_iter()
                .next()
                .and_then(|s| s.last_success_sync)
                .map(|t| t.0),
            // The statistics only inform the confirmation; the action does not need them.
            Err(e) => {
                tracing::warn!(org, device = %dev.identity, "no device statistics: {e}");
                None
            }
        };
        let recipient = match self.recipient(dev.mailbox()).await {
            Ok(smtp) => Some(smtp),
            // The action does not need it; the confirmation shows that no notice will go.
            Err(e) => {
                tracing::warn!(org, device = %dev.identity, "no address for the user's notice: {e}");
                None
            }
        };
        Ok(Target {
            organization: org.to_owned(),
            identity: dev.identity.clone(),
            device_id: dev.device_id.clone(),
            user: dev.mailbox().to_owned(),
            user_display_name: dev.user_display_name.clone(),
            device_type: dev.device_type.clone(),
            model: dev.device_model.clone(),
            last_sync,
            recipient,
            device: dev,
        })
    }

    /// The `PrimarySmtpAddress` of `mailbox`.
    async fn recipient(&self, mailbox: &str) -> Result<String, String> {
        let found = self
            .exchange
            .run(&GetCasMailbox {
                identity: Some(mailbox.to_owned()),
                ..GetCasMailbox::default()
            })
            .await
            .map_err(|e| format!("the user's mailbox: {e}"))?;
        found
            .first()
            .map(|m: &CasMailbox| m.primary_smtp_address.clone())
            .ok_or_else(|| format!("mailbox `{mailbox}` not found"))
    }

    /// Journals, sends and records `action` on `target`, then sends the user's notice.
    #[allow(clippy::too_many_arguments)]
    pub async fn perform(
        &self,
        store: &Arc<Store>,
        org_id: OrgId,
        target: &Target,
        action: DeviceAction,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Outcome, ActionError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ActionError::NoReason(action));
        }
        let intent = ActionIntent {
            org: org_id,
            action,
            identity: &target.identity,
            device_id: &target.device_id,
            user: &target.user,
            actor,
            reason,
            at: now,
        };
        // Journaled before anything is sent: a crash from here on is seen at the next start.
        let id = store.begin_device_action(&intent)?;
        tracing::warn!(org = %target.organization, device = %target.identity, actor, action = action.as_str(), reason, "device action issued");
        let identity = target.identity.clone();
        let sent = match action {
            DeviceAction::Wipe | DeviceAction::AccountWipe => self
                .exchange
                .run(&ClearMobileDevice {
                    identity,
                    account_only: action == DeviceAction::AccountWipe,
                })
                .await
                .map(drop),
            DeviceAction::Remove => self
                .exchange
                .run(&RemoveMobileDevice { identity })
                .await
                .map(drop),
        };
        let (error, note) = match &sent {
            Ok(()) => (None, None),
            Err(e) => match self.gone_after_removal(action, target, e).await {
                Some(note) => (None, Some(note)),
                None => (Some(e.to_string()), None),
            },
        };
        let end = match (&error, &note) {
            (Some(error), _) => ActionEnd::Failed { error },
            (None, note) => ActionEnd::Done {
                note: note.as_deref(),
            },
        };
        let exchange = target.exchange_view();
        let notice = match (&self.notices, &target.recipient) {
            (Some(_), Some(recipient)) => Some(ActionNotice {
                reason: notice_reason(action),
                recipient,
                exchange: &exchange,
                locale: "",
                due_at: now + NOTICE_HOLD.as_secs() as i64,
            }),
            _ => None,
        };
        store.finish_device_action(id, end, notice.as_ref(), crate::timestamp::unix_now())?;
        let record = store
            .device_action(id)?
            .expect("the action recorded just now");
        let notice = match (&record.result, &self.notices, &notice) {
            (ActionResult::Done, Some((stage, template)), Some(_)) => {
                self.deliver(stage, template, store, &target.organization, id)
                    .await
            }
            (ActionResult::Done, None, _) => "not-configured".to_owned(),
            (ActionResult::Done, Some(_), None) => {
                "not-queued: no address for the user (their mailbox could not be read)".to_owned()
            }
            _ => "skipped".to_owned(),
        };
        Ok(Outcome { record, notice })
    }

    /// After `Remove-MobileDevice` answered `error`: whether the partnership is gone all the
    /// same, and the audit's note saying so. The client resends a write whose first attempt
    /// went unanswered; when that attempt had removed the partnership, the resend finds none.
    /// The partnership was there when the administrator confirmed; if Exchange confirms it
    /// is gone now, the removal asked for is done. A wipe is never read this way: a wipe
    /// that "cannot be found" has reached no device.
    async fn gone_after_removal(
        &self,
        action: DeviceAction,
        target: &Target,
        error: &ExchangeError,
    ) -> Option<String> {
        if action != DeviceAction::Remove || !error.is_not_found() {
            return None;
        }
        let gone = match self.exchange.run(&GetDevice(&target.identity)).await {
            Ok(found) => found.is_empty(),
            Err(e) => e.is_not_found(),
        };
        gone.then(|| {
            format!(
                "Remove-MobileDevice answered \"not found\" and Get-MobileDevice confirms the partnership is gone: an earlier attempt of this removal that went unanswered (or another removal since the confirmation) deleted it; recorded as done ({error})"
            )
        })
    }

    /// The first attempt at action `id`'s queued notice, recorded in the outbox like a notify
    /// stage's (a failure leaves it pending with its next attempt time, or gives up); says
    /// what became of it.
    async fn deliver(
        &self,
        stage: &NoticeStage,
        template: &TemplateSource,
        store: &Arc<Store>,
        org: &str,
        id: i64,
    ) -> String {
        let notice_id = ActionNotice::id(id);
        let found = {
            let (store, notice_id) = (store.clone(), notice_id.clone());
            tokio::task::spawn_blocking(move || store.notice(&notice_id))
                .await
                .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
        };
        let notice = match found {
            Ok(Some(n)) if n.status == NoticeStatus::Pending => n,
            Ok(Some(n)) => return n.status.as_str().to_owned(),
            Ok(None) => return "not-queued".to_owned(),
            Err(e) => return format!("pending: the outbox could not be read: {e}"),
        };
        let template = template();
        let digest = template.meta.digest.hex();
        let input = template_input(&stage.settings, &notice);
        let device = input.device.clone();
        let rendered = tokio::task::spawn_blocking(move || template.render(&input))
            .await
            .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
        let created = UNIX_EPOCH + Duration::from_secs(notice.created_at.max(0) as u64);
        let (attempt, result) = match rendered
            .map_err(|e| format!("template {}: {e}", &digest[..12.min(digest.len())]))
            .and_then(|message| {
                stage
                    .settings
                    .outgoing(notice_id.clone(), &device, message, created)
                    .map_err(|e| e.to_string())
            }) {
            Err(error) => (NoticeAttempt::Failed { error }, NoticeResult::Failed),
            Ok(outgoing) => match stage.channel.send(&outgoing).await {
                Ok(delivered) => (
                    NoticeAttempt::Sent {
                        response: delivered.response,
                    },
                    NoticeResult::Sent,
                ),
                Err(error) => match stage.retry.after_failure(notice.attempts + 1, &error) {
                    Retry::After(wait) => (
                        NoticeAttempt::Retry {
                            error: error.to_string(),
                            at: crate::timestamp::unix_now() + wait.as_secs() as i64,
                        },
                        NoticeResult::Retrying,
                    ),
                    Retry::GiveUp => (
                        NoticeAttempt::GiveUp {
                            error: error.to_string(),
                        },
                        NoticeResult::GivenUp,
                    ),
                },
            },
        };
        if let Some(metrics) = &self.metrics {
            metrics.notices(org, result, 1);
        }
        let said = match &attempt {
            NoticeAttempt::Sent { .. } => "sent".to_owned(),
            NoticeAttempt::Retry { error, .. } => {
                format!("pending: {error}; a sync's notify stage retries it")
            }
            NoticeAttempt::GiveUp { error } => format!("given-up: {error}"),
            NoticeAttempt::Failed { error } => format!("failed: {error}"),
        };
        if !matches!(attempt, NoticeAttempt::Sent { .. }) {
            tracing::warn!(org, notice = %notice_id, "device action notice: {said}");
        }
        let recorded = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                store.notice_attempted(
                    &notice_id,
                    Some(&digest),
                    &attempt,
                    crate::timestamp::unix_now(),
                )
            })
            .await
            .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
        };
        match recorded {
            Ok(_) => said,
            // Sent but not marked: the next sync sends it again under the same Message-ID.
            Err(e) => format!("{said} (not recorded in the outbox: {e})"),
        }
    }
}

/// Marks the device actions a crash cut short as `interrupted` and logs each: call it as the
/// store's writer at start. They are never sent again: the operator checks the device (its
/// wipe status in Exchange) and asks again if needed.
pub fn report_interrupted(store: &Store) -> Result<Vec<ActionRecord>, crate::store::StoreError> {
    let interrupted = store.interrupt_device_actions(crate::timestamp::unix_now())?;
    for r in &interrupted {
        tracing::error!(
            org = %r.organization, device = %r.identity, action = r.action.as_str(), actor = %r.actor,
            "a device action was in flight when the connector stopped: whether Exchange applied it is unknown, and it was NOT sent again; check the device in Exchange and decide"
        );
    }
    Ok(interrupted)
}

/// The reason code a notice template gets for `action` (its decision is `block`).
pub fn notice_reason(action: DeviceAction) -> &'static str {
    match action {
        DeviceAction::Wipe => "admin-wipe",
        DeviceAction::AccountWipe => "admin-account-wipe",
        DeviceAction::Remove => "admin-remove",
    }
}

/// Requests waiting for their confirmation, by token.
#[derive(Default)]
pub struct Confirmations {
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    target: Target,
    action: DeviceAction,
    expires: Instant,
}

impl Confirmations {
    fn insert(&self, target: Target, action: DeviceAction) -> std::io::Result<String> {
        let token = random_token()?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        pending.retain(|_, p| p.expires > now);
        pending.insert(
            token.clone(),
            Pending {
                target,
                action,
                expires: now + CONFIRMATION_TTL,
            },
        );
        Ok(token)
    }

    /// Takes the request of `token` (a token is good once).
    fn take(&self, token: &str) -> Option<(Target, DeviceAction)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let p = pending.remove(token)?;
        (p.expires > Instant::now()).then_some((p.target, p.action))
    }
}

/// 128 bits from the OS: the token binds a confirmation to the request the administrator saw.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// An Exchange Identity or a DeviceId.
    pub device: String,
    /// `wipe`, `account-wipe` or `remove`.
    pub action: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    pub token: String,
    pub reason: String,
}

fn parse_action(text: &str) -> Result<DeviceAction, ApiError> {
    match text {
        "wipe" => Ok(DeviceAction::Wipe),
        "account-wipe" => Ok(DeviceAction::AccountWipe),
        "remove" => Ok(DeviceAction::Remove),
        other => Err(ApiError::BadRequest(format!(
            "unknown action {other:?}: one of \"wipe\", \"account-wipe\", \"remove\""
        ))),
    }
}

fn org_actions(state: &AdminState, org: &str) -> Result<OrgActions, ApiError> {
    state
        .actions
        .get(org)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no organization named {org:?} is configured")))
}

fn api_error(e: ActionError) -> ApiError {
    match e {
        ActionError::NoReason(_) | ActionError::Ambiguous { .. } => {
            ApiError::BadRequest(e.to_string())
        }
        ActionError::UnknownDevice { .. } => ApiError::NotFound(e.to_string()),
        ActionError::Exchange { .. } => ApiError::Exchange(e.to_string()),
        ActionError::Store(e) => ApiError::Store(e),
    }
}

/// `POST /api/v1/organizations/{org}/device-actions`: step one. Looks the device up and
/// answers what would happen with a confirmation token; changes nothing.
pub async fn request(
    State(state): State<AdminState>,
    Path(org): Path<String>,
    Json(body): Json<ActionRequest>,
) -> Result<Json<Value>, ApiError> {
    let action = parse_action(&body.action)?;
    let actions = org_actions(&state, &org)?;
    let target = actions
        .lookup(&org, &body.device)
        .await
        .map_err(api_error)?;
    let token = state
        .confirmations
        .insert(target.clone(), action)
        .map_err(|e| ApiError::Exchange(format!("no confirmation token: {e}")))?;
    Ok(Json(json!({
        "device": target,
        "action": action,
        "effect": effect(action),
        "token": token,
        "expires_in_s": CONFIRMATION_TTL.as_secs(),
    })))
}

/// `POST /api/v1/organizations/{org}/device-actions/confirm`: step two. With the token of
/// step one and a reason, journals and runs the action and sends the notice.
pub async fn confirm(
    State(state): State<AdminState>,
    Path(org): Path<String>,
    Json(body): Json<Confirmation>,
) -> Result<Json<Value>, ApiError> {
    let actions = org_actions(&state, &org)?;
    if body.reason.trim().is_empty() {
        // Checked before the token is spent, so the dialog can ask again.
        return Err(ApiError::BadRequest(
            "a reason is required: say why the action is taken".into(),
        ));
    }
    let (target, action) = state
        .confirmations
        .take(&body.token)
        .filter(|(t, _)| t.organization == org)
        .ok_or_else(|| {
            ApiError::NotFound(
                "no such confirmation: the token is unknown, used or older than 5 minutes; request the action again".into(),
            )
        })?;
    let org_id = super::api::org_id(&state, &org)?;
    let outcome = actions
        .perform(
            &state.store,
            org_id,
            &target,
            action,
            "api",
            &body.reason,
            (state.now)(),
        )
        .await
        .map_err(api_error)?;
    Ok(Json(json!(outcome)))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub org: Option<String>,
}

/// `GET /api/v1/device-actions[?org=]`: the audit, newest first.
pub async fn audit(
    State(state): State<AdminState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let org = match &query.org {
        Some(name) => Some(super::api::org_id(&state, name)?),
        None => None,
    };
    let store = state.store.clone();
    let records = tokio::task::spawn_blocking(move || store.device_actions(org, 200))
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))?;
    Ok(Json(json!({ "actions": records })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_good_once_and_only_while_fresh() {
        let c = Confirmations::default();
        let target = Target {
            organization: "Contoso".into(),
            identity: "alice\\ExchangeActiveSyncDevices\\X".into(),
            device_id: "X".into(),
            user: "alice".into(),
            user_display_name: None,
            device_type: None,
            model: None,
            last_sync: None,
            recipient: None,
            device: serde_json::from_value(json!({
                "Identity": "alice\\ExchangeActiveSyncDevices\\X", "DeviceId": "X",
                "DeviceAccessState": "Allowed", "DeviceAccessStateReason": "Global"
            }))
            .unwrap(),
        };
        let token = c.insert(target.clone(), DeviceAction::Wipe).unwrap();
        assert_eq!(token.len(), 32);
        assert!(c.take("nope").is_none());
        assert_eq!(c.take(&token).unwrap().1, DeviceAction::Wipe);
        assert!(c.take(&token).is_none(), "used once");
        let stale = c.insert(target, DeviceAction::Remove).unwrap();
        c.pending.lock().unwrap().get_mut(&stale).unwrap().expires = Instant::now();
        assert!(c.take(&stale).is_none(), "expired");
    }

    #[test]
    fn actions_and_their_notice_reasons_are_valid_reason_codes() {
        for a in [
            DeviceAction::Wipe,
            DeviceAction::AccountWipe,
            DeviceAction::Remove,
        ] {
            let code = notice_reason(a);
            assert!(
                code.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit())
            );
            assert_eq!(parse_action(a.as_str()).unwrap(), a);
        }
        assert!(parse_action("format").is_err());
    }
}
