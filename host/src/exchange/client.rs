//! The transport-neutral Exchange client: one cmdlet → attempts (one per page, more when
//! throttled or failing over) → typed objects, whatever the wire ([`super::wire`]).
//!
//! For each attempt: take a slot in the bounded pool (`limit`), pick a CAS (`cas`), hand the
//! attempt to the wire, and act on what it came to ([`Attempt`]):
//! - a page → decode its objects strictly, naming a bad field, and follow its continuation;
//! - throttled → fewer requests in flight, wait `Retry-After` (jittered) or back off, again;
//! - the CAS failed → fail over and resend (a REST next link moves to the new CAS; a
//!   continuation bound to the failed CAS starts the listing over on the new one);
//! - a continuation refused as expired or invalid → start the listing over from its first
//!   page, at most twice (a token cannot be renewed, and the records already read may have
//!   moved on), then [`ExchangeError::PageLinkRefused`]; never for a write;
//! - unauthorized → one renewed credential if the wire has one, then resend;
//! - any other error → that error ([`ExchangeError::Cmdlet`] for Exchange's refusals).
//!
//! A write that was sent but not answered may have been applied. It is resent: the connector's
//! writes are `@{Add; Remove}` edits whose repetition has the same effect, except that Exchange
//! refuses to `Add` a present value — which after such an attempt is read as success.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::ExchangeError;
use super::cas::{CasHealth, CasPool, Pick};
use super::cmdlets::{Cmdlet, GetClientAccessService, GetCommand, GetExchangeServer};
use super::limit::{Aimd, Permit};
use super::psrp::PsrpWire;
use super::rest::RestWire;
use super::wire::{Attempt, Credential, Next, Prepared, Step, Wire};
use crate::config::{ExchangeTransport, Organization};
use crate::net::{self, HttpSettings, SetupError, record};

/// Exchange's largest page, and what the client asks for.
const PAGE_SIZE: usize = 1000;
/// Throttled attempts of one request before giving up.
const THROTTLE_ATTEMPTS: u32 = 30;
/// Times a listing starts over after a page link was refused, before giving up.
const LISTING_RESTARTS: u32 = 2;

#[derive(Debug)]
struct Inner {
    /// How attempts reach Exchange.
    wire: Wire,
    settings: HttpSettings,
    pool: CasPool,
    limit: Aimd,
    unavailable_timeout: Duration,
    /// When CAS discovery is next tried; `None` once it succeeded (or failover is off).
    discovery: tokio::sync::Mutex<Option<Instant>>,
    probe_interval: Duration,
    /// Where throttling answers and CAS failovers are counted, with the organization's name
    /// and its request series resolved once; set once by the daemon
    /// ([`ExchangeClient::observe`]), unset for one-off CLI syncs.
    observer: std::sync::OnceLock<(
        Arc<crate::metrics::Metrics>,
        String,
        crate::metrics::ServiceCounters,
    )>,
    /// Requests sent (every attempt, reads and writes; over remote PowerShell every pipeline
    /// started, as Exchange counts cmdlets), for a sync's summary.
    requests: std::sync::atomic::AtomicU64,
    /// The background check of the primary CAS while it runs: [`ExchangeClient::close`] stops
    /// it, so that it cannot open a remote PowerShell session after the others were closed.
    probe: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The Exchange admin API client of one organization; cheap to clone (one shared pool).
#[derive(Debug, Clone)]
pub struct ExchangeClient {
    inner: Arc<Inner>,
}

/// Builds an [`ExchangeClient`]; defaults from the configuration.
#[derive(Debug)]
pub struct ExchangeClientBuilder<'a> {
    org: &'a Organization,
    http: &'a HttpSettings,
    page_size: usize,
}

impl ExchangeClientBuilder<'_> {
    /// Objects per page (`Prefer: odata.maxpagesize`), 1 to 1000; 1000 by default.
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.clamp(1, PAGE_SIZE);
        self
    }

    /// The wire the organization's configuration asks for: the one place a transport is
    /// chosen.
    fn wire(&self) -> Result<Wire, SetupError> {
        Ok(match self.org.exchange.transport {
            ExchangeTransport::Rest => Wire::Rest(Box::new(RestWire::new(
                self.org,
                self.http,
                self.page_size,
            )?)),
            ExchangeTransport::PowerShell => Wire::PowerShell(PsrpWire::new(self.org, self.http)?),
        })
    }

    /// Resolves the secrets and builds the HTTP client.
    pub fn build(self) -> Result<ExchangeClient, SetupError> {
        let x = &self.org.exchange;
        let at = |f: &str| format!("organization `{}`: exchange.{f}", self.org.name);
        for (i, url) in x.cas_urls.iter().enumerate() {
            self.http
                .check_url(url)
                .map_err(|message| SetupError::Url {
                    field: at(&format!("cas_urls[{i}]")),
                    message,
                })?;
        }
        let wire = self.wire()?;
        Ok(ExchangeClient {
            inner: Arc::new(Inner {
                wire,
                settings: self.http.clone(),
                pool: CasPool::new(&x.cas_urls, x.cas_failover, x.probe_interval),
                limit: Aimd::new(x.parallel_commands),
                unavailable_timeout: x.unavailable_timeout,
                discovery: tokio::sync::Mutex::new(x.cas_failover.then(Instant::now)),
                probe_interval: x.probe_interval,
                observer: std::sync::OnceLock::new(),
                requests: Default::default(),
                probe: std::sync::Mutex::new(None),
            }),
        })
    }
}

/// The objects of one page of a cmdlet's answer (its next link is read by `NextLink`).
#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
}

/// One step of a listing, as [`ExchangeClient::run_paged`] hands it on.
#[derive(Debug)]
pub enum Listed<T> {
    /// The objects of the next page.
    Page(Vec<T>),
    /// Exchange refused a page link and the listing starts over: its pages come again from
    /// the first.
    Restarted,
}

/// Where [`ExchangeClient::run_paged`] hands a listing's pages.
pub trait PageSink<T> {
    /// Takes one step of the listing. The page after the next is asked for only once this is
    /// done: a taker that falls behind slows the listing down instead of piling pages up.
    fn take(&mut self, listed: Listed<T>) -> impl Future<Output = ()> + Send;
}

/// A whole listing: only the pages of the listing that got to its end count.
impl<T: Send> PageSink<T> for Vec<T> {
    async fn take(&mut self, listed: Listed<T>) {
        match listed {
            Listed::Page(objects) => self.extend(objects),
            Listed::Restarted => self.clear(),
        }
    }
}

impl ExchangeClient {
    pub fn builder<'a>(org: &'a Organization, http: &'a HttpSettings) -> ExchangeClientBuilder<'a> {
        ExchangeClientBuilder {
            org,
            http,
            page_size: PAGE_SIZE,
        }
    }

    /// Requests this client has sent: every attempt, of reads and writes alike (REST: each
    /// page's HTTP request; remote PowerShell: each pipeline started, not its `Receive`s).
    pub fn requests_sent(&self) -> u64 {
        self.inner
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts this client's requests, throttling answers and CAS failovers in `metrics` under
    /// `org`, and whether Exchange answers, from now on; a second call changes nothing.
    pub fn observe(&self, metrics: Arc<crate::metrics::Metrics>, org: &str) {
        let counters = metrics.service(org, "exchange");
        let _ = self.inner.observer.set((metrics, org.to_owned(), counters));
    }

    /// Closes what the transport keeps open on the servers: remote PowerShell's runspace
    /// pools (their shells count against the account's `PowerShellMaxConcurrency` until
    /// Exchange times them out). The daemon calls this on shutdown; the client still works
    /// afterwards (a pool reopens on the next command). Returns the shells closed.
    pub async fn close(&self) -> usize {
        let probe = self
            .inner
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(probe) = probe {
            probe.abort();
        }
        self.inner.wire.close().await
    }

    /// Which of `cmdlets` the account's session lacks (`Get-Command`), over remote PowerShell,
    /// where the management roles assigned to the account decide what it may run; `None` over
    /// REST, whose admin API cannot be asked.
    pub async fn cmdlets_lacking(
        &self,
        cmdlets: &[&str],
    ) -> Option<Result<Vec<String>, ExchangeError>> {
        if !matches!(self.inner.wire, Wire::PowerShell(_)) {
            return None;
        }
        let asked = GetCommand {
            names: cmdlets.iter().map(|c| (*c).to_owned()).collect(),
        };
        Some(self.run(&asked).await.map(|found| {
            cmdlets
                .iter()
                .filter(|c| !found.iter().any(|f| f.name.eq_ignore_ascii_case(c)))
                .map(|c| (*c).to_owned())
                .collect()
        }))
    }

    /// Each CAS the client knows and whether it is up.
    pub fn cas_health(&self) -> Vec<CasHealth> {
        self.inner.pool.health()
    }

    /// The configured upper bound of commands in flight (`parallel_commands`).
    pub fn parallel_commands(&self) -> usize {
        self.inner.limit.max()
    }

    /// The commands allowed in flight now (lowered while Exchange throttles).
    pub fn effective_concurrency(&self) -> usize {
        self.inner.limit.current()
    }

    /// Finds the other Client Access Servers (`Get-ClientAccessService`, cross-checked with
    /// `Get-ExchangeServer`) and adds them to the pool; returns every CAS URL now known.
    /// Run on the first command when failover is on; callable again at any time.
    pub async fn discover(&self) -> Result<Vec<String>, ExchangeError> {
        let services = self.run_pages(&GetClientAccessService {}).await?;
        let servers = self.run_pages(&GetExchangeServer {}).await?;
        for s in services {
            if s.is_out_of_service == Some(true) {
                continue;
            }
            let serves_clients = servers
                .iter()
                .find(|x| x.name.eq_ignore_ascii_case(&s.name))
                .is_none_or(|x| x.is_client_access_server != Some(false));
            let Some(base) = s.base_url().filter(|_| serves_clients) else {
                continue;
            };
            let base = match self.inner.wire.discovered(&base) {
                Ok(url) => url,
                Err(why) => {
                    tracing::warn!(name = %s.name, "not using a discovered CAS: {why}");
                    continue;
                }
            };
            match self.inner.settings.check_url(&base) {
                Ok(()) => {
                    if self.inner.pool.add(&base) {
                        tracing::info!(cas = %base, name = %s.name, "discovered a Client Access Server");
                    }
                }
                Err(why) => tracing::warn!(name = %s.name, "not using a discovered CAS: {why}"),
            }
        }
        Ok(self.inner.pool.urls())
    }

    async fn ensure_discovered(&self) {
        let mut next = self.inner.discovery.lock().await;
        let Some(at) = *next else { return };
        if Instant::now() < at {
            return;
        }
        match self.discover().await {
            Ok(_) => *next = None,
            Err(e) => {
                tracing::warn!("CAS discovery failed, will retry: {e}");
                *next = Some(Instant::now() + self.inner.probe_interval);
            }
        }
    }

    /// Runs every command with up to `parallel_commands` in flight (fewer while throttled);
    /// results in the order of `commands`.
    pub async fn run_all<C>(&self, commands: Vec<C>) -> Vec<Result<Vec<C::Output>, ExchangeError>>
    where
        C: Cmdlet + 'static,
    {
        self.ensure_discovered().await;
        let n = commands.len();
        let mut results: Vec<Option<Result<Vec<C::Output>, ExchangeError>>> =
            (0..n).map(|_| None).collect();
        let mut pending = commands.into_iter().enumerate();
        let mut set = tokio::task::JoinSet::new();
        // One task per slot of the bound is enough to keep it full; more would only wait.
        let tasks = self.inner.limit.max().max(1) * 2;
        let spawn = |set: &mut tokio::task::JoinSet<_>, (i, c): (usize, C)| {
            let me = self.clone();
            // A listing spawned for a discovery counts its pages for it.
            set.spawn(crate::model::progress::inherit_pages(async move {
                (i, me.run_pages(&c).await)
            }));
        };
        for item in pending.by_ref().take(tasks) {
            spawn(&mut set, item);
        }
        while let Some(done) = set.join_next().await {
            let (i, r) = done.expect("a command task panicked");
            results[i] = Some(r);
            crate::model::progress::command_done();
            if let Some(item) = pending.next() {
                spawn(&mut set, item);
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every command ran"))
            .collect()
    }

    /// Runs `cmdlet` to completion: every page of its result, in order.
    pub async fn run<C: Cmdlet>(&self, cmdlet: &C) -> Result<Vec<C::Output>, ExchangeError> {
        self.ensure_discovered().await;
        self.run_pages(cmdlet).await
    }

    /// Every page of `cmdlet`, without discovery (discovery itself runs through here).
    async fn run_pages<C: Cmdlet>(&self, cmdlet: &C) -> Result<Vec<C::Output>, ExchangeError> {
        let mut out = Vec::new();
        self.list_pages(cmdlet, &mut out).await?;
        Ok(out)
    }

    /// Lists `cmdlet` page by page, handing each page's objects to `sink` as soon as it is
    /// decoded (while the next page is on its way), for a caller that works on a long listing
    /// as it arrives. A listing that starts over (Exchange refused a page link, or the CAS
    /// streaming it failed) says so with [`Listed::Restarted`] before its first page comes
    /// again.
    pub async fn run_paged<C: Cmdlet>(
        &self,
        cmdlet: &C,
        sink: &mut impl PageSink<C::Output>,
    ) -> Result<(), ExchangeError> {
        self.ensure_discovered().await;
        self.list_pages(cmdlet, sink).await
    }

    async fn list_pages<C: Cmdlet>(
        &self,
        cmdlet: &C,
        sink: &mut impl PageSink<C::Output>,
    ) -> Result<(), ExchangeError> {
        let name = cmdlet.name();
        let call = Call {
            name,
            write: C::WRITE,
            prepared: self
                .inner
                .wire
                .prepare(name, &cmdlet.parameters(), cmdlet.properties()),
        };
        let mut restarts = 0;
        let mut started = false;
        'listing: loop {
            if std::mem::replace(&mut started, true) {
                sink.take(Listed::Restarted).await;
            }
            let (mut raw, mut next, mut cas) = match self.request(&call, &Step::First).await? {
                Requested::Answer(page) => page,
                Requested::Moved => unreachable!("a first page is bound to no CAS"),
            };
            loop {
                crate::model::progress::page_listed();
                // The next page is asked for before this one is decoded: a listing's pages can
                // only come one after another, and decoding 1000 objects takes milliseconds.
                let continuation = match next {
                    Next::Last => {
                        sink.take(Listed::Page(decode_page::<C>(name, &raw, &cas)?.value))
                            .await;
                        return Ok(());
                    }
                    Next::More(c) => c,
                    Next::Unreadable(e) => {
                        // The typed decoding names what is wrong, if the objects are; otherwise
                        // the frame itself is.
                        decode_page::<C>(name, &raw, &cas)?;
                        return Err(e);
                    }
                    Next::BadLink(e) => return Err(e),
                };
                // Decoding a page of 1000 objects takes milliseconds of CPU: on the blocking
                // pool, so that it never holds up the async thread that sends the next request.
                let decoding = tokio::task::spawn_blocking({
                    let cas = cas.clone();
                    let name = name.to_owned();
                    move || decode_page::<C>(&name, &raw, &cas)
                });
                let following = self.request(&call, &Step::Next(continuation)).await;
                let page = decoding.await.expect("decoding a page does not panic");
                sink.take(Listed::Page(page?.value)).await;
                (raw, next, cas) = match following {
                    Ok(Requested::Answer(answer)) => answer,
                    Ok(Requested::Moved) => {
                        tracing::warn!(
                            cmdlet = name,
                            "the CAS streaming the listing failed; starting it over on another"
                        );
                        continue 'listing;
                    }
                    Err(e) => {
                        self.restart_after(e, name, C::WRITE, &mut restarts)?;
                        continue 'listing;
                    }
                };
            }
        }
    }

    /// After a page's request failed: `Ok` when Exchange refused the page link and the listing
    /// may start over (counted in `restarts`), else the error to return.
    fn restart_after(
        &self,
        e: ExchangeError,
        name: &str,
        write: bool,
        restarts: &mut u32,
    ) -> Result<(), ExchangeError> {
        match self.inner.wire.refused_continuation(&e) {
            // A write never has a continuation to follow; were one refused, the
            // write must not be sent again from the start.
            Some(refusal) if !write && *restarts < LISTING_RESTARTS => {
                *restarts += 1;
                tracing::warn!(
                    cmdlet = name,
                    cas = %refusal.cas,
                    "Exchange refused a page link; starting the listing over: {}",
                    refusal.message
                );
                Ok(())
            }
            Some(refusal) if !write => Err(ExchangeError::PageLinkRefused {
                cmdlet: name.into(),
                restarts: *restarts,
                refusal: Box::new(refusal.clone()),
            }),
            _ => Err(e),
        }
    }

    /// Sends one step of a cmdlet until it is answered, failing over and waiting out
    /// throttling. Returns the page, where the listing goes on, and the CAS that answered; or
    /// [`Requested::Moved`] when the step's continuation is bound to a CAS that no longer
    /// serves.
    async fn request(&self, call: &Call<'_>, step: &Step) -> Result<Requested, ExchangeError> {
        let inner = &*self.inner;
        let mut tries = Tries::default();
        loop {
            let credential = match tries.renewed.take() {
                Some(c) => c,
                None => inner.wire.credential(call.name).await?,
            };
            let permit = inner.limit.acquire().await;
            let started = Instant::now();
            let (cas, base) = match self.pick(step, started) {
                Some(Pick::Use(i, base)) => (i, base),
                Some(Pick::Wait(at)) => {
                    drop(permit);
                    self.wait_for_cas(call.name, at, started, &mut tries)
                        .await?;
                    continue;
                }
                None => return Ok(Requested::Moved),
            };
            if cas != 0 {
                self.probe_primary_if_due(started);
            }
            if inner.wire.counts_as_request(step) {
                inner
                    .requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let attempt = inner.wire.attempt(
                &credential,
                call.name,
                &call.prepared,
                step,
                &base,
                &inner.pool,
            );
            // Once the servers are failing, no attempt outlasts what is left of
            // `unavailable_timeout`: a CAS that takes connections and never answers would
            // otherwise add a whole request timeout to it.
            let attempt = match tries.failing_since {
                None => attempt.await,
                Some(since) => {
                    let deadline = since + inner.unavailable_timeout;
                    match tokio::time::timeout_at(deadline, attempt).await {
                        Ok(attempt) => attempt,
                        Err(_) => {
                            // Out of time while failing; the last failure says why.
                            drop(permit);
                            inner.pool.failed(cas, Instant::now());
                            return Err(self.unavailable(call.name, since, tries.last_failure));
                        }
                    }
                }
            };
            self.count_request(&attempt);
            let sent = Sent { cas, base, started };
            let answered = self.answered(call, attempt, sent, permit, &credential, &mut tries);
            if let Some(answer) = answered.await? {
                return Ok(answer);
            }
        }
    }

    /// The CAS for `step`: any the pool picks, except that a continuation bound to one CAS
    /// goes on there while it is up, and nowhere else (`None`: it no longer serves).
    fn pick(&self, step: &Step, now: Instant) -> Option<Pick> {
        let bound = match step {
            Step::Next(c) => c.bound_to(),
            Step::First => None,
        };
        match bound {
            None => Some(self.inner.pool.pick(now)),
            Some(bound) => (self.inner.pool.up(bound)).map(|i| Pick::Use(i, bound.to_owned())),
        }
    }

    /// Every usable CAS is down: waits until the first is due for a check at `at`, or fails
    /// once the servers have been failing for `unavailable_timeout`.
    async fn wait_for_cas(
        &self,
        cmdlet: &str,
        at: Instant,
        now: Instant,
        tries: &mut Tries,
    ) -> Result<(), ExchangeError> {
        let since = *tries.failing_since.get_or_insert(now);
        let deadline = since + self.inner.unavailable_timeout;
        if now >= deadline {
            let last = std::mem::take(&mut tries.last_failure);
            return Err(self.unavailable(cmdlet, since, last));
        }
        tokio::time::sleep_until(at.min(deadline)).await;
        Ok(())
    }

    /// What an attempt's answer means: the step's answer, an error, or (`None`) another try
    /// after renewing the credential, waiting out throttling or failing over.
    async fn answered(
        &self,
        call: &Call<'_>,
        attempt: Attempt,
        sent: Sent,
        permit: Permit<'_>,
        credential: &Credential,
        tries: &mut Tries,
    ) -> Result<Option<Requested>, ExchangeError> {
        let inner = &*self.inner;
        let cmdlet = call.name;
        let Sent {
            cas: i,
            base,
            started,
        } = sent;
        match attempt {
            Attempt::Page { objects, next } => {
                permit.success();
                inner.pool.succeeded(i);
                return Ok(Some(Requested::Answer((objects, next, base))));
            }
            Attempt::Error(e) if tries.maybe_applied && call.write && e.is_repeat_of_applied() => {
                permit.success();
                inner.pool.succeeded(i);
                tracing::info!(cmdlet, "an unanswered attempt had been applied");
                let empty = br#"{"value":[]}"#.to_vec();
                return Ok(Some(Requested::Answer((empty, Next::Last, base))));
            }
            Attempt::Error(e) => {
                inner.pool.succeeded(i);
                return Err(e);
            }
            Attempt::Unauthorized(e) => {
                inner.pool.succeeded(i);
                drop(permit);
                match inner.wire.renew(credential, cmdlet).await? {
                    Some(c) => {
                        tries.renewed = Some(c);
                        self.count_retry(call);
                    }
                    None => return Err(e),
                }
            }
            Attempt::Throttled {
                retry_after,
                message,
            } => {
                inner.pool.succeeded(i);
                tries.failing_since = None;
                permit.throttled();
                if let Some((_, _, counters)) = inner.observer.get() {
                    counters.throttled();
                }
                tries.throttled += 1;
                if tries.throttled >= THROTTLE_ATTEMPTS {
                    return Err(ExchangeError::Throttled {
                        cmdlet: cmdlet.into(),
                        attempts: tries.throttled,
                        message,
                    });
                }
                tokio::time::sleep(net::throttle_delay(retry_after, tries.throttled - 1)).await;
                self.count_retry(call);
            }
            Attempt::CasFailed { reason, sent } => {
                drop(permit);
                tries.maybe_applied |= sent;
                self.cas_failed(cmdlet, i, format!("{base}: {reason}"), started, tries)?;
                self.count_retry(call);
            }
        }
        Ok(None)
    }

    /// CAS `i` failed an attempt begun at `started` (`failure` says how): the next goes to
    /// another CAS, if failover lets it, unless the servers have been failing for
    /// `unavailable_timeout`.
    fn cas_failed(
        &self,
        cmdlet: &str,
        i: usize,
        failure: String,
        started: Instant,
        tries: &mut Tries,
    ) -> Result<(), ExchangeError> {
        let inner = &*self.inner;
        let now = Instant::now();
        inner.pool.failed(i, now);
        if let Some((metrics, org, _)) = inner.observer.get()
            && inner.pool.failover()
        {
            metrics.cas_failover(org);
        }
        tries.last_failure = failure;
        // Failing since this attempt began, not since it gave up: a timed-out attempt's wait
        // counts towards `unavailable_timeout`.
        let since = *tries.failing_since.get_or_insert(started);
        if now >= since + inner.unavailable_timeout {
            let last = std::mem::take(&mut tries.last_failure);
            return Err(self.unavailable(cmdlet, since, last));
        }
        Ok(())
    }

    /// A command (a write; reads are not commands) is about to be sent again.
    fn count_retry(&self, call: &Call<'_>) {
        if let Some((metrics, org, _)) = self.inner.observer.get()
            && call.write
        {
            metrics.command(org, crate::metrics::CommandResult::Retried, 1);
        }
    }

    /// Counts an attempt's answer by what it came to (`easgate_requests_total`).
    fn count_request(&self, attempt: &Attempt) {
        use crate::metrics::RequestStatus;
        if let Some((_, _, counters)) = self.inner.observer.get() {
            let status = match attempt {
                Attempt::Page { .. } => RequestStatus::Ok,
                Attempt::Error(_) => RequestStatus::Refused,
                Attempt::Unauthorized(_) => RequestStatus::Unauthorized,
                Attempt::Throttled { .. } => RequestStatus::Throttled,
                Attempt::CasFailed { .. } => RequestStatus::Failed,
            };
            counters.request(status);
        }
    }

    /// The error of giving up for want of an answer; Exchange counts as unreachable.
    fn unavailable(&self, cmdlet: &str, since: Instant, last: String) -> ExchangeError {
        if let Some((metrics, org, _)) = self.inner.observer.get() {
            metrics.exchange_unreachable(org);
        }
        ExchangeError::Unavailable {
            cmdlet: cmdlet.into(),
            tried: self.inner.pool.urls(),
            waited: since.elapsed(),
            last,
            failover: self.inner.pool.failover(),
        }
    }

    /// While another CAS serves, checks the primary in the background when it is due.
    fn probe_primary_if_due(&self, now: Instant) {
        let Some(base) = self.inner.pool.primary_probe_due(now) else {
            return;
        };
        let me = self.clone();
        let probe = tokio::spawn(async move {
            let probe = GetExchangeServer {};
            let name = probe.name();
            let wire = &me.inner.wire;
            let prepared = wire.prepare(name, &probe.parameters(), probe.properties());
            let ok = match wire.credential(name).await {
                Err(_) => false,
                Ok(credential) => {
                    let permit = me.inner.limit.acquire().await;
                    let r = wire
                        .attempt(
                            &credential,
                            name,
                            &prepared,
                            &Step::First,
                            &base,
                            &me.inner.pool,
                        )
                        .await;
                    drop(permit);
                    // Any answer but a failure means it serves again (a 429 is an answer).
                    !matches!(r, Attempt::CasFailed { .. })
                }
            };
            if ok {
                me.inner.pool.succeeded(0);
            } else {
                me.inner.pool.failed(0, Instant::now());
            }
        });
        *self
            .inner
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(probe);
    }
}

/// A cmdlet being run: its name, whether it writes, and its rendering for the wire.
struct Call<'a> {
    name: &'a str,
    write: bool,
    prepared: Prepared,
}

/// What [`ExchangeClient::request`] remembers across its attempts of one step.
#[derive(Default)]
struct Tries {
    /// Throttled answers so far.
    throttled: u32,
    /// When the servers stopped answering (reset by any answer).
    failing_since: Option<Instant>,
    /// What went wrong last, for the error once they have been failing too long.
    last_failure: String,
    /// An attempt went unanswered after being sent: a write may have been applied.
    maybe_applied: bool,
    /// An unauthorized attempt renews the credential once; a renewed one refused again is an
    /// error.
    renewed: Option<Credential>,
}

/// Where and when an attempt was sent.
struct Sent {
    cas: usize,
    base: String,
    started: Instant,
}

/// What [`ExchangeClient::request`] came to.
enum Requested {
    /// The page's objects, where the listing goes on, and the CAS that answered.
    Answer((Vec<u8>, Next, String)),
    /// The continuation is bound to a CAS that no longer serves: the listing starts over.
    Moved,
}

fn decode_page<C: Cmdlet>(
    cmdlet: &str,
    raw: &[u8],
    cas: &str,
) -> Result<Page<C::Output>, ExchangeError> {
    // Records whose bytes are not JSON text fail the whole page, unless the cmdlet reads its
    // records one at a time (`net::record`).
    record::decode_page::<Page<C::Output>>(raw).map_err(|b| ExchangeError::BadResponse {
        cmdlet: cmdlet.into(),
        endpoint: cas.to_owned(),
        field: b.field,
        problem: b.problem,
    })
}
