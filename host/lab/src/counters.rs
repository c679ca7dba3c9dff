//! What the lab served: every Exchange command (per cmdlet and per CAS, with the objects it
//! returned and its modelled latency), every Graph request, throttled and faulted requests, and
//! mail received. Tests and benchmarks compare these counts between runs, and derive the lower
//! bound of a sync's duration from them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-cmdlet figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmdletCounters {
    /// Requests answered (each page of a paged listing is one request).
    pub calls: u64,
    /// Of those, answered with an error.
    pub errors: u64,
    /// Objects returned.
    pub objects: u64,
    /// Modelled latency spent, in milliseconds.
    pub latency_ms: u64,
    /// Of the calls, those whose objects went out cut to a few properties (remote PowerShell's
    /// `… | Select-Object -Property …`).
    #[serde(default)]
    pub selected: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeCounters {
    /// Requests answered by a cmdlet, successfully or with a cmdlet error.
    pub commands: u64,
    /// Refused with 429 by the concurrency limit (not counted in `commands`).
    pub throttled: u64,
    /// Refused by a CAS told to fail (not counted in `commands`).
    pub faulted: u64,
    /// Refused before reaching a cmdlet: bad token, bad body (not counted in `commands`).
    pub rejected: u64,
    /// Sum of the modelled latency of all commands, in milliseconds.
    pub modelled_latency_ms: u64,
    /// Longest modelled latency of one command, in milliseconds.
    pub max_latency_ms: u64,
    /// Most requests admitted by the concurrency limit at once (never above the limit; a client
    /// that keeps the limit busy reaches it).
    #[serde(default)]
    pub peak_in_flight: u64,
    /// Sum of the time admitted requests held a slot of the limit (admission to answer), in
    /// milliseconds: `modelled_latency_ms` plus what the lab itself adds (its timer fires on the
    /// millisecond tick after the deadline). The limit's slots were idle for the rest of
    /// `concurrency × wall time`: the time between an answer and the client's next request.
    #[serde(default)]
    pub occupied_ms: u64,
    /// `commands` per cmdlet (canonical name; unknown cmdlets as sent).
    pub by_cmdlet: BTreeMap<String, CmdletCounters>,
    /// `commands` per CAS endpoint, by index.
    pub by_cas: Vec<u64>,
    /// The client headers the ExchangeOnlineManagement module sends with each `InvokeCommand`
    /// (`X-AnchorMailbox`, `X-CmdletName`, `X-ResponseFormat`, `X-ClientApplication`), counted
    /// per `"Name: value"` (`"Name"` alone when the request lacked it), over the requests that
    /// reached the cmdlet stage: what a test asserts a client sent.
    #[serde(default)]
    pub client_headers: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphCounters {
    /// Requests to Graph and to the token endpoint, including refused ones.
    pub requests: u64,
    /// Refused with 429 by the token bucket.
    pub throttled: u64,
    pub tokens_issued: u64,
    /// `requests` per endpoint (`token`, `managedDevices`, `transitiveMembers`, `users`, …).
    pub by_endpoint: BTreeMap<String, u64>,
}

/// A copy of all counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub exchange: ExchangeCounters,
    pub graph: GraphCounters,
    /// Messages accepted by the SMTP sink.
    pub mails: u64,
}

impl CounterSnapshot {
    /// The least time the Exchange commands counted here can take against the lab: their
    /// modelled latency spread perfectly over `concurrency` parallel requests, and never less than
    /// the longest single command.
    pub fn exchange_lower_bound(&self, concurrency: usize) -> Duration {
        let total = self.exchange.modelled_latency_ms;
        let spread = total.div_ceil(concurrency.max(1) as u64);
        Duration::from_millis(spread.max(self.exchange.max_latency_ms))
    }

    /// Exchange commands of one cmdlet (0 when never called).
    pub fn calls(&self, cmdlet: &str) -> u64 {
        self.exchange
            .by_cmdlet
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(cmdlet))
            .map_or(0, |(_, c)| c.calls)
    }
}

/// The live counters.
#[derive(Debug)]
pub(crate) struct Counters {
    inner: Mutex<CounterSnapshot>,
}

impl Counters {
    pub fn new(cas: usize) -> Self {
        let mut s = CounterSnapshot::default();
        s.exchange.by_cas = vec![0; cas];
        Self {
            inner: Mutex::new(s),
        }
    }

    fn with(&self, f: impl FnOnce(&mut CounterSnapshot)) {
        f(&mut self.inner.lock().expect("counters"));
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        self.inner.lock().expect("counters").clone()
    }

    pub fn reset(&self) {
        self.with(|s| {
            let cas = s.exchange.by_cas.len();
            *s = CounterSnapshot::default();
            s.exchange.by_cas = vec![0; cas];
        });
    }

    pub fn command(
        &self,
        cas: usize,
        cmdlet: &str,
        objects: usize,
        latency: Duration,
        error: bool,
    ) {
        let ms = latency.as_millis() as u64;
        self.with(|s| {
            let e = &mut s.exchange;
            e.commands += 1;
            e.modelled_latency_ms += ms;
            e.max_latency_ms = e.max_latency_ms.max(ms);
            if let Some(n) = e.by_cas.get_mut(cas) {
                *n += 1;
            }
            let c = e.by_cmdlet.entry(cmdlet.to_owned()).or_default();
            c.calls += 1;
            c.errors += u64::from(error);
            c.objects += objects as u64;
            c.latency_ms += ms;
        });
    }

    /// A call of `cmdlet` whose output went through `Select-Object -Property`.
    pub fn selected(&self, cmdlet: &str) {
        self.with(|s| {
            s.exchange
                .by_cmdlet
                .entry(cmdlet.to_owned())
                .or_default()
                .selected += 1;
        });
    }

    /// One request's client headers, `(name, value if sent)`.
    pub fn client_headers<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) {
        self.with(|s| {
            for (name, value) in headers {
                let key = match value {
                    Some(v) => format!("{name}: {v}"),
                    None => name.to_owned(),
                };
                *s.exchange.client_headers.entry(key).or_default() += 1;
            }
        });
    }

    pub fn exchange_throttled(&self) {
        self.with(|s| s.exchange.throttled += 1);
    }

    pub fn exchange_faulted(&self) {
        self.with(|s| s.exchange.faulted += 1);
    }

    pub fn exchange_rejected(&self) {
        self.with(|s| s.exchange.rejected += 1);
    }

    pub fn graph_request(&self, endpoint: &str) {
        self.with(|s| {
            s.graph.requests += 1;
            *s.graph.by_endpoint.entry(endpoint.to_owned()).or_default() += 1;
        });
    }

    pub fn graph_throttled(&self) {
        self.with(|s| s.graph.throttled += 1);
    }

    pub fn token_issued(&self) {
        self.with(|s| s.graph.tokens_issued += 1);
    }

    pub fn mail(&self) {
        self.with(|s| s.mails += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_bound_spreads_latency_over_the_limit() {
        let c = Counters::new(2);
        for _ in 0..10 {
            c.command(0, "Set-CASMailbox", 0, Duration::from_millis(100), false);
        }
        c.command(
            1,
            "Get-MobileDevice",
            1000,
            Duration::from_millis(350),
            false,
        );
        let s = c.snapshot();
        assert_eq!(s.exchange.commands, 11);
        assert_eq!(s.exchange.by_cas, [10, 1]);
        assert_eq!(s.calls("set-casmailbox"), 10);
        assert_eq!(s.exchange_lower_bound(4), Duration::from_millis(350));
        assert_eq!(s.exchange_lower_bound(1), Duration::from_millis(1350));
        c.reset();
        assert_eq!(c.snapshot().exchange.by_cas, [0, 0]);
    }
}
