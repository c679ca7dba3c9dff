//! The clock of the latency model: answers come due to a fraction of a millisecond.
//!
//! Tokio's timer works in whole milliseconds: a deadline fires on the first tick after it, and
//! an idle runtime parks for whole milliseconds. Measured at 16 in flight, a command modelled
//! at 10 ms held its concurrency slot 11.1 ms on average, so a client could not come within
//! 10 % of the lower bound the lab computes from its own model, whatever it did. One thread
//! here sleeps until the earliest deadline on a condition variable (the kernel's high-resolution
//! timers) and wakes each waiter when its deadline has passed, never before.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

/// A deadline and who waits for it.
struct Due {
    at: Instant,
    /// Tells apart deadlines of the same instant (the heap needs a total order).
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    due: BinaryHeap<Reverse<Due>>,
    next_seq: u64,
    /// Set when the lab shuts down: the thread ends.
    closed: bool,
}

#[derive(Default)]
struct Inner {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The lab's precise timer; its thread ends when it is dropped.
pub(crate) struct PreciseTimer {
    inner: Arc<Inner>,
}

impl PreciseTimer {
    pub fn new() -> Self {
        let inner = Arc::new(Inner::default());
        let thread = inner.clone();
        std::thread::Builder::new()
            .name("lab-timer".into())
            .spawn(move || run(&thread))
            .expect("the lab can start its timer thread");
        PreciseTimer { inner }
    }

    /// Completes at `at` or just after it, never before.
    pub async fn sleep_until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let (wake, woken) = oneshot::channel();
        {
            let mut queue = self.inner.lock();
            let seq = queue.next_seq;
            queue.next_seq += 1;
            let earliest = queue.due.peek().is_none_or(|Reverse(d)| at < d.at);
            queue.due.push(Reverse(Due { at, seq, wake }));
            if earliest {
                self.inner.changed.notify_one();
            }
        }
        // The sender is dropped only at shutdown, when nobody waits for the answer.
        let _ = woken.await;
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.changed.notify_one();
    }
}

fn run(inner: &Inner) {
    let mut queue = inner.lock();
    loop {
        if queue.closed {
            return;
        }
        let now = Instant::now();
        while queue.due.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Reverse(due) = queue.due.pop().expect("peeked");
            // The waiter may be gone (its request cancelled).
            let _ = due.wake.send(());
        }
        queue = match queue.due.peek() {
            Some(Reverse(next)) => {
                let wait = next.at - now;
                inner
                    .changed
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => inner
                .changed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_each_waiter_at_its_deadline_never_before() {
        let timer = Arc::new(PreciseTimer::new());
        let start = Instant::now();
        let mut waits = tokio::task::JoinSet::new();
        // Out of order, and two at the same instant.
        for ms in [30u64, 10, 20, 10, 1] {
            let timer = timer.clone();
            waits.spawn(async move {
                let at = start + Duration::from_millis(ms);
                timer.sleep_until(at).await;
                (ms, at, Instant::now())
            });
        }
        let mut woken = 0;
        while let Some(w) = waits.join_next().await {
            let (ms, at, woke) = w.unwrap();
            assert!(woke >= at, "{ms} ms woke {:?} early", at - woke);
            woken += 1;
        }
        assert_eq!(woken, 5);
        // A deadline in the past completes at once.
        timer.sleep_until(start).await;
    }
}
