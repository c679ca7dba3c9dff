//! The pool of Client Access Servers: which one to send the next request to.
//!
//! The primary (the first configured) is used while it answers. When a CAS fails (connection
//! refused or reset, timeout, 5xx) it is marked down and the next one that is up takes over;
//! a down CAS is checked again after `probe_interval`, doubling after each failed check up to
//! five minutes. The primary is probed in the background while another CAS serves, and takes
//! over again as soon as a probe succeeds. With failover off only the primary is ever used.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::defaults::MAX_PROBE_INTERVAL;

/// One CAS as the pool sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CasHealth {
    pub url: String,
    pub up: bool,
    /// Configured (true) or found by `Get-ClientAccessService`.
    pub configured: bool,
}

#[derive(Debug)]
struct Server {
    base: String,
    configured: bool,
    up: bool,
    next_check: Instant,
    interval: Duration,
    probing: bool,
}

/// Where to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pick {
    Use(usize, String),
    /// Every usable CAS is down; the first is due for a check at this instant.
    Wait(Instant),
}

#[derive(Debug)]
pub(crate) struct CasPool {
    servers: Mutex<Vec<Server>>,
    failover: bool,
    probe_interval: Duration,
}

impl CasPool {
    pub fn new(urls: &[String], failover: bool, probe_interval: Duration) -> Self {
        let now = Instant::now();
        let servers = urls
            .iter()
            .map(|u| Server {
                base: u.trim_end_matches('/').to_owned(),
                configured: true,
                up: true,
                next_check: now,
                interval: probe_interval,
                probing: false,
            })
            .collect();
        CasPool {
            servers: Mutex::new(servers),
            failover,
            probe_interval,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Server>> {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn failover(&self) -> bool {
        self.failover
    }

    /// The CAS for the next request.
    pub fn pick(&self, now: Instant) -> Pick {
        let s = self.lock();
        let usable = if self.failover { s.len() } else { 1 };
        if let Some((i, server)) = s.iter().take(usable).enumerate().find(|(_, x)| x.up) {
            return Pick::Use(i, server.base.clone());
        }
        // All down: try the one due first (that attempt is its check).
        let (i, due) = s
            .iter()
            .take(usable)
            .enumerate()
            .min_by_key(|(_, x)| x.next_check)
            .expect("at least one CAS");
        if due.next_check <= now {
            Pick::Use(i, due.base.clone())
        } else {
            Pick::Wait(due.next_check)
        }
    }

    /// The index of the CAS `base` if it is in the pool and up: where a listing bound to it
    /// goes on.
    pub fn up(&self, base: &str) -> Option<usize> {
        self.lock().iter().position(|x| x.up && x.base == base)
    }

    /// CAS `i` failed: down until its next check. A failed check doubles the wait; failures of
    /// requests that were already in flight when it went down don't (sixteen of them at once
    /// must not push the next check out to the maximum).
    pub fn failed(&self, i: usize, now: Instant) {
        let mut s = self.lock();
        let x = &mut s[i];
        if x.up {
            tracing::warn!(cas = %x.base, "CAS failed; using the next one");
            x.up = false;
            x.next_check = now + x.interval;
        } else if x.probing || now >= x.next_check {
            x.interval = (x.interval * 2).min(MAX_PROBE_INTERVAL.max(self.probe_interval));
            x.next_check = now + x.interval;
        }
        x.probing = false;
    }

    /// CAS `i` answered.
    pub fn succeeded(&self, i: usize) {
        let mut s = self.lock();
        let x = &mut s[i];
        if !x.up {
            tracing::info!(cas = %x.base, "CAS answers again");
        }
        x.up = true;
        x.interval = self.probe_interval;
        x.probing = false;
    }

    /// The primary, if it is down, due for a check, not being checked, and another CAS serves
    /// meanwhile (otherwise requests themselves check it). Marks it as being checked.
    pub fn primary_probe_due(&self, now: Instant) -> Option<String> {
        if !self.failover {
            return None;
        }
        let mut s = self.lock();
        let others_up = s.iter().skip(1).any(|x| x.up);
        let p = &mut s[0];
        if !p.up && !p.probing && p.next_check <= now && others_up {
            p.probing = true;
            Some(p.base.clone())
        } else {
            None
        }
    }

    /// Adds a discovered CAS (unless known); returns whether it was new.
    pub fn add(&self, base: &str) -> bool {
        let base = base.trim_end_matches('/');
        let mut s = self.lock();
        if s.iter().any(|x| x.base.eq_ignore_ascii_case(base)) {
            return false;
        }
        s.push(Server {
            base: base.to_owned(),
            configured: false,
            up: true,
            next_check: Instant::now(),
            interval: self.probe_interval,
            probing: false,
        });
        true
    }

    /// Whether `origin` (`scheme://host[:port]`) is one of the pool's servers.
    pub fn knows(&self, origin: &str) -> bool {
        let origin = normalized(origin);
        self.lock().iter().any(|x| normalized(&x.base) == origin)
    }

    pub fn urls(&self) -> Vec<String> {
        let s = self.lock();
        let usable = if self.failover { s.len() } else { 1 };
        s.iter().take(usable).map(|x| x.base.clone()).collect()
    }

    pub fn health(&self) -> Vec<CasHealth> {
        self.lock()
            .iter()
            .map(|x| CasHealth {
                url: x.base.clone(),
                up: x.up,
                configured: x.configured,
            })
            .collect()
    }
}

/// A URL's origin as the URL standard writes it (lower case, default port left out), so that
/// `https://CAS01.contoso.com:443` and `https://cas01.contoso.com` compare equal.
fn normalized(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(failover: bool) -> CasPool {
        CasPool::new(
            &["http://a".into(), "http://b".into()],
            failover,
            Duration::from_secs(1),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn fails_over_backs_off_and_returns_to_the_primary() {
        let p = pool(true);
        let t0 = Instant::now();
        assert_eq!(p.pick(t0), Pick::Use(0, "http://a".into()));
        p.failed(0, t0);
        assert_eq!(p.pick(t0), Pick::Use(1, "http://b".into()));
        assert_eq!(p.primary_probe_due(t0), None, "not before the interval");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(p.primary_probe_due(t1), Some("http://a".into()));
        assert_eq!(p.primary_probe_due(t1), None, "one probe at a time");
        p.failed(0, t1);
        // The second check waits twice as long.
        assert_eq!(p.primary_probe_due(t1 + Duration::from_secs(1)), None);
        assert!(p.primary_probe_due(t1 + Duration::from_secs(2)).is_some());
        p.succeeded(0);
        assert_eq!(p.pick(t1), Pick::Use(0, "http://a".into()));

        // All down: wait for the first due check, then try it.
        p.failed(0, t1);
        p.failed(1, t1);
        match p.pick(t1) {
            Pick::Wait(at) => assert!(at > t1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.pick(t1 + Duration::from_secs(60)),
            Pick::Use(..)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_bound_to_a_cas_goes_on_there_only_while_it_is_up() {
        let p = pool(true);
        let t0 = Instant::now();
        assert_eq!(p.up("http://b"), Some(1));
        assert_eq!(p.up("http://c"), None, "not in the pool");
        p.failed(1, t0);
        assert_eq!(p.up("http://b"), None);
        // The primary serving again does not move a listing bound to the other.
        p.succeeded(1);
        assert_eq!(p.up("http://b"), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_of_requests_in_flight_back_off_once() {
        let p = pool(true);
        let t0 = Instant::now();
        for _ in 0..16 {
            p.failed(0, t0);
        }
        assert!(p.primary_probe_due(t0 + Duration::from_secs(1)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn without_failover_only_the_primary() {
        let p = pool(false);
        let t0 = Instant::now();
        p.failed(0, t0);
        assert!(matches!(p.pick(t0), Pick::Wait(_)));
        assert_eq!(
            p.pick(t0 + Duration::from_secs(1)),
            Pick::Use(0, "http://a".into())
        );
        assert_eq!(p.urls(), ["http://a"]);
        assert!(p.add("http://c/"));
        assert!(!p.add("HTTP://C"));
        assert!(p.knows("http://c"));
        assert!(p.knows("http://C:80"));
        assert!(!p.knows("http://c:8080"));
    }
}
