//! When to try a notice again: exponential backoff with jitter (the clients' [`net::backoff`],
//! not a second one) up to a number of attempts, and only for failures that may pass.
//!
//! Pure: the outbox stores the attempt count and the time of the next attempt; this decides
//! both from the failure. No clock and no sleeping here.

use std::time::Duration;

use super::channel::SendError;
use crate::net;

/// How often and how far apart a notice is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure (doubling after each further one)...
    pub base: Duration,
    /// ...up to this.
    pub cap: Duration,
    /// Attempts in all, the first included; then the notice is given up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 minute doubling to 1 hour, 10 attempts: a mail server down for a maintenance window
    /// (up to about 5 hours) loses no notice, and a notice never waits an hour more than needed.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(3600),
            max_attempts: 10,
        }
    }
}

/// What to do with a notice after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after this wait.
    After(Duration),
    /// Don't: the failure is permanent, or the attempts are used up.
    GiveUp,
}

impl RetryPolicy {
    /// After attempt number `attempt` (1 for the first) failed with `error`.
    pub fn after_failure(&self, attempt: u32, error: &SendError) -> Retry {
        if error.is_permanent() || attempt >= self.max_attempts {
            return Retry::GiveUp;
        }
        Retry::After(net::backoff(attempt.saturating_sub(1), self.base, self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> SendError {
        SendError::Unreachable {
            server: "smtp.example:587".into(),
            detail: "connection refused".into(),
        }
    }

    #[test]
    fn backs_off_exponentially_with_jitter_up_to_the_cap_then_gives_up() {
        let p = RetryPolicy {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(100),
            max_attempts: 6,
        };
        // Equal jitter: between half and all of base·2^(attempt-1), capped.
        for (attempt, full) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100)] {
            for _ in 0..50 {
                let Retry::After(d) = p.after_failure(attempt, &transient()) else {
                    panic!("attempt {attempt} should be retried");
                };
                let full = Duration::from_secs(full);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(p.after_failure(6, &transient()), Retry::GiveUp);
        assert_eq!(p.after_failure(60, &transient()), Retry::GiveUp);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let rejected = SendError::Rejected {
            server: "smtp.example:587".into(),
            code: 550,
            detail: "no such mailbox".into(),
        };
        assert_eq!(
            RetryPolicy::default().after_failure(1, &rejected),
            Retry::GiveUp
        );
        let deferred = SendError::Deferred {
            server: "smtp.example:587".into(),
            code: 451,
            detail: "try later".into(),
        };
        assert!(matches!(
            RetryPolicy::default().after_failure(1, &deferred),
            Retry::After(_)
        ));
    }
}
