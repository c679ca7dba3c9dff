//! The bounded pool of Exchange requests in flight, with AIMD adaptive concurrency: the bound
//! starts at `parallel_commands`, halves when Exchange throttles (at most once per round of
//! requests: the 429s of requests sent before the last cut don't cut again), and grows back by
//! about one per round of successful requests.

use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    last_cut: Instant,
}

#[derive(Debug)]
pub(crate) struct Aimd {
    max: usize,
    state: Mutex<State>,
    released: Notify,
}

/// One request's slot; released on drop.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    aimd: &'a Aimd,
    started: Instant,
}

impl Aimd {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Aimd {
            max,
            state: Mutex::new(State {
                limit: max as f64,
                in_flight: 0,
                last_cut: Instant::now(),
            }),
            released: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// The bound now (between 1 and the configured maximum).
    pub fn current(&self) -> usize {
        (self.lock().limit as usize).clamp(1, self.max)
    }

    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < (s.limit as usize).clamp(1, self.max) {
                    s.in_flight += 1;
                    return Permit {
                        aimd: self,
                        started: Instant::now(),
                    };
                }
            }
            released.await;
        }
    }
}

impl Permit<'_> {
    /// The request was answered: grow the bound by 1/bound (≈ +1 per round).
    pub fn success(self) {
        let mut s = self.aimd.lock();
        s.limit = (s.limit + 1.0 / s.limit).min(self.aimd.max as f64);
    }

    /// The request was throttled: halve the bound, unless it was sent before the last cut.
    pub fn throttled(self) {
        let mut s = self.aimd.lock();
        if self.started >= s.last_cut {
            s.limit = (s.limit / 2.0).max(1.0);
            s.last_cut = Instant::now();
            tracing::debug!(
                limit = s.limit,
                "Exchange throttled: fewer commands in flight"
            );
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.aimd.lock().in_flight -= 1;
        // One slot freed, one waiter woken (the longest waiting). Waking every waiter on each
        // answer made dozens of tasks contend for one slot per command: CPU the lab and the
        // rest of the sync need on a small machine. A slot the growing bound opens is taken at
        // the next answer; a waiter woken after a cut waits again for the next one.
        self.aimd.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn halves_once_per_round_and_grows_back() {
        let a = Aimd::new(16);
        let permits: Vec<_> = futures_lite(&a, 16).await;
        assert_eq!(a.current(), 16);
        tokio::time::advance(Duration::from_millis(1)).await;
        // Sixteen 429s from one round cut once.
        for p in permits {
            p.throttled();
        }
        assert_eq!(a.current(), 8);
        tokio::time::advance(Duration::from_millis(1)).await;
        a.acquire().await.throttled();
        assert_eq!(a.current(), 4);
        // About +1 per round of `limit` successes: 4 → 16 takes ~120.
        for _ in 0..100 {
            a.acquire().await.success();
        }
        assert!((12..16).contains(&a.current()), "{}", a.current());
        for _ in 0..100 {
            a.acquire().await.success();
        }
        assert_eq!(a.current(), 16, "grows back to the maximum, not beyond");
    }

    async fn futures_lite(a: &Aimd, n: usize) -> Vec<Permit<'_>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(a.acquire().await);
        }
        v
    }

    #[tokio::test]
    async fn never_more_in_flight_than_the_bound() {
        let a = std::sync::Arc::new(Aimd::new(3));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let now = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..30 {
            let (a, peak, now) = (a.clone(), peak.clone(), now.clone());
            set.spawn(async move {
                let p = a.acquire().await;
                let n = now.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                p.success();
            });
        }
        while set.join_next().await.is_some() {}
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
