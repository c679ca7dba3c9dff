//! Control of a running lab — in process through `LabControl`, and over HTTP under `/_lab/…` on
//! the control listener (not part of the simulated services' shapes).
//!
//! | request | effect |
//! |---|---|
//! | `GET /_lab/info` | URLs, tenant, client id/secret, static Exchange token |
//! | `GET /_lab/truth` | every device's Exchange access state and what it rests on |
//! | `GET /_lab/counters`, `POST /_lab/counters/reset` | commands served |
//! | `GET /_lab/mailbox-edits` | `Set-CASMailbox` commands that changed lists, per mailbox (alias) |
//! | `GET /_lab/cas` | each CAS: URL, running, mode |
//! | `POST /_lab/cas/{i}/stop`, `…/start`, `…/heal` | stop (refuse connections) / restart / serve normally |
//! | `POST /_lab/cas/{i}/slow` `{"extra_ms":n}` | add latency on that CAS |
//! | `POST /_lab/cas/{i}/fail` `{"status":503}` | answer every request with that status |
//! | `POST /_lab/cas/{i}/fail` `{"status":500,"fail_ratio":0.3,"seed":7,"after_apply":false}` | answer a seeded share of requests with it; `after_apply`: run the cmdlet, lose its answer |
//! | `GET`/`PUT /_lab/latency` | the Exchange latency model (`LatencyModel` JSON) |
//! | `GET`/`PUT /_lab/throttling` | `{"exchange_concurrency":n,"graph":{…GraphLimits}}`, fields optional |
//! | `GET`/`PUT /_lab/exchange-faults` | expired next links, of any cmdlet or one (`ExchangeFaults` JSON: `{"expire_next_links":n,"cmdlet":"Get-MobileDevice"}`) |
//! | `GET`/`PUT /_lab/powershell` | remote PowerShell throttling (`PowerShellLimits` JSON: `{"max_shells_per_user":18,"user_load_quota":{"requests":n,"seconds":s}}`) |
//! | `GET`/`PUT /_lab/graph-faults` | 429 on every n-th Graph call for a while, failing token requests, expired next links (`GraphFaults` JSON) |
//! | `GET`/`POST`/`DELETE /_lab/malformed` | break a device's record in the Exchange or Graph listings (`Malformation` JSON: `{"service":"exchange","device_id":…,"field":"DeviceModel","kind":"huge_field","bytes":1048576}`; kinds `missing_field`, `huge_field`, `lone_surrogate`, `invalid_utf8`, `duplicate`, `no_mailbox`) / list / clear |
//! | `PUT /_lab/token-lifetime` `{"seconds":n}` | lifetime of tokens issued from now on |
//! | `POST /_lab/devices` | add devices now (`NewDevices` JSON); answers their ids |
//! | `PUT /_lab/arrivals` `{"per_minute":x}` | add devices over time (0 stops) |
//! | `POST /_lab/devices/{id}/compliance` `{"complianceState":…,"checkedIn":false}` | change an enrolled device's compliance the way Intune does, `lastSyncDateTime` unchanged; `"checkedIn":true`: the device checked in with it (moves `lastSyncDateTime`) |
//! | `POST /_lab/devices/{id}/enroll` `{"complianceState":…}` | enroll a device in Intune |
//! | `POST /_lab/devices/{id}/retire` `{"pending":false}` | delete its Intune record; `"pending":true`: an admin's Retire, the record stays with `managementState` `retirePending` |
//! | `PUT`/`DELETE /_lab/groups/{group}/members/{user}` | make a mailbox's user a direct member of a group (id or display name) / take it out |
//! | `GET`/`DELETE /_lab/mail` | mail received by the SMTP sink |
//! | `GET`/`PUT /_lab/smtp` | recipients the sink refuses, AUTH it demands (`SmtpRules` JSON) |
//! | `POST /_lab/smtp/stop`, `…/start` | stop the sink (refuse connections) / start it again |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::counters::CounterSnapshot;
use crate::exchange::cost::LatencyModel;
use crate::exchange::faults::ExchangeFaults;
use crate::graph::faults::GraphFaults;
use crate::graph::throttle::GraphLimits;
use crate::malformed::Malformation;
use crate::org::{ComplianceState, DeviceTruth, NewDevices, OrgError};
use crate::server::{self, CasMode, CasStatus, LabError, Shared};
use crate::smtp::{ReceivedMail, SmtpRules};
use crate::utc::Utc;

/// Where the lab listens and what a connector needs to sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabInfo {
    pub organization: String,
    /// One base URL per CAS; the first is the primary.
    pub cas_urls: Vec<String>,
    pub graph_url: String,
    pub login_url: String,
    pub control_url: String,
    pub smtp: String,
    pub tenant_id: String,
    pub tenant_domain: String,
    pub client_id: String,
    pub client_secret: String,
    /// A non-expiring Exchange admin API token, for configs with a static bearer token.
    pub exchange_token: String,
    /// The remote PowerShell face: one `…/PowerShell/` URL per CAS, and its Basic account.
    pub powershell_urls: Vec<String>,
    pub powershell_user: String,
    pub powershell_password: String,
    pub devices: usize,
    pub managed_devices: usize,
    pub mailboxes: usize,
}

/// A handle on a running lab; cheap to clone. Every method is also reachable over HTTP.
#[derive(Clone, Debug)]
pub struct LabControl {
    pub(crate) shared: Arc<Shared>,
}

fn write(shared: &Shared) -> std::sync::RwLockWriteGuard<'_, crate::org::Org> {
    shared
        .org
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LabControl {
    pub fn info(&self) -> LabInfo {
        let s = &self.shared;
        let org = s
            .org
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        LabInfo {
            organization: s.tenant.organization.clone(),
            cas_urls: s.servers.iter().map(|x| x.base_url.clone()).collect(),
            graph_url: s.graph_url.clone(),
            login_url: s.graph_url.clone(),
            control_url: s.control_url.clone(),
            smtp: s.smtp_addr.to_string(),
            tenant_id: s.tenant.tenant_id.to_string(),
            tenant_domain: s.tenant.initial_domain.clone(),
            client_id: s.tenant.client_id.to_string(),
            client_secret: s.tenant.client_secret.clone(),
            exchange_token: s.exchange_token.clone(),
            powershell_urls: s
                .servers
                .iter()
                .map(|x| format!("{}/PowerShell/", x.base_url))
                .collect(),
            powershell_user: s.powershell.account().0.to_owned(),
            powershell_password: s.powershell.account().1.to_owned(),
            devices: org.devices.iter().flatten().count(),
            managed_devices: org.managed.iter().flatten().count(),
            mailboxes: org.mailboxes.len(),
        }
    }

    /// Stops CAS `i`; when this returns, its port refuses connections.
    pub async fn stop_cas(&self, i: usize) -> Result<(), LabError> {
        server::stop_cas(&self.shared, i).await
    }

    /// Starts CAS `i` again on the same port.
    pub async fn start_cas(&self, i: usize) -> Result<(), LabError> {
        server::start_cas(&self.shared, i, None).await
    }

    fn set_mode(&self, i: usize, mode: CasMode) -> Result<(), LabError> {
        let slot = self.shared.cas.get(i).ok_or(LabError::NoSuchCas(i))?;
        *slot.mode.lock().expect("cas mode") = mode;
        Ok(())
    }

    /// Makes CAS `i` answer `extra` slower than the latency model.
    pub fn slow_cas(&self, i: usize, extra: Duration) -> Result<(), LabError> {
        self.set_mode(
            i,
            CasMode::Slow {
                extra_ms: extra.as_millis() as u64,
            },
        )
    }

    /// Makes CAS `i` answer every request with `status` (e.g. 503).
    pub fn fail_cas(&self, i: usize, status: u16) -> Result<(), LabError> {
        self.set_mode(i, CasMode::Failing { status })
    }

    /// Makes CAS `i` answer a seeded share `ratio` (0 to 1) of requests with `status`; with
    /// `after_apply` the failing requests' cmdlets run first (their answers are lost).
    pub fn flaky_cas(
        &self,
        i: usize,
        status: u16,
        ratio: f64,
        seed: u64,
        after_apply: bool,
    ) -> Result<(), LabError> {
        let slot = self.shared.cas.get(i).ok_or(LabError::NoSuchCas(i))?;
        slot.flaky_draws
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.set_mode(
            i,
            CasMode::Flaky {
                status,
                fail_per_mille: (ratio.clamp(0.0, 1.0) * 1000.0).round() as u16,
                seed,
                after_apply,
            },
        )
    }

    /// Makes CAS `i` serve normally again.
    pub fn heal_cas(&self, i: usize) -> Result<(), LabError> {
        self.set_mode(i, CasMode::Up)
    }

    pub fn cas_status(&self) -> Vec<CasStatus> {
        self.shared
            .cas
            .iter()
            .enumerate()
            .map(|(i, slot)| CasStatus {
                index: i,
                name: self.shared.servers[i].name.clone(),
                url: self.shared.servers[i].base_url.clone(),
                running: slot.running(),
                mode: self.shared.cas_mode(i),
            })
            .collect()
    }

    pub fn latency(&self) -> LatencyModel {
        self.shared.latency()
    }

    pub fn set_latency(&self, model: LatencyModel) {
        *self.shared.latency.write().expect("latency") = model;
    }

    pub fn exchange_concurrency(&self) -> usize {
        self.shared.gate.limit()
    }

    pub fn set_exchange_concurrency(&self, limit: usize) {
        self.shared.gate.set_limit(limit);
    }

    pub fn graph_limits(&self) -> GraphLimits {
        self.shared.throttle.limits()
    }

    pub fn set_graph_limits(&self, limits: GraphLimits) {
        self.shared.throttle.set_limits(limits);
    }

    /// Faults of Exchange from now on (replacing those in force).
    pub fn set_exchange_faults(&self, faults: ExchangeFaults) {
        self.shared.exchange_faults.set(faults);
    }

    /// What is left of the Exchange faults in force.
    pub fn exchange_faults(&self) -> ExchangeFaults {
        self.shared.exchange_faults.get()
    }

    /// Exchange's remote PowerShell throttling from now on (`PowerShellMaxConcurrency`, the user
    /// load quota); the quota's count starts afresh.
    pub fn set_powershell_limits(&self, limits: crate::PowerShellLimits) {
        self.shared.powershell.set_limits(limits);
    }

    /// What the session offers of `Select-Object` from now on: the command, as Exchange's
    /// session does beside the role's cmdlets (the default), a restricted endpoint's proxy that
    /// takes only `Get-Command`'s properties, or nothing (a pipeline naming it fails as a
    /// command not found).
    pub fn set_powershell_select_object(&self, offered: crate::SelectObject) {
        self.shared.powershell.set_select_object(offered);
    }

    /// Takes `cmdlets` out of the account's management roles from now on (none by default):
    /// its session has them no more, as after `Remove-ManagementRoleEntry`. An empty list
    /// gives every role cmdlet back.
    pub fn set_powershell_role_lacks(&self, cmdlets: &[&str]) {
        self.shared.powershell.set_role_lacks(cmdlets);
    }

    pub fn powershell_limits(&self) -> crate::PowerShellLimits {
        self.shared.powershell.limits()
    }

    /// What the `/PowerShell/` face's Windows authentication offers from now on (new sign-ins;
    /// connections already signed in stay so).
    pub fn set_windows_auth(&self, offered: crate::WindowsAuth) {
        self.shared.powershell.set_windows_auth(offered);
    }

    /// Remote PowerShell shells open on all CAS.
    pub fn powershell_shells(&self) -> usize {
        self.shared.powershell.open_shells()
    }

    /// Faults of Graph and the token endpoint from now on (replacing those in force).
    pub fn set_graph_faults(&self, faults: GraphFaults) {
        self.shared.graph_faults.set(faults);
    }

    /// What is left of the Graph faults in force.
    pub fn graph_faults(&self) -> GraphFaults {
        self.shared.graph_faults.get()
    }

    /// Breaks the record one service lists for a device, from now on.
    pub fn malform(&self, m: Malformation) {
        self.shared.malformed.add(m);
    }

    /// The malformations in force.
    pub fn malformations(&self) -> Vec<Malformation> {
        self.shared.malformed.all()
    }

    /// Lists every record as it is again.
    pub fn clear_malformations(&self) {
        self.shared.malformed.clear();
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.tokens.set_lifetime(lifetime);
    }

    pub fn counters(&self) -> CounterSnapshot {
        let mut s = self.shared.counters.snapshot();
        s.exchange.peak_in_flight = self.shared.gate.peak() as u64;
        s.exchange.occupied_ms = self.shared.gate.occupied_ms();
        s
    }

    pub fn reset_counters(&self) {
        self.shared.counters.reset();
        self.shared.gate.reset_peak();
    }

    /// Every device's Exchange access state as Exchange computes it, and what it rests on.
    pub fn truth(&self) -> Vec<DeviceTruth> {
        self.shared
            .org
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .truth()
    }

    /// `Set-CASMailbox` commands that changed a mailbox's lists, per mailbox (its alias: the
    /// `Identity` Exchange prints), for mailboxes with any.
    pub fn mailbox_edits(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared
            .org
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .mailboxes
            .iter()
            .filter(|m| m.edits_applied > 0)
            .map(|m| (m.alias.to_string(), m.edits_applied))
            .collect()
    }

    /// Changes a device's compliance on Intune's side: `lastSyncDateTime` stays.
    pub fn set_compliance(&self, device_id: &str, state: ComplianceState) -> Result<(), OrgError> {
        write(&self.shared).set_compliance(device_id, state, false, Utc::now())
    }

    /// The device checks in and reports `state`: `lastSyncDateTime` moves to now.
    pub fn check_in(&self, device_id: &str, state: ComplianceState) -> Result<(), OrgError> {
        write(&self.shared).set_compliance(device_id, state, true, Utc::now())
    }

    /// An admin's Retire: the record stays, `retirePending`, until the device checks in.
    pub fn retire_pending(&self, device_id: &str) -> Result<(), OrgError> {
        write(&self.shared).retire_pending(device_id)
    }

    /// Makes `user` (a mailbox) a direct member of `group`, or not.
    pub fn set_membership(&self, group: &str, user: &str, member: bool) -> Result<(), OrgError> {
        write(&self.shared).set_membership(group, user, member)
    }

    pub fn enroll(&self, device_id: &str, state: ComplianceState) -> Result<(), OrgError> {
        write(&self.shared).enroll(device_id, state, Utc::now())
    }

    /// Sets a partnership's `LastSuccessSync` to `at` (Unix seconds).
    pub fn set_last_sync(&self, device_id: &str, at: i64) -> Result<(), OrgError> {
        write(&self.shared).set_last_sync(device_id, Utc::from_unix(at))
    }

    /// Sets the Graph `preferredLanguage` of `mailbox`'s user (alias, UPN or SMTP).
    pub fn set_preferred_language(
        &self,
        mailbox: &str,
        language: Option<&'static str>,
    ) -> Result<(), OrgError> {
        write(&self.shared).set_preferred_language(mailbox, language)
    }

    /// Sets the Exchange `Languages` of `mailbox` (alias, UPN or SMTP), most preferred first.
    pub fn set_mailbox_languages(
        &self,
        mailbox: &str,
        languages: &'static [&'static str],
    ) -> Result<(), OrgError> {
        write(&self.shared).set_mailbox_languages(mailbox, languages)
    }

    pub fn retire(&self, device_id: &str) -> Result<(), OrgError> {
        write(&self.shared).retire(device_id)
    }

    /// Adds device partnerships that connect now; returns their device ids.
    pub fn add_devices(&self, spec: &NewDevices) -> Result<Vec<String>, OrgError> {
        write(&self.shared).add_devices(spec, Utc::now())
    }

    /// Adds one new device every `60 / per_minute` seconds from now on (0 stops).
    pub fn set_arrivals(&self, per_minute: f64) {
        let mut slot = self.shared.arrivals.lock().expect("arrivals");
        if let Some(old) = slot.take() {
            old.abort();
        }
        if !(per_minute > 0.0 && per_minute.is_finite()) {
            return;
        }
        let period = Duration::from_secs_f64(60.0 / per_minute);
        let shared = Arc::downgrade(&self.shared);
        *slot = Some(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + period;
            let mut tick = tokio::time::interval_at(start, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tick.tick().await;
                // A weak reference: arrivals must not keep a dropped lab alive.
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let one = NewDevices {
                    count: 1,
                    ..NewDevices::default()
                };
                if let Err(e) = write(&shared).add_devices(&one, Utc::now()) {
                    tracing::warn!("lab arrivals: {e}");
                }
            }
        }));
    }

    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared.mail.all()
    }

    /// Waits until the sink holds at least `n` messages; returns them all.
    pub async fn wait_for_mails(&self, n: usize) -> Vec<ReceivedMail> {
        self.shared.mail.wait_for(n).await
    }

    pub fn clear_mails(&self) {
        self.shared.mail.clear();
    }

    /// Recipients the SMTP sink refuses from now on (replacing the previous rules).
    pub fn set_smtp_rules(&self, rules: SmtpRules) {
        self.shared.mail.set_rules(rules);
    }

    pub fn smtp_rules(&self) -> SmtpRules {
        self.shared.mail.rules()
    }

    /// Stops the SMTP sink; when this returns, its port refuses connections.
    pub async fn stop_smtp(&self) {
        crate::smtp::stop(&self.shared).await;
    }

    /// Starts the SMTP sink again on the same port.
    pub async fn start_smtp(&self) -> Result<(), LabError> {
        crate::smtp::start(&self.shared, None).await
    }
}

/// A control API error: `{"error": "…"}`.
struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<LabError> for ControlError {
    fn from(e: LabError) -> Self {
        let status = match e {
            LabError::NoSuchCas(_) => StatusCode::NOT_FOUND,
            LabError::Org(ref o) => return o.clone().into(),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ControlError(status, e.to_string())
    }
}

impl From<OrgError> for ControlError {
    fn from(e: OrgError) -> Self {
        let status = match e {
            OrgError::UnknownDevice(_)
            | OrgError::UnknownMailbox(_)
            | OrgError::UnknownGroup(_)
            | OrgError::NotEnrolled(_) => StatusCode::NOT_FOUND,
            OrgError::AlreadyEnrolled(_) | OrgError::DuplicateDevice(_) => StatusCode::CONFLICT,
        };
        ControlError(status, e.to_string())
    }
}

type Reply<T> = Result<Json<T>, ControlError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Slow {
    extra_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fail {
    #[serde(default = "default_fail_status")]
    status: u16,
    /// Share of requests that fail (seeded); every request when absent.
    fail_ratio: Option<f64>,
    #[serde(default)]
    seed: u64,
    /// The failing requests' cmdlets run first; only the answers fail.
    #[serde(default)]
    after_apply: bool,
}

fn default_fail_status() -> u16 {
    503
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Throttling {
    exchange_concurrency: Option<usize>,
    graph: Option<GraphLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Compliance {
    compliance_state: ComplianceState,
    /// The device checked in (moves `lastSyncDateTime`); otherwise Intune changed it.
    #[serde(default)]
    checked_in: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Retire {
    /// Keep the record, `retirePending`, instead of deleting it.
    #[serde(default)]
    pending: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Arrivals {
    per_minute: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lifetime {
    seconds: u64,
}

/// The `/_lab` router.
pub(crate) fn router(control: LabControl) -> Router {
    Router::new()
        .route(
            "/_lab/info",
            get(|State(c): State<LabControl>| async move { Json(c.info()) }),
        )
        .route(
            "/_lab/truth",
            get(|State(c): State<LabControl>| async move { Json(c.truth()) }),
        )
        .route(
            "/_lab/counters",
            get(|State(c): State<LabControl>| async move { Json(c.counters()) }),
        )
        .route(
            "/_lab/counters/reset",
            post(|State(c): State<LabControl>| async move {
                c.reset_counters();
                Json(c.counters())
            }),
        )
        .route(
            "/_lab/mailbox-edits",
            get(|State(c): State<LabControl>| async move { Json(c.mailbox_edits()) }),
        )
        .route(
            "/_lab/cas",
            get(|State(c): State<LabControl>| async move { Json(c.cas_status()) }),
        )
        .route("/_lab/cas/{i}/{action}", post(cas_action))
        .route(
            "/_lab/latency",
            get(|State(c): State<LabControl>| async move { Json(c.latency()) }).put(
                |State(c): State<LabControl>, Json(m): Json<LatencyModel>| async move {
                    c.set_latency(m);
                    Json(c.latency())
                },
            ),
        )
        .route(
            "/_lab/throttling",
            get(|State(c): State<LabControl>| async move { Json(throttling(&c)) }).put(
                |State(c): State<LabControl>, Json(t): Json<Throttling>| async move {
                    if let Some(n) = t.exchange_concurrency {
                        c.set_exchange_concurrency(n);
                    }
                    if let Some(g) = t.graph {
                        c.set_graph_limits(g);
                    }
                    Json(throttling(&c))
                },
            ),
        )
        .route(
            "/_lab/powershell",
            get(|State(c): State<LabControl>| async move { Json(c.powershell_limits()) }).put(
                |State(c): State<LabControl>, Json(l): Json<crate::PowerShellLimits>| async move {
                    c.set_powershell_limits(l);
                    Json(c.powershell_limits())
                },
            ),
        )
        .route(
            "/_lab/exchange-faults",
            get(|State(c): State<LabControl>| async move { Json(c.exchange_faults()) }).put(
                |State(c): State<LabControl>, Json(f): Json<ExchangeFaults>| async move {
                    c.set_exchange_faults(f);
                    Json(c.exchange_faults())
                },
            ),
        )
        .route(
            "/_lab/graph-faults",
            get(|State(c): State<LabControl>| async move { Json(c.graph_faults()) }).put(
                |State(c): State<LabControl>, Json(f): Json<GraphFaults>| async move {
                    c.set_graph_faults(f);
                    Json(c.graph_faults())
                },
            ),
        )
        .route(
            "/_lab/malformed",
            get(|State(c): State<LabControl>| async move { Json(c.malformations()) })
                .post(
                    |State(c): State<LabControl>, Json(m): Json<Malformation>| async move {
                        c.malform(m);
                        Json(c.malformations())
                    },
                )
                .delete(|State(c): State<LabControl>| async move {
                    c.clear_malformations();
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/_lab/token-lifetime",
            put(
                |State(c): State<LabControl>, Json(l): Json<Lifetime>| async move {
                    c.set_token_lifetime(Duration::from_secs(l.seconds));
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/_lab/devices",
            post(
                |State(c): State<LabControl>, Json(spec): Json<NewDevices>| async move {
                    let ids = c.add_devices(&spec)?;
                    Ok::<_, ControlError>(Json(json!({ "device_ids": ids })))
                },
            ),
        )
        .route(
            "/_lab/arrivals",
            put(
                |State(c): State<LabControl>, Json(a): Json<Arrivals>| async move {
                    c.set_arrivals(a.per_minute);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route("/_lab/devices/{id}/compliance", post(set_compliance))
        .route("/_lab/devices/{id}/enroll", post(enroll))
        .route(
            "/_lab/devices/{id}/retire",
            post(
                |State(c): State<LabControl>,
                 Path(id): Path<String>,
                 body: Option<Json<Retire>>| async move {
                    if body.unwrap_or_default().0.pending {
                        c.retire_pending(&id)?;
                    } else {
                        c.retire(&id)?;
                    }
                    Ok::<_, ControlError>(StatusCode::NO_CONTENT)
                },
            ),
        )
        .route(
            "/_lab/groups/{group}/members/{user}",
            put(
                |State(c): State<LabControl>, Path((group, user)): Path<(String, String)>| async move {
                    c.set_membership(&group, &user, true)?;
                    Ok::<_, ControlError>(StatusCode::NO_CONTENT)
                },
            )
            .delete(
                |State(c): State<LabControl>, Path((group, user)): Path<(String, String)>| async move {
                    c.set_membership(&group, &user, false)?;
                    Ok::<_, ControlError>(StatusCode::NO_CONTENT)
                },
            ),
        )
        .route(
            "/_lab/mail",
            get(|State(c): State<LabControl>| async move { Json(c.mails()) }).delete(
                |State(c): State<LabControl>| async move {
                    c.clear_mails();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/_lab/smtp",
            get(|State(c): State<LabControl>| async move { Json(c.smtp_rules()) }).put(
                |State(c): State<LabControl>, Json(rules): Json<SmtpRules>| async move {
                    c.set_smtp_rules(rules);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/_lab/smtp/{action}",
            post(
                |State(c): State<LabControl>, Path(action): Path<String>| async move {
                    match action.as_str() {
                        "stop" => c.stop_smtp().await,
                        "start" => c.start_smtp().await?,
                        other => {
                            return Err(ControlError(
                                StatusCode::NOT_FOUND,
                                format!("unknown SMTP action `{other}` (stop, start)"),
                            ));
                        }
                    }
                    Ok::<_, ControlError>(StatusCode::NO_CONTENT)
                },
            ),
        )
        .with_state(control)
}

fn throttling(c: &LabControl) -> Throttling {
    Throttling {
        exchange_concurrency: Some(c.exchange_concurrency()),
        graph: Some(c.graph_limits()),
    }
}

async fn cas_action(
    State(c): State<LabControl>,
    Path((i, action)): Path<(usize, String)>,
    body: Option<Json<serde_json::Value>>,
) -> Reply<Vec<CasStatus>> {
    let body = body.map(|b| b.0).unwrap_or(json!({}));
    let parse = |e: serde_json::Error| ControlError(StatusCode::BAD_REQUEST, e.to_string());
    match action.as_str() {
        "stop" => c.stop_cas(i).await?,
        "start" => c.start_cas(i).await?,
        "heal" => c.heal_cas(i)?,
        "slow" => {
            let s: Slow = serde_json::from_value(body).map_err(parse)?;
            c.slow_cas(i, Duration::from_millis(s.extra_ms))?;
        }
        "fail" => {
            let f: Fail = serde_json::from_value(body).map_err(parse)?;
            match f.fail_ratio {
                None => c.fail_cas(i, f.status)?,
                Some(r) if (0.0..=1.0).contains(&r) => {
                    c.flaky_cas(i, f.status, r, f.seed, f.after_apply)?
                }
                Some(r) => {
                    return Err(ControlError(
                        StatusCode::BAD_REQUEST,
                        format!("fail_ratio {r} is not between 0 and 1"),
                    ));
                }
            }
        }
        other => {
            return Err(ControlError(
                StatusCode::NOT_FOUND,
                format!("unknown CAS action `{other}` (stop, start, slow, fail, heal)"),
            ));
        }
    }
    Ok(Json(c.cas_status()))
}

async fn set_compliance(
    State(c): State<LabControl>,
    Path(id): Path<String>,
    Json(body): Json<Compliance>,
) -> Result<StatusCode, ControlError> {
    if body.checked_in {
        c.check_in(&id, body.compliance_state)?;
    } else {
        c.set_compliance(&id, body.compliance_state)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn enroll(
    State(c): State<LabControl>,
    Path(id): Path<String>,
    Json(body): Json<Compliance>,
) -> Result<StatusCode, ControlError> {
    c.enroll(&id, body.compliance_state)?;
    Ok(StatusCode::NO_CONTENT)
}
