//! The connector's own Graph request budget: a token bucket of `request_budget` requests per
//! 20 seconds, below Intune's 2000 per app, so that the connector waits before Graph has to
//! throttle it (and leaves room for the tenant's other apps).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Intune's throttling window.
pub const WINDOW: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub(crate) struct RequestBudget {
    capacity: f64,
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl RequestBudget {
    pub fn new(requests_per_window: u32) -> Self {
        let capacity = f64::from(requests_per_window.max(1));
        RequestBudget {
            capacity,
            per_second: capacity / WINDOW.as_secs_f64(),
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes one request from the budget, waiting until there is one.
    pub async fn take(&self) {
        loop {
            let wait = {
                let mut s = self
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
                s.0 = (s.0 + elapsed * self.per_second).min(self.capacity);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spends_the_budget_then_paces() {
        let b = RequestBudget::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            b.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..5 {
            b.take().await;
        }
        // Ten per 20 s refill at one per 2 s.
        let e = start.elapsed();
        assert!(
            e >= Duration::from_secs(10) && e < Duration::from_millis(10_100),
            "{e:?}"
        );
    }
}
