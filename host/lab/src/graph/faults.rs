//! Faults the control API injects into the lab's Graph and token endpoint, beyond the
//! throttling budget of `throttle`: a stretch of time in which every n-th request is refused with
//! 429, a number of token requests that fail, and a number of `@odata.nextLink`s that have
//! expired when followed. Each fault is used up or runs out by itself, so a test sets it once and
//! the next sync meets a healthy service again.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// What to inject (`PUT /_lab/graph-faults`); every field is optional, absent ones are off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphFaults {
    /// Refuse every n-th Graph request (2: every other one) with 429, 0: none.
    pub throttle_every: u32,
    /// The `Retry-After` of those refusals, in seconds (at least 1).
    pub retry_after_secs: u64,
    /// For how long from now the refusals go on, in milliseconds.
    pub throttle_for_ms: u64,
    /// The next n token requests fail with Entra's `temporarily_unavailable` (HTTP 503).
    pub token_failures: u32,
    /// The next n requests that follow an `@odata.nextLink` find its page token expired.
    pub expire_next_links: u32,
}

#[derive(Debug, Default)]
struct State {
    every: u32,
    retry_after: u64,
    until: Option<Instant>,
    seen: u64,
    token_failures: u32,
    expire_links: u32,
}

/// The faults in force.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    state: Mutex<State>,
}

impl Faults {
    /// Replaces the faults in force with `f`, starting now.
    pub fn set(&self, f: GraphFaults) {
        let mut s = self.state.lock().expect("graph faults");
        *s = State {
            every: f.throttle_every,
            retry_after: f.retry_after_secs.max(1),
            until: (f.throttle_every > 0)
                .then(|| Instant::now() + Duration::from_millis(f.throttle_for_ms)),
            seen: 0,
            token_failures: f.token_failures,
            expire_links: f.expire_next_links,
        };
    }

    /// What is left of the faults in force.
    pub fn get(&self) -> GraphFaults {
        let s = self.state.lock().expect("graph faults");
        let left = s.until.map_or(0, |u| {
            u.saturating_duration_since(Instant::now()).as_millis() as u64
        });
        GraphFaults {
            throttle_every: if left > 0 { s.every } else { 0 },
            retry_after_secs: s.retry_after,
            throttle_for_ms: left,
            token_failures: s.token_failures,
            expire_next_links: s.expire_links,
        }
    }

    /// Whether this Graph request is one to refuse with 429; its `Retry-After` if so.
    pub fn throttle(&self) -> Option<u64> {
        let mut s = self.state.lock().expect("graph faults");
        let until = s.until?;
        if Instant::now() >= until {
            s.until = None;
            return None;
        }
        s.seen += 1;
        s.seen
            .is_multiple_of(u64::from(s.every.max(1)))
            .then_some(s.retry_after)
    }

    /// Whether this token request is one to fail.
    pub fn fail_token(&self) -> bool {
        take_one(&mut self.state.lock().expect("graph faults").token_failures)
    }

    /// Whether this page token (of a followed next link) has expired.
    pub fn expire_link(&self) -> bool {
        take_one(&mut self.state.lock().expect("graph faults").expire_links)
    }
}

fn take_one(n: &mut u32) -> bool {
    let had = *n > 0;
    *n = n.saturating_sub(1);
    had
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_other_request_is_refused_until_the_time_is_up() {
        let f = Faults::default();
        f.set(GraphFaults {
            throttle_every: 2,
            retry_after_secs: 3,
            throttle_for_ms: 1000,
            token_failures: 1,
            expire_next_links: 2,
        });
        let seen: Vec<Option<u64>> = (0..4).map(|_| f.throttle()).collect();
        assert_eq!(seen, [None, Some(3), None, Some(3)]);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!((f.throttle(), f.throttle()), (None, None));
        assert_eq!(f.get().throttle_every, 0);
        assert!(f.fail_token());
        assert!(!f.fail_token());
        assert!(f.expire_link() && f.expire_link() && !f.expire_link());
    }
}
