//! The figures behind `/metrics`, kept in a `prometheus-client` registry.
//!
//! Two kinds of figures: *events and their times*, which the store does not keep (syncs by
//! outcome, their duration, last attempt and last failure, counted by the scheduler; runs by the
//! kind that ran, commands, plugin evaluations, plugin errors and notices, counted by the daemon
//! from each run's summary; requests by status, throttling, retried commands, CAS failovers and
//! whether Exchange answers, counted by the Exchange and Graph clients as they meet them), kept
//! here; and *gauges of state* read at scrape time from the store, the scheduler and the plugin
//! registry (see `admin::metrics`), which build a registry of their own for each scrape.
//!
//! Every counter an alert takes `increase()` of is created at 0 for each organization when the
//! daemon starts ([`Metrics::register_organization`]), so that its first event is an increase
//! and not a series appearing from nothing.

use std::time::Duration;

use crate::model::{RunKind, SyncKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::plugin::PluginErrorKind;
use crate::store::RunOutcome;

/// The upper bounds of the sync-duration buckets, in seconds: a quick sync of a few changes
/// takes under a second, a full sync of 100 000 devices over remote PowerShell hours.
const SYNC_DURATION_BUCKETS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// What a request to Exchange or Graph came to, whatever the transport (REST or remote
/// PowerShell): the `status` label of `easgate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    /// Answered with what was asked for.
    Ok,
    /// Answered with an error about the request itself (a cmdlet error, a 4xx).
    Refused,
    /// The credential was refused (401); the client renews it once.
    Unauthorized,
    /// Answered "slow down" (429, 503 with `Retry-After`, Graph's 503/504).
    Throttled,
    /// No usable answer: connection refused or reset, timeout, a server error.
    Failed,
}

impl RequestStatus {
    const ALL: [RequestStatus; 5] = [
        RequestStatus::Ok,
        RequestStatus::Refused,
        RequestStatus::Unauthorized,
        RequestStatus::Throttled,
        RequestStatus::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Ok => "ok",
            RequestStatus::Refused => "refused",
            RequestStatus::Unauthorized => "unauthorized",
            RequestStatus::Throttled => "throttled",
            RequestStatus::Failed => "failed",
        }
    }
}

/// What became of an Exchange command, for [`Metrics::command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    Sent,
    Failed,
    Retried,
}

impl CommandResult {
    fn as_str(self) -> &'static str {
        match self {
            CommandResult::Sent => "sent",
            CommandResult::Failed => "failed",
            CommandResult::Retried => "retried",
        }
    }
}

/// What became of a notice in a run, in the words of the run's notice report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeResult {
    /// Accepted by the mail server.
    Sent,
    /// The attempt failed; the notice stays pending with a next attempt time.
    Retrying,
    /// Refused for good, or out of attempts.
    GivenUp,
    /// Not renderable or not addressable (template error, bad address).
    Failed,
}

impl NoticeResult {
    const ALL: [NoticeResult; 4] = [
        NoticeResult::Sent,
        NoticeResult::Retrying,
        NoticeResult::GivenUp,
        NoticeResult::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            NoticeResult::Sent => "sent",
            NoticeResult::Retrying => "retrying",
            NoticeResult::GivenUp => "given-up",
            NoticeResult::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgLabels {
    org: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgKindLabels {
    org: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    org: String,
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    org: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    org: String,
    service: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    org: String,
    service: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

type Histograms = Family<OrgKindLabels, Histogram, fn() -> Histogram>;

fn sync_duration_histogram() -> Histogram {
    Histogram::new(SYNC_DURATION_BUCKETS)
}

/// A gauge of Unix seconds.
type Timestamp = Gauge<i64>;

/// One organization's per-request series for one service, held by its client: counting a
/// request is then an atomic add on a shared series, not a lookup of its labels (an owned
/// label string, a hash and a lock per request).
#[derive(Debug, Clone)]
pub struct ServiceCounters {
    /// By [`RequestStatus`], in the order of [`RequestStatus::ALL`].
    requests: [Counter; 5],
    throttled: Counter,
    /// Exchange only: whether it answers.
    connected: Option<Gauge>,
}

impl ServiceCounters {
    /// A request came to `status`. For Exchange, an answer of any kind means connected, and
    /// [`Metrics::exchange_unreachable`] the opposite.
    pub fn request(&self, status: RequestStatus) {
        self.requests[status as usize].inc();
        if let Some(connected) = &self.connected
            && status != RequestStatus::Failed
        {
            connected.set(1);
        }
    }

    /// The service answered "slow down".
    pub fn throttled(&self) {
        self.throttled.inc();
    }
}

/// The event figures, shared by the scheduler, the daemon, the clients and the admin API.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    syncs: Family<OutcomeLabels, Counter>,
    sync_runs: Family<OutcomeLabels, Counter>,
    sync_duration: Histograms,
    last_attempt: Family<OrgLabels, Timestamp>,
    last_failure: Family<OrgLabels, Timestamp>,
    commands: Family<ResultLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    throttling: Family<ServiceLabels, Counter>,
    cas_failovers: Family<OrgLabels, Counter>,
    exchange_connected: Family<OrgLabels, Gauge>,
    plugin_evaluations: Family<OrgLabels, Counter>,
    plugin_errors: Family<OrgKindLabels, Counter>,
    notices: Family<ResultLabels, Counter>,
    /// Per organization, when the policy failure last counted in `plugin_errors` was recorded
    /// (see [`Metrics::org_policy_failure`]).
    policy_failures_counted:
        std::sync::Mutex<std::collections::HashMap<String, std::time::SystemTime>>,
    statistics_failures: Family<OrgLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            syncs: Family::default(),
            sync_runs: Family::default(),
            sync_duration: Family::new_with_constructor(sync_duration_histogram),
            last_attempt: Family::default(),
            last_failure: Family::default(),
            commands: Family::default(),
            requests: Family::default(),
            throttling: Family::default(),
            cas_failovers: Family::default(),
            exchange_connected: Family::default(),
            plugin_evaluations: Family::default(),
            plugin_errors: Family::default(),
            notices: Family::default(),
            policy_failures_counted: Default::default(),
            statistics_failures: Family::default(),
            registry: Registry::default(),
        };
        m.register_sync_families();
        m.register_service_families();
        m
    }
}

impl Metrics {
    /// Registers the families the scheduler and the daemon count (help texts without a final
    /// full stop: the encoder adds one).
    fn register_sync_families(&mut self) {
        self.registry.register(
            "easgate_syncs",
            "Finished syncs by organization, the kind asked for, and whether the scheduler saw \
             them succeed, fail or be cancelled",
            self.syncs.clone(),
        );
        self.registry.register(
            "easgate_sync_runs",
            "Sync runs by organization, the kind that ran (a quick sync without a cursor runs \
             full) and the run's outcome (succeeded, partial, held, failed)",
            self.sync_runs.clone(),
        );
        self.registry.register_with_unit(
            "easgate_sync_duration",
            "Time taken by finished syncs, by organization and the kind asked for",
            Unit::Seconds,
            self.sync_duration.clone(),
        );
        self.registry.register(
            "easgate_last_sync_attempt_timestamp_seconds",
            "When the organization's last sync started (Unix time; since this process started)",
            self.last_attempt.clone(),
        );
        self.registry.register(
            "easgate_last_failed_sync_timestamp_seconds",
            "When the organization's last failed sync ended (Unix time; since this process \
             started)",
            self.last_failure.clone(),
        );
    }

    /// Registers the families the clients and the daemon count for Exchange, Graph, plugins
    /// and notices, and the build's.
    fn register_service_families(&mut self) {
        self.registry.register(
            "easgate_commands",
            "Exchange commands by organization and result (sent, failed, retried: sent again \
             after throttling, a failed CAS or an expired token)",
            self.commands.clone(),
        );
        self.registry.register(
            "easgate_requests",
            "Requests to Exchange and Graph by organization, service and what they came to (ok, \
             refused, unauthorized, throttled, failed)",
            self.requests.clone(),
        );
        self.registry.register(
            "easgate_throttling_events",
            "Throttling answers by organization and service (exchange, graph)",
            self.throttling.clone(),
        );
        self.registry.register(
            "easgate_cas_failovers",
            "Switches to another CAS by organization",
            self.cas_failovers.clone(),
        );
        self.registry.register(
            "easgate_exchange_connected",
            "1 when the organization's last Exchange request got an answer, 0 when the client \
             gave up for want of one",
            self.exchange_connected.clone(),
        );
        self.registry.register(
            "easgate_plugin_evaluations",
            "Devices evaluated by the access policy",
            self.plugin_evaluations.clone(),
        );
        self.registry.register(
            "easgate_plugin_errors",
            "Failed access-policy batches and notice renders by organization and kind of error",
            self.plugin_errors.clone(),
        );
        self.registry.register(
            "easgate_device_statistics_failures",
            "Devices decided without their last sync because reading their statistics \
             (Get-MobileDeviceStatistics) failed, by organization",
            self.statistics_failures.clone(),
        );
        self.registry.register(
            "easgate_notices",
            "Notices by organization and what their attempt came to (sent, retrying, given-up, \
             failed: not renderable or addressable)",
            self.notices.clone(),
        );
        self.registry.register(
            "easgate_build",
            "The running easgate's version, and the git commit it was built from when the build \
             named it (EASGATE_GIT_COMMIT)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("EASGATE_GIT_COMMIT").unwrap_or("unknown"),
            }),
        );
    }
}

/// Creates `family`'s series labelled `labels` (at 0) if it does not exist yet.
fn zero<S, M, C>(family: &Family<S, M, C>, labels: S)
where
    S: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    drop(family.get_or_create(&labels));
}

fn org(name: &str) -> String {
    name.to_owned()
}

impl Metrics {
    /// The registry of the event figures, for the scrape (see [`encode`]).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Exports `org`'s event counters (and its sync-duration histograms) at 0 from now on, so
    /// that the first event of each is an increase an alert (`increase(…[1h]) > 0`) can see,
    /// not a series that appears from nothing. Called once per organization at start.
    pub fn register_organization(&self, name: &str) {
        for kind in [SyncKind::Quick, SyncKind::Full] {
            let labels = OrgKindLabels {
                org: org(name),
                kind: kind.as_str(),
            };
            zero(&self.sync_duration, labels);
            for outcome in ["succeeded", "failed", "cancelled"] {
                zero(
                    &self.syncs,
                    OutcomeLabels {
                        org: org(name),
                        kind: kind.as_str(),
                        outcome,
                    },
                );
            }
        }
        for kind in [RunKind::Quick, RunKind::Full] {
            for outcome in [
                RunOutcome::Succeeded,
                RunOutcome::Partial,
                RunOutcome::Held,
                RunOutcome::Failed,
            ] {
                zero(
                    &self.sync_runs,
                    OutcomeLabels {
                        org: org(name),
                        kind: kind.as_str(),
                        outcome: outcome.as_str(),
                    },
                );
            }
        }
        self.zero_services(name);
    }

    /// [`Metrics::register_organization`] for the figures of the clients, commands, plugins
    /// and notices.
    fn zero_services(&self, name: &str) {
        for result in [
            CommandResult::Sent,
            CommandResult::Failed,
            CommandResult::Retried,
        ] {
            zero(
                &self.commands,
                ResultLabels {
                    org: org(name),
                    result: result.as_str(),
                },
            );
        }
        for service in ["exchange", "graph"] {
            zero(
                &self.throttling,
                ServiceLabels {
                    org: org(name),
                    service,
                },
            );
            for status in RequestStatus::ALL {
                zero(
                    &self.requests,
                    RequestLabels {
                        org: org(name),
                        service,
                        status: status.as_str(),
                    },
                );
            }
        }
        zero(&self.cas_failovers, OrgLabels { org: org(name) });
        zero(&self.plugin_evaluations, OrgLabels { org: org(name) });
        zero(&self.statistics_failures, OrgLabels { org: org(name) });
        // The kinds a decide or render call can fail with (the others happen at load time).
        for kind in [
            PluginErrorKind::Trap,
            PluginErrorKind::HostRefused,
            PluginErrorKind::Timeout,
            PluginErrorKind::Memory,
            PluginErrorKind::BadOutput,
            PluginErrorKind::Configure,
            PluginErrorKind::RenderRefused,
        ] {
            zero(
                &self.plugin_errors,
                OrgKindLabels {
                    org: org(name),
                    kind: kind.as_str(),
                },
            );
        }
        for result in NoticeResult::ALL {
            zero(
                &self.notices,
                ResultLabels {
                    org: org(name),
                    result: result.as_str(),
                },
            );
        }
    }

    /// A sync of `name` started at `at` (Unix seconds; called by the scheduler).
    pub fn sync_started(&self, name: &str, at: i64) {
        self.last_attempt
            .get_or_create(&OrgLabels { org: org(name) })
            .set(at);
    }

    /// A sync ended at `at` (Unix seconds; called by the scheduler).
    pub fn sync_finished(
        &self,
        name: &str,
        kind: SyncKind,
        outcome: &str,
        took: Duration,
        at: i64,
    ) {
        // The scheduler's three words, as the label's static values.
        let outcome = match outcome {
            "succeeded" => "succeeded",
            "cancelled" => "cancelled",
            _ => "failed",
        };
        self.syncs
            .get_or_create(&OutcomeLabels {
                org: org(name),
                kind: kind.as_str(),
                outcome,
            })
            .inc();
        self.sync_duration
            .get_or_create(&OrgKindLabels {
                org: org(name),
                kind: kind.as_str(),
            })
            .observe(took.as_secs_f64());
        if outcome == "failed" {
            self.last_failure
                .get_or_create(&OrgLabels { org: org(name) })
                .set(at);
        }
    }

    /// A sync run of `name` ended (called by the daemon with the runner's summary).
    pub fn run_recorded(&self, name: &str, kind: RunKind, outcome: RunOutcome) {
        self.sync_runs
            .get_or_create(&OutcomeLabels {
                org: org(name),
                kind: kind.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Hook for the sync runner: `n` commands of `name` were sent, failed or retried.
    pub fn command(&self, name: &str, result: CommandResult, n: u64) {
        self.commands
            .get_or_create(&ResultLabels {
                org: org(name),
                result: result.as_str(),
            })
            .inc_by(n);
    }

    /// The request and throttling series of organization `name` for `service` (`exchange` or
    /// `graph`), resolved once for a client to count into (see [`ServiceCounters`]).
    pub fn service(&self, name: &str, service: &'static str) -> ServiceCounters {
        let requests = RequestStatus::ALL.map(|status| {
            self.requests
                .get_or_create(&RequestLabels {
                    org: org(name),
                    service,
                    status: status.as_str(),
                })
                .clone()
        });
        let throttled = self
            .throttling
            .get_or_create(&ServiceLabels {
                org: org(name),
                service,
            })
            .clone();
        let connected = (service == "exchange").then(|| {
            self.exchange_connected
                .get_or_create(&OrgLabels { org: org(name) })
                .clone()
        });
        ServiceCounters {
            requests,
            throttled,
            connected,
        }
    }

    /// Hook for the Exchange client: it gave up on `name`'s Exchange, no CAS answering within
    /// its time (the opposite of an answer, see [`ServiceCounters::request`]).
    pub fn exchange_unreachable(&self, name: &str) {
        self.exchange_connected
            .get_or_create(&OrgLabels { org: org(name) })
            .set(0);
    }

    /// Hook for the sync runner: `name` switched to another CAS.
    pub fn cas_failover(&self, name: &str) {
        self.cas_failovers
            .get_or_create(&OrgLabels { org: org(name) })
            .inc();
    }

    /// Hook for the sync runner: `n` devices went through the access policy.
    pub fn plugin_evaluations(&self, name: &str, n: u64) {
        self.plugin_evaluations
            .get_or_create(&OrgLabels { org: org(name) })
            .inc_by(n);
    }

    /// Hook for the sync runner: a policy (or template) call of `name` failed.
    pub fn plugin_error(&self, name: &str, kind: PluginErrorKind) {
        self.plugin_errors
            .get_or_create(&OrgKindLabels {
                org: org(name),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Hook for the daemon: a sync of `name` found no policy to run with, for the failure of
    /// `kind` that the plugin registry recorded at `recorded_at`. The registry records a
    /// failure once per plugin version and settings it tries, and each sync retry meets the
    /// same record again: it counts in `easgate_plugin_errors_total` once, so that an
    /// `increase()` alert fires once per broken settings, not once per retry (the readiness
    /// gauge `easgate_organization_policy_ready` shows it as long as it lasts). Returns
    /// whether it was counted now.
    pub fn org_policy_failure(
        &self,
        name: &str,
        kind: PluginErrorKind,
        recorded_at: std::time::SystemTime,
    ) -> bool {
        let mut counted = self
            .policy_failures_counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counted.get(name) == Some(&recorded_at) {
            return false;
        }
        counted.insert(name.to_owned(), recorded_at);
        drop(counted);
        self.plugin_error(name, kind);
        true
    }

    /// Whether `name`'s Exchange answered its last request (`Some(true)`), stopped answering
    /// (`Some(false)`), or was never asked (`None`), as the Exchange client reported it.
    pub fn exchange_reached(&self, name: &str) -> Option<bool> {
        let asked: u64 = RequestStatus::ALL
            .iter()
            .map(|status| {
                self.requests
                    .get_or_create(&RequestLabels {
                        org: org(name),
                        service: "exchange",
                        status: status.as_str(),
                    })
                    .get()
            })
            .sum();
        let connected = self
            .exchange_connected
            .get_or_create(&OrgLabels { org: org(name) })
            .get();
        (asked > 0).then_some(connected == 1)
    }

    /// Hook for the daemon: `n` devices of `name` were decided without their statistics
    /// because reading them failed.
    pub fn statistics_failures(&self, name: &str, n: u64) {
        self.statistics_failures
            .get_or_create(&OrgLabels { org: org(name) })
            .inc_by(n);
    }

    /// Hook for the daemon: `n` notices of `name` came to `result` in a run.
    pub fn notices(&self, name: &str, result: NoticeResult, n: u64) {
        self.notices
            .get_or_create(&ResultLabels {
                org: org(name),
                result: result.as_str(),
            })
            .inc_by(n);
    }
}

/// The exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (what Prometheus asks for first): `# EOF` at the end, counters'
    /// families named without `_total`, units declared.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: what a scraper that does not ask for OpenMetrics
    /// (curl, older tools) gets.
    Prometheus,
}

impl Format {
    /// The format for a request's `Accept` header: OpenMetrics when it names it, the
    /// Prometheus text format otherwise.
    pub fn for_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Writes `registries`, one after the other, in `format`.
pub fn encode(format: Format, registries: &[&Registry]) -> String {
    let mut out = String::new();
    // The encoders fail only when their writer does, and a String's never does.
    let infallible = "writing into a String";
    for registry in registries {
        match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode_registry(&mut out, registry)
                    .expect(infallible)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
                    .expect(infallible)
            }
        }
    }
    if format == Format::OpenMetrics {
        prometheus_client::encoding::text::encode_eof(&mut out).expect(infallible);
    }
    out
}

/// A family of gauges read at scrape time, labelled by the pairs given with each value.
pub type ScrapeGauges = Family<Vec<(&'static str, String)>, Gauge>;

/// Sets the gauge of `family` labelled `labels` to `value`.
pub fn set(family: &ScrapeGauges, labels: &[(&'static str, &str)], value: i64) {
    let labels: Vec<_> = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    family.get_or_create(&labels).set(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics, format: Format) -> String {
        encode(format, &[m.registry()])
    }

    #[test]
    fn hooks_add_up_per_label_set() {
        let m = Metrics::default();
        m.command("contoso", CommandResult::Sent, 3);
        m.command("contoso", CommandResult::Sent, 2);
        m.command("contoso", CommandResult::Failed, 1);
        m.sync_finished(
            "contoso",
            SyncKind::Full,
            "succeeded",
            Duration::from_millis(1500),
            1_700_000_000,
        );
        let text = text(&m, Format::Prometheus);
        assert!(text.contains("easgate_commands_total{org=\"contoso\",result=\"sent\"} 5\n"));
        assert!(text.contains("easgate_commands_total{org=\"contoso\",result=\"failed\"} 1\n"));
        assert!(
            text.contains("easgate_sync_duration_seconds_sum{org=\"contoso\",kind=\"full\"} 1.5\n")
        );
        assert!(
            text.contains(
                "easgate_sync_duration_seconds_bucket{org=\"contoso\",kind=\"full\",le=\"2.5\"} 1\n"
            ),
            "{text}"
        );
        assert!(!text.contains("easgate_last_failed_sync"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.cas_failover("a\"b\\c\nd");
        let text = text(&m, Format::Prometheus);
        assert!(
            text.contains("easgate_cas_failovers_total{org=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn throttling_errors_and_runs_carry_their_labels() {
        let m = Metrics::default();
        let graph = m.service("contoso", "graph");
        graph.throttled();
        graph.throttled();
        m.service("contoso", "exchange").throttled();
        m.command("contoso", CommandResult::Retried, 1);
        m.plugin_error("contoso", PluginErrorKind::Timeout);
        m.plugin_error("contoso", PluginErrorKind::BadOutput);
        m.run_recorded("contoso", RunKind::Full, RunOutcome::Partial);
        m.notices("contoso", NoticeResult::GivenUp, 4);
        graph.request(RequestStatus::Throttled);
        let text = text(&m, Format::Prometheus);
        for line in [
            "easgate_throttling_events_total{org=\"contoso\",service=\"graph\"} 2\n",
            "easgate_throttling_events_total{org=\"contoso\",service=\"exchange\"} 1\n",
            "easgate_commands_total{org=\"contoso\",result=\"retried\"} 1\n",
            "easgate_plugin_errors_total{org=\"contoso\",kind=\"timeout\"} 1\n",
            "easgate_plugin_errors_total{org=\"contoso\",kind=\"bad-output\"} 1\n",
            "easgate_sync_runs_total{org=\"contoso\",kind=\"full\",outcome=\"partial\"} 1\n",
            "easgate_notices_total{org=\"contoso\",result=\"given-up\"} 4\n",
            "easgate_requests_total{org=\"contoso\",service=\"graph\",status=\"throttled\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    /// Issue 17: the counters alerts take `increase()` of exist at 0 before their first event.
    #[test]
    fn an_organization_s_counters_start_at_zero() {
        let m = Metrics::default();
        m.register_organization("contoso");
        let text = text(&m, Format::Prometheus);
        for line in [
            "easgate_throttling_events_total{org=\"contoso\",service=\"exchange\"} 0\n",
            "easgate_throttling_events_total{org=\"contoso\",service=\"graph\"} 0\n",
            "easgate_cas_failovers_total{org=\"contoso\"} 0\n",
            "easgate_plugin_errors_total{org=\"contoso\",kind=\"trap\"} 0\n",
            "easgate_commands_total{org=\"contoso\",result=\"failed\"} 0\n",
            "easgate_syncs_total{org=\"contoso\",kind=\"quick\",outcome=\"failed\"} 0\n",
            "easgate_sync_runs_total{org=\"contoso\",kind=\"full\",outcome=\"held\"} 0\n",
            "easgate_notices_total{org=\"contoso\",result=\"retrying\"} 0\n",
            "easgate_requests_total{org=\"contoso\",service=\"exchange\",status=\"failed\"} 0\n",
            "easgate_sync_duration_seconds_count{org=\"contoso\",kind=\"full\"} 0\n",
            "easgate_device_statistics_failures_total{org=\"contoso\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn attempts_failures_and_reachability_are_times_and_states() {
        let m = Metrics::default();
        m.sync_started("contoso", 1_700_000_000);
        m.sync_finished(
            "contoso",
            SyncKind::Quick,
            "failed",
            Duration::from_secs(3),
            1_700_000_003,
        );
        m.service("contoso", "exchange")
            .request(RequestStatus::Refused);
        let text = text(&m, Format::Prometheus);
        for line in [
            "easgate_last_sync_attempt_timestamp_seconds{org=\"contoso\"} 1700000000\n",
            "easgate_last_failed_sync_timestamp_seconds{org=\"contoso\"} 1700000003\n",
            "easgate_exchange_connected{org=\"contoso\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        m.exchange_unreachable("contoso");
        let text = self::text(&m, Format::Prometheus);
        assert!(text.contains("easgate_exchange_connected{org=\"contoso\"} 0\n"));
    }

    /// OpenMetrics: counter families without `_total` in their descriptors, samples with it,
    /// units declared, `# EOF` last; the Prometheus format names families as their samples.
    #[test]
    fn both_formats_follow_their_conventions() {
        let m = Metrics::default();
        m.register_organization("contoso");
        let open = text(&m, Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# TYPE easgate_syncs counter\n"), "{open}");
        assert!(open.contains("# UNIT easgate_sync_duration_seconds seconds\n"));
        assert!(open.contains("easgate_build_info{version=\""), "{open}");
        assert!(!open.contains(".."), "one full stop per help text:\n{open}");
        let classic = text(&m, Format::Prometheus);
        assert!(!classic.contains("# EOF"));
        assert!(classic.contains("# TYPE easgate_syncs_total counter\n"));
        assert!(classic.contains("# TYPE easgate_build_info gauge\n"));
        assert_eq!(
            Format::for_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::for_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::for_accept(None), Format::Prometheus);
    }

    /// Regression: each sync retry of an organization whose policy settings are broken
    /// counted another `configure` error, so alerts on their increase fired on every retry.
    #[test]
    fn a_policy_failure_is_counted_once_however_often_a_sync_meets_it() {
        let m = Metrics::default();
        m.register_organization("contoso");
        let first = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10);
        let second = first + std::time::Duration::from_secs(5);
        let count = |m: &Metrics| {
            m.plugin_errors
                .get_or_create(&OrgKindLabels {
                    org: "contoso".into(),
                    kind: "configure",
                })
                .get()
        };
        assert!(m.org_policy_failure("contoso", PluginErrorKind::Configure, first));
        for _ in 0..3 {
            assert!(!m.org_policy_failure("contoso", PluginErrorKind::Configure, first));
        }
        assert_eq!(count(&m), 1);
        // Another failure (other settings, tried anew) counts again; another org on its own.
        assert!(m.org_policy_failure("contoso", PluginErrorKind::Configure, second));
        assert!(m.org_policy_failure("fabrikam", PluginErrorKind::Configure, second));
        assert_eq!(count(&m), 2);
    }

    #[test]
    fn exchange_is_unknown_until_asked_then_as_it_last_answered() {
        let m = Metrics::default();
        m.register_organization("contoso");
        assert_eq!(m.exchange_reached("contoso"), None);
        let exchange = m.service("contoso", "exchange");
        exchange.request(RequestStatus::Ok);
        assert_eq!(m.exchange_reached("contoso"), Some(true));
        m.exchange_unreachable("contoso");
        assert_eq!(m.exchange_reached("contoso"), Some(false));
    }
}
