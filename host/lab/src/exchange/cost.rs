//! What a command costs on the lab's Exchange: a latency model (a fixed cost per command plus a
//! cost per returned object, overridable per cmdlet) and the per-tenant concurrency limit beyond
//! which Exchange refuses with "maximum number of concurrent requests".
//!
//! Together they give a sync a lower bound on its duration that does not depend on the machine:
//! the sum of modelled latencies divided by the concurrency limit (see `CounterSnapshot`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Exchange's default `PowerShellMaxConcurrency` throttling value: 18 concurrent requests.
pub const DEFAULT_CONCURRENCY: usize = 18;

/// Latency of one cmdlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CmdletLatency {
    /// Fixed cost of one request of the cmdlet, in milliseconds.
    pub base_ms: u64,
    /// Added per object the request returns, in microseconds.
    pub per_object_us: u64,
}

/// The latency model of the lab's Exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyModel {
    /// Fixed cost of one request of any cmdlet without an override, in milliseconds.
    pub base_ms: u64,
    /// Added per returned object for cmdlets without an override, in microseconds.
    pub per_object_us: u64,
    /// Overrides by cmdlet name (matched ignoring case), e.g. a slower `Set-CASMailbox`.
    pub cmdlets: BTreeMap<String, CmdletLatency>,
}

impl LatencyModel {
    /// The same cost for every cmdlet.
    pub fn uniform(base_ms: u64, per_object_us: u64) -> Self {
        Self {
            base_ms,
            per_object_us,
            cmdlets: BTreeMap::new(),
        }
    }

    /// Modelled duration of a request of `cmdlet` that returned `objects` objects.
    pub fn cost(&self, cmdlet: &str, objects: usize) -> Duration {
        let c = self
            .cmdlets
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(cmdlet))
            .map_or(
                CmdletLatency {
                    base_ms: self.base_ms,
                    per_object_us: self.per_object_us,
                },
                |(_, c)| *c,
            );
        Duration::from_millis(c.base_ms) + Duration::from_micros(c.per_object_us * objects as u64)
    }
}

/// Counts a tenant's requests in flight across all CAS endpoints.
#[derive(Debug)]
pub(crate) struct Gate {
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// Most requests in flight at once since the last `take_peak`: what a test of a client's
    /// concurrency control checks, since 429s alone don't show how many were admitted.
    peak: AtomicUsize,
    /// Microseconds slots were held since the last reset: what the admitted requests cost the
    /// tenant's limit in fact, against their modelled latency.
    occupied_us: AtomicU64,
}

/// A slot in the gate, released on drop.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    gate: &'a Gate,
    since: Instant,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
        let held = self.since.elapsed().as_micros() as u64;
        self.gate.occupied_us.fetch_add(held, Ordering::AcqRel);
    }
}

impl Gate {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: AtomicUsize::new(limit),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            occupied_us: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    /// Takes a slot, or `None` when the tenant already has `limit` requests in flight.
    pub fn try_enter(&self) -> Option<Slot<'_>> {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|before| {
                self.peak.fetch_max(before + 1, Ordering::AcqRel);
                Slot {
                    gate: self,
                    since: Instant::now(),
                }
            })
    }

    /// Most requests admitted at once since the last reset.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// Milliseconds slots were held since the last reset.
    pub fn occupied_ms(&self) -> u64 {
        self.occupied_us.load(Ordering::Acquire) / 1000
    }

    /// Starts a new peak and occupancy measurement from the requests in flight now.
    pub fn reset_peak(&self) {
        self.peak
            .store(self.in_flight.load(Ordering::Acquire), Ordering::Release);
        self.occupied_us.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_uses_overrides_ignoring_case() {
        let mut m = LatencyModel::uniform(10, 100);
        m.cmdlets.insert(
            "Set-CASMailbox".into(),
            CmdletLatency {
                base_ms: 300,
                per_object_us: 0,
            },
        );
        assert_eq!(m.cost("Get-MobileDevice", 1000), Duration::from_millis(110));
        assert_eq!(m.cost("set-casmailbox", 5), Duration::from_millis(300));
    }

    #[test]
    fn gate_admits_up_to_the_limit() {
        let g = Gate::new(2);
        let a = g.try_enter().unwrap();
        let _b = g.try_enter().unwrap();
        assert!(g.try_enter().is_none());
        assert_eq!(g.peak(), 2);
        drop(a);
        g.reset_peak();
        assert_eq!(g.peak(), 1);
        assert!(g.try_enter().is_some());
        assert_eq!(g.peak(), 2);
    }

    #[test]
    fn latency_model_reads_flat_json() {
        let m: LatencyModel = serde_json::from_str(
            r#"{"base_ms": 50, "per_object_us": 200, "cmdlets": {"Set-CASMailbox": {"base_ms": 400}}}"#,
        )
        .unwrap();
        assert_eq!(m.base_ms, 50);
        assert_eq!(m.cmdlets["Set-CASMailbox"].base_ms, 400);
    }
}
