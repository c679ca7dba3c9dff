//! The counters behind `/metrics`, and the Prometheus text format they are written in.
//!
//! Two kinds of figures: *counters of events* the store does not keep (syncs by outcome and
//! their duration, counted by the scheduler; runs by the kind that ran, commands, plugin
//! evaluations and plugin errors, counted by the daemon from each run's summary; throttling,
//! retried commands and CAS failovers, counted by the Exchange and Graph clients as they meet
//! them), and *gauges of state* read at scrape time from the store and the plugin registry (see
//! `admin::metrics`).
//!
//! The text format is written by hand rather than with a client crate: a dozen families,
//! counters and gauges plus one sum/count pair, and label escaping are all it takes, and the
//! scrape-time gauges come from our own store queries, which a registry-of-collectors crate
//! would only wrap. The admin tests parse the output with a real Prometheus parser.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::model::{RunKind, SyncKind};
use crate::plugin::PluginErrorKind;
use crate::store::RunOutcome;

/// A counter's family and its labels, in output order.
type CounterKey = (&'static str, Vec<(&'static str, String)>);

/// Event counters, shared by the scheduler, the sync runner and the admin API.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<CounterKey, u64>>,
    durations: Mutex<BTreeMap<(String, SyncKind), (f64, u64)>>,
}

/// The counter families, with their help text, in output order.
const COUNTERS: &[(&str, &str)] = &[
    (
        "easgate_syncs_total",
        "Finished syncs by organization, the kind asked for, and whether the scheduler saw them \
         succeed, fail or be cancelled.",
    ),
    (
        "easgate_sync_runs_total",
        "Sync runs by organization, the kind that ran (a quick sync without a cursor runs full) \
         and the run's outcome (succeeded, partial, held, failed).",
    ),
    (
        "easgate_commands_total",
        "Exchange commands by organization and result (sent, failed, retried: sent again after \
         throttling, a failed CAS or an expired token).",
    ),
    (
        "easgate_throttling_events_total",
        "Throttling answers by organization and service (exchange, graph).",
    ),
    (
        "easgate_cas_failovers_total",
        "Switches to another CAS by organization.",
    ),
    (
        "easgate_plugin_evaluations_total",
        "Devices evaluated by the access policy.",
    ),
    (
        "easgate_plugin_errors_total",
        "Failed access-policy batches by organization and kind of error.",
    ),
];

/// What became of an Exchange command, for [`Metrics::command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    Sent,
    Failed,
    Retried,
}

impl Metrics {
    fn add(&self, family: &'static str, labels: Vec<(&'static str, String)>, n: u64) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *counters.entry((family, labels)).or_default() += n;
    }

    /// Exports `org`'s event counters at 0 from now on, so that the first event of each is an
    /// increase an alert (`increase(…[1h]) > 0`) can see, not a series that appears from
    /// nothing. Called once per organization at start.
    pub fn register_organization(&self, org: &str) {
        let org = || ("org", org.to_owned());
        let mut zero: Vec<CounterKey> = Vec::new();
        for kind in [SyncKind::Quick, SyncKind::Full] {
            for outcome in ["succeeded", "failed", "cancelled"] {
                let labels = vec![
                    org(),
                    ("kind", kind.as_str().to_owned()),
                    ("outcome", outcome.to_owned()),
                ];
                zero.push(("easgate_syncs_total", labels));
            }
        }
        for result in ["sent", "failed", "retried"] {
            zero.push((
                "easgate_commands_total",
                vec![org(), ("result", result.to_owned())],
            ));
        }
        for service in ["exchange", "graph"] {
            zero.push((
                "easgate_throttling_events_total",
                vec![org(), ("service", service.to_owned())],
            ));
        }
        zero.push(("easgate_cas_failovers_total", vec![org()]));
        zero.push(("easgate_plugin_evaluations_total", vec![org()]));
        // The kinds a decide call can fail with (the others happen at load time).
        for kind in [
            PluginErrorKind::Trap,
            PluginErrorKind::HostRefused,
            PluginErrorKind::Timeout,
            PluginErrorKind::Memory,
            PluginErrorKind::BadOutput,
            PluginErrorKind::Configure,
        ] {
            zero.push((
                "easgate_plugin_errors_total",
                vec![org(), ("kind", kind.as_str().to_owned())],
            ));
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for key in zero {
            counters.entry(key).or_default();
        }
    }

    /// A sync ended (called by the scheduler).
    pub fn sync_finished(&self, org: &str, kind: SyncKind, outcome: &str, took: Duration) {
        self.add(
            "easgate_syncs_total",
            vec![
                ("org", org.to_owned()),
                ("kind", kind.as_str().to_owned()),
                ("outcome", outcome.to_owned()),
            ],
            1,
        );
        let mut durations = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let slot = durations.entry((org.to_owned(), kind)).or_default();
        slot.0 += took.as_secs_f64();
        slot.1 += 1;
    }

    /// A sync run of `org` ended (called by the daemon with the runner's summary).
    pub fn run_recorded(&self, org: &str, kind: RunKind, outcome: RunOutcome) {
        self.add(
            "easgate_sync_runs_total",
            vec![
                ("org", org.to_owned()),
                ("kind", kind.as_str().to_owned()),
                ("outcome", outcome.as_str().to_owned()),
            ],
            1,
        );
    }

    /// Hook for the sync runner: `n` commands of `org` were sent, failed or retried.
    pub fn command(&self, org: &str, result: CommandResult, n: u64) {
        let result = match result {
            CommandResult::Sent => "sent",
            CommandResult::Failed => "failed",
            CommandResult::Retried => "retried",
        };
        self.add(
            "easgate_commands_total",
            vec![("org", org.to_owned()), ("result", result.to_owned())],
            n,
        );
    }

    /// Hook for the clients: a service of `org` (`exchange` or `graph`) answered "slow down".
    pub fn throttled(&self, org: &str, service: &'static str) {
        self.add(
            "easgate_throttling_events_total",
            vec![("org", org.to_owned()), ("service", service.to_owned())],
            1,
        );
    }

    /// Hook for the sync runner: `org` switched to another CAS.
    pub fn cas_failover(&self, org: &str) {
        self.add(
            "easgate_cas_failovers_total",
            vec![("org", org.to_owned())],
            1,
        );
    }

    /// Hook for the sync runner: `n` devices went through the access policy.
    pub fn plugin_evaluations(&self, org: &str, n: u64) {
        self.add(
            "easgate_plugin_evaluations_total",
            vec![("org", org.to_owned())],
            n,
        );
    }

    /// Hook for the sync runner: a policy call of `org` failed.
    pub fn plugin_error(&self, org: &str, kind: PluginErrorKind) {
        self.add(
            "easgate_plugin_errors_total",
            vec![("org", org.to_owned()), ("kind", kind.as_str().to_owned())],
            1,
        );
    }

    /// The event counters in the text format.
    pub fn render_counters(&self) -> String {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (family, help) in COUNTERS {
            family_header(&mut out, family, help, "counter");
            for ((name, labels), value) in counters.iter() {
                if name == family {
                    let labels: Vec<(&str, &str)> =
                        labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    sample(&mut out, family, &labels, *value as f64);
                }
            }
        }
        drop(counters);
        let durations = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        family_header(
            &mut out,
            "easgate_sync_duration_seconds",
            "Time taken by finished syncs.",
            "summary",
        );
        for ((org, kind), (sum, count)) in durations.iter() {
            let labels = [("org", org.as_str()), ("kind", kind.as_str())];
            sample(&mut out, "easgate_sync_duration_seconds_sum", &labels, *sum);
            sample(
                &mut out,
                "easgate_sync_duration_seconds_count",
                &labels,
                *count as f64,
            );
        }
        out
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a family.
pub fn family_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', r"\\").replace('\n', r"\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line, escaping the label values.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str(r"\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str(r"\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("org", "a\"b\\c\nd")], 1.0);
        assert_eq!(out, "m{org=\"a\\\"b\\\\c\\nd\"} 1\n");
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
        );
        let text = m.render_counters();
        assert!(text.contains("easgate_commands_total{org=\"contoso\",result=\"sent\"} 5\n"));
        assert!(text.contains("easgate_commands_total{org=\"contoso\",result=\"failed\"} 1\n"));
        assert!(
            text.contains("easgate_sync_duration_seconds_sum{org=\"contoso\",kind=\"full\"} 1.5\n")
        );
    }

    #[test]
    fn throttling_errors_and_runs_carry_their_labels() {
        let m = Metrics::default();
        m.throttled("contoso", "graph");
        m.throttled("contoso", "graph");
        m.throttled("contoso", "exchange");
        m.command("contoso", CommandResult::Retried, 1);
        m.plugin_error("contoso", PluginErrorKind::Timeout);
        m.plugin_error("contoso", PluginErrorKind::BadOutput);
        m.run_recorded("contoso", RunKind::Full, RunOutcome::Partial);
        let text = m.render_counters();
        for line in [
            "easgate_throttling_events_total{org=\"contoso\",service=\"graph\"} 2\n",
            "easgate_throttling_events_total{org=\"contoso\",service=\"exchange\"} 1\n",
            "easgate_commands_total{org=\"contoso\",result=\"retried\"} 1\n",
            "easgate_plugin_errors_total{org=\"contoso\",kind=\"timeout\"} 1\n",
            "easgate_plugin_errors_total{org=\"contoso\",kind=\"bad-output\"} 1\n",
            "easgate_sync_runs_total{org=\"contoso\",kind=\"full\",outcome=\"partial\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
