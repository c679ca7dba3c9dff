//! Graph throttling after Intune's documented limits: 4000 requests per 20 seconds per tenant and
//! 2000 per 20 seconds per app, as two token buckets. A request takes one token from both; when
//! either is empty it is refused with 429 and a `Retry-After` of the seconds until a token is back.
//!
//! Time is tokio's clock, so tests can run the buckets on paused time.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Request budgets per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphLimits {
    /// Requests per window for the whole tenant.
    pub tenant_requests: u32,
    /// Requests per window for one app (the connector's).
    pub app_requests: u32,
    /// Window length in milliseconds.
    pub window_ms: u64,
}

impl Default for GraphLimits {
    /// Intune's documented limits.
    fn default() -> Self {
        Self {
            tenant_requests: 4000,
            app_requests: 2000,
            window_ms: 20_000,
        }
    }
}

impl GraphLimits {
    /// Effectively no throttling, for benchmarks that measure the lab itself.
    pub fn unlimited() -> Self {
        Self {
            tenant_requests: u32::MAX,
            app_requests: u32::MAX,
            window_ms: 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(capacity),
            at: now,
        }
    }

    /// Refills at `capacity / window` per second up to `capacity`.
    fn refill(&mut self, capacity: u32, window: Duration, now: Instant) {
        let rate = f64::from(capacity) / window.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(capacity));
        self.at = now;
    }

    /// Time until one token is available.
    fn wait(&self, capacity: u32, window: Duration) -> Duration {
        let rate = f64::from(capacity) / window.as_secs_f64();
        Duration::from_secs_f64(((1.0 - self.tokens) / rate).max(0.0))
    }
}

#[derive(Debug)]
struct State {
    limits: GraphLimits,
    tenant: Bucket,
    app: Bucket,
}

#[derive(Debug)]
pub(crate) struct Throttle {
    state: Mutex<State>,
}

impl Throttle {
    pub fn new(limits: GraphLimits) -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(State {
                limits,
                tenant: Bucket::full(limits.tenant_requests, now),
                app: Bucket::full(limits.app_requests, now),
            }),
        }
    }

    /// Replaces the limits and refills both buckets.
    pub fn set_limits(&self, limits: GraphLimits) {
        *self.state.lock().expect("throttle") = Throttle::new(limits)
            .state
            .into_inner()
            .expect("fresh mutex");
    }

    pub fn limits(&self) -> GraphLimits {
        self.state.lock().expect("throttle").limits
    }

    /// Admits one request, or returns the `Retry-After` in whole seconds (at least 1).
    pub fn admit(&self) -> Result<(), u64> {
        let mut s = self.state.lock().expect("throttle");
        let now = Instant::now();
        let window = Duration::from_millis(s.limits.window_ms.max(1));
        let GraphLimits {
            tenant_requests,
            app_requests,
            ..
        } = s.limits;
        s.tenant.refill(tenant_requests, window, now);
        s.app.refill(app_requests, window, now);
        if s.tenant.tokens >= 1.0 && s.app.tokens >= 1.0 {
            s.tenant.tokens -= 1.0;
            s.app.tokens -= 1.0;
            return Ok(());
        }
        let wait = s
            .tenant
            .wait(tenant_requests, window)
            .max(s.app.wait(app_requests, window));
        Err(wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_refuses_beyond_the_budget_and_refills() {
        let t = Throttle::new(GraphLimits {
            tenant_requests: 10,
            app_requests: 4,
            window_ms: 4000,
        });
        for _ in 0..4 {
            assert_eq!(t.admit(), Ok(()));
        }
        // The app budget (4 per 4 s) is exhausted first: one token per second.
        assert_eq!(t.admit(), Err(1));
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(t.admit(), Ok(()));
        assert!(t.admit().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_rounds_up_to_whole_seconds() {
        let t = Throttle::new(GraphLimits {
            tenant_requests: 1,
            app_requests: 1,
            window_ms: 20_000,
        });
        assert_eq!(t.admit(), Ok(()));
        assert_eq!(t.admit(), Err(20));
        tokio::time::advance(Duration::from_millis(19_500)).await;
        assert_eq!(t.admit(), Err(1));
    }
}
