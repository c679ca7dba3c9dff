//! The REST `InvokeCommand` transport: one cmdlet → requests (one per page) → typed objects.
//!
//! For each request: take a slot in the bounded pool (`limit`), pick a CAS (`cas`), send with a
//! bearer token, and classify the answer:
//! - success → decode the page (`value`, `@odata.nextLink`), strictly, naming a bad field;
//! - 429, a 503 with `Retry-After`, or "maximum number of concurrent requests" → throttled:
//!   fewer requests in flight, wait `Retry-After` (jittered) or back off, try again;
//! - refused or dropped connection, timeout, other 5xx → that CAS failed: fail over and resend
//!   (the next page link is moved to the new CAS: its path and skip token are kept);
//! - a next link refused as expired or invalid (400 naming the skip token) → start the listing
//!   over from its first page, at most twice (a token cannot be renewed, and the records already
//!   read may have moved on), then [`ExchangeError::PageLinkRefused`]; never for a write;
//! - 401 with a client-credentials token → one renewal, then resend;
//! - any other error → [`ExchangeError::Cmdlet`] with Exchange's exception and category.
//!
//! A write that was sent but not answered may have been applied. It is resent: the connector's
//! writes are `@{Add; Remove}` edits whose repetition has the same effect, except that Exchange
//! refuses to `Add` a present value — which after such an attempt is read as success.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::cas::{CasHealth, CasPool, Pick};
use super::cmdlets::{Cmdlet, GetClientAccessService, GetExchangeServer};
use super::limit::Aimd;
use super::{CmdletFailure, CmdletTransport, ExchangeError};
use crate::config::{ExchangeAuth, Organization, Secret};
use crate::net::token::{Token, TokenCache};
use crate::net::{self, BadField, HttpSettings, SetupError, record};

/// Exchange's largest page, and what the client asks for.
const PAGE_SIZE: usize = 1000;
/// Throttled attempts of one request before giving up.
const THROTTLE_ATTEMPTS: u32 = 30;
/// Times a listing starts over after a page link was refused, before giving up.
const LISTING_RESTARTS: u32 = 2;

#[derive(Debug)]
enum Auth {
    Bearer(Secret),
    Tokens(TokenCache),
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    settings: HttpSettings,
    tenant: String,
    auth: Auth,
    pool: CasPool,
    limit: Aimd,
    unavailable_timeout: Duration,
    page_size: usize,
    /// When CAS discovery is next tried; `None` once it succeeded (or failover is off).
    discovery: tokio::sync::Mutex<Option<Instant>>,
    probe_interval: Duration,
    /// Where throttling answers and CAS failovers are counted, with the organization's name;
    /// set once by the daemon ([`ExchangeClient::observe`]), unset for one-off CLI syncs.
    observer: std::sync::OnceLock<(Arc<crate::metrics::Metrics>, String)>,
    /// HTTP requests sent (every attempt, reads and writes), for a sync's summary.
    requests: std::sync::atomic::AtomicU64,
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
        let http = self.http.client()?;
        let auth = match &x.auth {
            ExchangeAuth::Bearer { token } => {
                Auth::Bearer(token.resolve().map_err(|source| SetupError::Secret {
                    field: at("auth.token"),
                    source,
                })?)
            }
            other @ (ExchangeAuth::Basic { .. }
            | ExchangeAuth::Kerberos { .. }
            | ExchangeAuth::Ntlm { .. }) => {
                return Err(SetupError::Unsupported {
                    field: at("auth"),
                    message: format!(
                        "kind = \"{}\" signs in to remote PowerShell, not to the REST admin API",
                        other.kind()
                    ),
                });
            }
            ExchangeAuth::ClientCredentials { scope } => {
                let g = &self.org.graph;
                self.http
                    .check_url(&g.login_url)
                    .map_err(|message| SetupError::Url {
                        field: format!("organization `{}`: graph.login_url", self.org.name),
                        message,
                    })?;
                let secret = g
                    .client_secret
                    .resolve()
                    .map_err(|source| SetupError::Secret {
                        field: format!("organization `{}`: graph.client_secret", self.org.name),
                        source,
                    })?;
                Auth::Tokens(TokenCache::new(
                    http.clone(),
                    &g.login_url,
                    &g.tenant,
                    &g.client_id,
                    secret,
                    scope,
                ))
            }
        };
        Ok(ExchangeClient {
            inner: Arc::new(Inner {
                http,
                settings: self.http.clone(),
                tenant: x.tenant_id.clone(),
                auth,
                pool: CasPool::new(&x.cas_urls, x.cas_failover, x.probe_interval),
                limit: Aimd::new(x.parallel_commands),
                unavailable_timeout: x.unavailable_timeout,
                page_size: self.page_size,
                discovery: tokio::sync::Mutex::new(x.cas_failover.then(Instant::now)),
                probe_interval: x.probe_interval,
                observer: std::sync::OnceLock::new(),
                requests: Default::default(),
            }),
        })
    }
}

/// The objects of one page of a cmdlet's answer (its next link is read by `NextLink`).
#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
}

/// Exchange's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ErrorLine>,
}

#[derive(Deserialize)]
struct ErrorLine {
    #[serde(default)]
    message: String,
}

/// Just the next link of a page, read before its objects are decoded.
#[derive(Deserialize)]
struct NextLink {
    #[serde(rename = "@odata.nextLink", default)]
    next: Option<String>,
    /// What a PowerShell session would print as WARNING (e.g. a result cut at `-ResultSize`).
    #[serde(rename = "adminapi.warnings", default)]
    warnings: Option<Vec<String>>,
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

/// What one request came to.
enum Outcome {
    /// A JSON page, not decoded yet.
    Page(Vec<u8>),
    Throttled {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The CAS failed; `sent`: the request may have reached it.
    CasFailed {
        reason: String,
        sent: bool,
    },
    Unauthorized(ExchangeError),
    Error(ExchangeError),
}

const CONCURRENCY_TEXT: &str = "maximum number of concurrent requests";

/// Exchange's refusal of a followed next link's skip token (expired, or not valid for the
/// request): HTTP 400 naming the skip token. The admin API documents no code or exception for
/// it, so the message is what sets it apart from a refused parameter.
fn refused_page_link(e: &ExchangeError) -> Option<&CmdletFailure> {
    match e {
        ExchangeError::Cmdlet(f) if f.status == 400 => {
            let message = f.message.to_ascii_lowercase();
            (message.contains("skip token") || message.contains("skiptoken")).then_some(&**f)
        }
        _ => None,
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

    /// HTTP requests this client has sent: every attempt, of reads and writes alike.
    pub fn requests_sent(&self) -> u64 {
        self.inner
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts this client's throttling answers and CAS failovers in `metrics` under `org`
    /// from now on; a second call changes nothing.
    pub fn observe(&self, metrics: Arc<crate::metrics::Metrics>, org: &str) {
        let _ = self.inner.observer.set((metrics, org.to_owned()));
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
            set.spawn(crate::sync::progress::inherit_pages(async move {
                (i, me.run_pages(&c).await)
            }));
        };
        for item in pending.by_ref().take(tasks) {
            spawn(&mut set, item);
        }
        while let Some(done) = set.join_next().await {
            let (i, r) = done.expect("a command task panicked");
            results[i] = Some(r);
            crate::sync::progress::command_done();
            if let Some(item) = pending.next() {
                spawn(&mut set, item);
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every command ran"))
            .collect()
    }

    /// Every page of `cmdlet`, without discovery (discovery itself runs through here).
    async fn run_pages<C: Cmdlet>(&self, cmdlet: &C) -> Result<Vec<C::Output>, ExchangeError> {
        let mut out = Vec::new();
        self.list_pages(cmdlet, &mut out).await?;
        Ok(out)
    }

    /// Lists `cmdlet` page by page, handing each page's objects to `sink` as soon as it is
    /// decoded (while the next page is on its way), for a caller that works on a long listing
    /// as it arrives. A listing Exchange made start over (a refused page link) says so with
    /// [`Listed::Restarted`] before its first page comes again.
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
        #[derive(serde::Serialize)]
        struct Body<'a, P> {
            #[serde(rename = "CmdletInput")]
            input: Input<'a, P>,
        }
        #[derive(serde::Serialize)]
        struct Input<'a, P> {
            #[serde(rename = "CmdletName")]
            name: &'a str,
            #[serde(rename = "Parameters")]
            parameters: &'a P,
        }
        let body = serde_json::to_vec(&Body {
            input: Input {
                name: C::NAME,
                parameters: cmdlet,
            },
        })
        .map_err(|e| ExchangeError::BadResponse {
            cmdlet: C::NAME.into(),
            endpoint: "(request)".into(),
            field: "Parameters".into(),
            problem: e.to_string(),
        })?;
        let first = format!("/adminapi/beta/{}/InvokeCommand", self.inner.tenant);
        let mut restarts = 0;
        'listing: loop {
            if restarts > 0 {
                sink.take(Listed::Restarted).await;
            }
            let (mut raw, mut cas) = self.request::<C>(&body, &first).await?;
            loop {
                crate::sync::progress::page_listed();
                // The next page is asked for before this one is decoded: a listing's pages can only
                // come one after another, and decoding 1000 objects takes milliseconds.
                let next = match net::decode::<NextLink>(&raw) {
                    Ok(n) => {
                        for w in n.warnings.iter().flatten() {
                            tracing::warn!(cmdlet = C::NAME, cas = %cas, "Exchange warns: {w}");
                        }
                        n.next
                    }
                    Err(b) => {
                        // The typed decoding names what is wrong, if the objects are; otherwise the
                        // link itself is.
                        Self::decode_page::<C>(&raw, &cas)?;
                        return Err(ExchangeError::BadResponse {
                            cmdlet: C::NAME.into(),
                            endpoint: cas,
                            field: b.field,
                            problem: b.problem,
                        });
                    }
                };
                let Some(link) = next else {
                    sink.take(Listed::Page(Self::decode_page::<C>(&raw, &cas)?.value))
                        .await;
                    return Ok(());
                };
                let path = self.next_path::<C>(&link, &cas)?;
                // Decoding a page of 1000 objects takes milliseconds of CPU: on the blocking
                // pool, so that it never holds up the async thread that sends the next request.
                let decoding = tokio::task::spawn_blocking({
                    let cas = cas.clone();
                    move || Self::decode_page::<C>(&raw, &cas)
                });
                let following = self.request::<C>(&body, &path).await;
                let page = decoding.await.expect("decoding a page does not panic");
                sink.take(Listed::Page(page?.value)).await;
                (raw, cas) = match following {
                    Ok(answer) => answer,
                    Err(e) => match refused_page_link(&e) {
                        // A write never has a next link to follow; were one refused, the write
                        // must not be sent again from the start.
                        Some(refusal) if !C::WRITE && restarts < LISTING_RESTARTS => {
                            restarts += 1;
                            tracing::warn!(
                                cmdlet = C::NAME,
                                cas = %refusal.cas,
                                "Exchange refused a page link; starting the listing over: {}",
                                refusal.message
                            );
                            continue 'listing;
                        }
                        Some(refusal) if !C::WRITE => {
                            return Err(ExchangeError::PageLinkRefused {
                                cmdlet: C::NAME.into(),
                                restarts,
                                refusal: Box::new(refusal.clone()),
                            });
                        }
                        _ => return Err(e),
                    },
                };
            }
        }
    }

    fn decode_page<C: Cmdlet>(raw: &[u8], cas: &str) -> Result<Page<C::Output>, ExchangeError> {
        // Records whose bytes are not JSON text fail the whole page, unless the cmdlet reads
        // its records one at a time (`net::record`).
        record::decode_page::<Page<C::Output>>(raw).map_err(|b| ExchangeError::BadResponse {
            cmdlet: C::NAME.into(),
            endpoint: cas.to_owned(),
            field: b.field,
            problem: b.problem,
        })
    }

    /// The path and query of a next link, which must point at a known CAS (a link elsewhere
    /// would take our token with it).
    fn next_path<C: Cmdlet>(&self, link: &str, cas: &str) -> Result<String, ExchangeError> {
        let bad = |problem: String| ExchangeError::BadResponse {
            cmdlet: C::NAME.into(),
            endpoint: cas.to_owned(),
            field: "@odata.nextLink".into(),
            problem,
        };
        let url = reqwest::Url::parse(link).map_err(|e| bad(format!("not a URL: {e}")))?;
        let origin = url.origin().ascii_serialization();
        if !self.inner.pool.knows(&origin) {
            return Err(bad(format!(
                "`{origin}` is not one of the Client Access Servers"
            )));
        }
        if !url.path().starts_with("/adminapi/") {
            return Err(bad(format!("`{}` is not an admin API path", url.path())));
        }
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        })
    }

    async fn token(&self, cmdlet: &str) -> Result<(Secret, Option<Token>), ExchangeError> {
        match &self.inner.auth {
            Auth::Bearer(s) => Ok((s.clone(), None)),
            Auth::Tokens(cache) => {
                let t = cache.token().await.map_err(|source| ExchangeError::Token {
                    cmdlet: cmdlet.into(),
                    source,
                })?;
                Ok((t.value.clone(), Some(t)))
            }
        }
    }

    /// Sends one page request until it is answered, failing over and waiting out throttling.
    /// Returns the page and the CAS that answered it.
    async fn request<C: Cmdlet>(
        &self,
        body: &[u8],
        path: &str,
    ) -> Result<(Vec<u8>, String), ExchangeError> {
        let inner = &*self.inner;
        let mut throttled = 0u32;
        // When the CAS stopped answering (reset by any answer) and what went wrong last.
        let mut failing_since: Option<Instant> = None;
        let mut last_failure = String::new();
        let mut maybe_applied = false;
        // A 401 renews the token once; a renewed token refused again is an error.
        let mut renewed: Option<Token> = None;
        loop {
            // From the cache on every attempt: a throttling or failover wait may outlast it.
            let (token, token_id, just_renewed) = match renewed.take() {
                Some(t) => (t.value.clone(), Some(t), true),
                None => {
                    let (s, t) = self.token(C::NAME).await?;
                    (s, t, false)
                }
            };
            let permit = inner.limit.acquire().await;
            let now = Instant::now();
            let (i, base) = match inner.pool.pick(now) {
                Pick::Use(i, base) => (i, base),
                Pick::Wait(at) => {
                    drop(permit);
                    let since = *failing_since.get_or_insert(now);
                    let deadline = since + inner.unavailable_timeout;
                    if now >= deadline {
                        return Err(self.unavailable::<C>(since, last_failure));
                    }
                    tokio::time::sleep_until(at.min(deadline)).await;
                    continue;
                }
            };
            if i != 0 {
                self.probe_primary_if_due(now);
            }
            inner
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let outcome = self.send(C::NAME, &base, path, body, &token).await;
            match outcome {
                Outcome::Page(page) => {
                    permit.success();
                    inner.pool.succeeded(i);
                    return Ok((page, base));
                }
                Outcome::Error(e) if maybe_applied && C::WRITE && e.is_repeat_of_applied() => {
                    permit.success();
                    inner.pool.succeeded(i);
                    tracing::info!(cmdlet = C::NAME, "an unanswered attempt had been applied");
                    return Ok((br#"{"value":[]}"#.to_vec(), base));
                }
                Outcome::Error(e) => {
                    inner.pool.succeeded(i);
                    return Err(e);
                }
                Outcome::Unauthorized(e) => {
                    inner.pool.succeeded(i);
                    drop(permit);
                    match (&inner.auth, &token_id, just_renewed) {
                        (Auth::Tokens(cache), Some(rejected), false) => {
                            renewed = Some(cache.renew(rejected).await.map_err(|source| {
                                ExchangeError::Token {
                                    cmdlet: C::NAME.into(),
                                    source,
                                }
                            })?);
                            self.count_retry::<C>();
                        }
                        _ => return Err(e),
                    }
                }
                Outcome::Throttled {
                    retry_after,
                    message,
                } => {
                    inner.pool.succeeded(i);
                    failing_since = None;
                    permit.throttled();
                    if let Some((metrics, org)) = inner.observer.get() {
                        metrics.throttled(org, "exchange");
                    }
                    throttled += 1;
                    if throttled >= THROTTLE_ATTEMPTS {
                        return Err(ExchangeError::Throttled {
                            cmdlet: C::NAME.into(),
                            attempts: throttled,
                            message,
                        });
                    }
                    tokio::time::sleep(net::throttle_delay(retry_after, throttled - 1)).await;
                    self.count_retry::<C>();
                }
                Outcome::CasFailed { reason, sent } => {
                    drop(permit);
                    maybe_applied |= sent;
                    let now = Instant::now();
                    inner.pool.failed(i, now);
                    // The next attempt goes to another CAS, if failover lets it.
                    if let Some((metrics, org)) = inner.observer.get()
                        && inner.pool.failover()
                    {
                        metrics.cas_failover(org);
                    }
                    last_failure = format!("{base}: {reason}");
                    let since = *failing_since.get_or_insert(now);
                    if now >= since + inner.unavailable_timeout {
                        return Err(self.unavailable::<C>(since, last_failure));
                    }
                    self.count_retry::<C>();
                }
            }
        }
    }

    /// A command (a write; reads are not commands) is about to be sent again.
    fn count_retry<C: Cmdlet>(&self) {
        if let Some((metrics, org)) = self.inner.observer.get()
            && C::WRITE
        {
            metrics.command(org, crate::metrics::CommandResult::Retried, 1);
        }
    }

    fn unavailable<C: Cmdlet>(&self, since: Instant, last: String) -> ExchangeError {
        ExchangeError::Unavailable {
            cmdlet: C::NAME.into(),
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
        tokio::spawn(async move {
            let body = br#"{"CmdletInput":{"CmdletName":"Get-ExchangeServer","Parameters":{}}}"#;
            let path = format!("/adminapi/beta/{}/InvokeCommand", me.inner.tenant);
            let ok = match me.token("Get-ExchangeServer").await {
                Err(_) => false,
                Ok((token, _)) => {
                    let permit = me.inner.limit.acquire().await;
                    let r = me
                        .send("Get-ExchangeServer", &base, &path, body, &token)
                        .await;
                    drop(permit);
                    // Any answer but a failure means it serves again (a 429 is an answer).
                    !matches!(r, Outcome::CasFailed { .. })
                }
            };
            if ok {
                me.inner.pool.succeeded(0);
            } else {
                me.inner.pool.failed(0, Instant::now());
            }
        });
    }

    /// One HTTP request, classified.
    async fn send(
        &self,
        cmdlet: &str,
        base: &str,
        path: &str,
        body: &[u8],
        token: &Secret,
    ) -> Outcome {
        let url = format!("{base}{path}");
        let response = self
            .inner
            .http
            .post(&url)
            .bearer_auth(token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                "Prefer",
                format!("odata.maxpagesize={}", self.inner.page_size),
            )
            .body(body.to_vec())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Outcome::CasFailed {
                    sent: !e.is_connect(),
                    reason: net::describe(&e),
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Outcome::CasFailed {
                    sent: true,
                    reason: net::describe(&e),
                };
            }
        };
        let bad = |b: BadField| ExchangeError::BadResponse {
            cmdlet: cmdlet.into(),
            endpoint: base.to_owned(),
            field: b.field,
            problem: b.problem,
        };
        if status.is_success() {
            if let Err(b) = net::expect_json(&headers) {
                return Outcome::Error(bad(b));
            }
            return Outcome::Page(Vec::from(bytes));
        }
        let error = net::decode::<ErrorBody>(&bytes).ok().map(|b| b.error);
        let message = error.as_ref().map_or(String::new(), |e| e.message.clone());
        let retry_after = net::retry_after(&headers);
        if status.as_u16() == 429
            || message.contains(CONCURRENCY_TEXT)
            || (status.as_u16() == 503 && retry_after.is_some())
        {
            return Outcome::Throttled {
                retry_after,
                message: net::first_line(&message),
            };
        }
        if status.is_server_error() {
            return Outcome::CasFailed {
                sent: true,
                reason: format!(
                    "HTTP {}{}",
                    status.as_u16(),
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", net::first_line(&message))
                    }
                ),
            };
        }
        let Some(error) = error else {
            return Outcome::Error(bad(BadField {
                field: "error".into(),
                problem: format!(
                    "HTTP {} without Exchange's error object ({} bytes of {})",
                    status.as_u16(),
                    bytes.len(),
                    headers
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("no content type")
                ),
            }));
        };
        // `details[0].message` is "Exception|Category|Message".
        let detail = error
            .details
            .first()
            .map(|d| d.message.as_str())
            .unwrap_or("");
        let mut parts = detail.splitn(3, '|');
        let (exception, category) = match (parts.next(), parts.next()) {
            (Some(e), Some(c)) => (e.to_owned(), c.to_owned()),
            _ => (String::new(), String::new()),
        };
        let e = ExchangeError::Cmdlet(Box::new(CmdletFailure {
            cmdlet: cmdlet.into(),
            cas: base.to_owned(),
            status: status.as_u16(),
            code: error.code,
            exception,
            category,
            message: net::first_line(&error.message),
        }));
        if status.as_u16() == 401 {
            Outcome::Unauthorized(e)
        } else {
            Outcome::Error(e)
        }
    }
}

impl CmdletTransport for ExchangeClient {
    async fn run<C: Cmdlet>(&self, cmdlet: &C) -> Result<Vec<C::Output>, ExchangeError> {
        self.ensure_discovered().await;
        self.run_pages(cmdlet).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, message: &str) -> ExchangeError {
        ExchangeError::Cmdlet(Box::new(CmdletFailure {
            cmdlet: "Get-MobileDevice".into(),
            cas: "http://cas".into(),
            status,
            code: "BadRequest".into(),
            exception: "Microsoft.Exchange.Admin.OData.Core.ODataServiceException".into(),
            category: "InvalidArgument".into(),
            message: message.into(),
        }))
    }

    #[test]
    fn only_a_400_naming_the_skip_token_is_a_refused_page_link() {
        for (error, refused) in [
            (
                refusal(400, "The skip token has expired. Run the command again."),
                true,
            ),
            (
                refusal(400, "The skip token is not valid for this request."),
                true,
            ),
            (refusal(400, "Invalid $skiptoken value"), true),
            (
                refusal(
                    400,
                    "A parameter cannot be found that matches parameter name 'X'.",
                ),
                false,
            ),
            (refusal(404, "The skip token has expired."), false),
            (
                ExchangeError::Throttled {
                    cmdlet: "Get-MobileDevice".into(),
                    attempts: 30,
                    message: "skip token".into(),
                },
                false,
            ),
        ] {
            assert_eq!(refused_page_link(&error).is_some(), refused, "{error}");
        }
    }
}
