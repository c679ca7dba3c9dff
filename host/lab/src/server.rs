//! The lab's listeners and the state they share.
//!
//! Every listener (each CAS, Graph + login, control, SMTP) binds on loopback and runs its own
//! accept loop in one task that owns the listening socket and, through a `JoinSet`, every
//! connection. Aborting that task therefore closes the socket and drops the connections at once —
//! which is what "stop a CAS" must mean for failover tests: the next connect is refused, not
//! served by a server that is shutting down gracefully.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::counters::Counters;
use crate::exchange::ServerInfo;
use crate::exchange::cost::{Gate, LatencyModel};
use crate::graph::throttle::Throttle;
use crate::login::TokenStore;
use crate::org::{Org, Tenant};
use crate::paging::PageTokens;
use crate::random::Guid;
use crate::smtp::{MailStore, SmtpSlot};

/// How a running CAS behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CasMode {
    /// Serves normally.
    #[default]
    Up,
    /// Serves, `extra_ms` slower than the latency model says.
    Slow { extra_ms: u64 },
    /// Answers every request with this HTTP status and an Exchange error.
    Failing { status: u16 },
    /// Answers a seeded share (`fail_per_mille` of 1000) of requests with this status. With
    /// `after_apply` the cmdlet runs first and only its answer is replaced: the write happened,
    /// the client cannot know it.
    Flaky {
        status: u16,
        fail_per_mille: u16,
        seed: u64,
        after_apply: bool,
    },
}

/// One CAS as the control API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasStatus {
    pub index: usize,
    pub name: String,
    pub url: String,
    /// False while stopped: connections are refused.
    pub running: bool,
    pub mode: CasMode,
}

/// A CAS listener slot: its fixed address, behaviour and (while running) its task.
#[derive(Debug)]
pub(crate) struct CasSlot {
    pub addr: SocketAddr,
    pub mode: Mutex<CasMode>,
    /// Requests this CAS has seen in `Flaky` mode: the n-th one fails when the seeded draw for
    /// n says so, so a seed gives the same failures in the same order.
    pub flaky_draws: std::sync::atomic::AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Serializes start and stop of this CAS.
    op: tokio::sync::Mutex<()>,
    /// Its port while it is stopped.
    held: HeldPort,
}

impl CasSlot {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            mode: Mutex::new(CasMode::Up),
            flaky_draws: std::sync::atomic::AtomicU64::new(0),
            task: Mutex::new(None),
            op: tokio::sync::Mutex::new(()),
            held: HeldPort::default(),
        }
    }

    pub fn running(&self) -> bool {
        self.task.lock().expect("cas task").is_some()
    }

    /// Aborts the listener task without waiting (for `Drop`).
    pub fn abort(&self) {
        if let Some(t) = self.task.lock().expect("cas task").take() {
            t.abort();
        }
    }
}

/// Everything the handlers of all listeners share.
pub(crate) struct Shared {
    pub org: RwLock<Org>,
    pub tenant: Tenant,
    pub tokens: TokenStore,
    pub pages: PageTokens,
    pub latency: RwLock<LatencyModel>,
    pub gate: Gate,
    /// When modelled latencies end.
    pub timer: crate::exchange::timer::PreciseTimer,
    pub throttle: Throttle,
    pub graph_faults: crate::graph::faults::Faults,
    pub exchange_faults: crate::exchange::faults::Faults,
    pub malformed: crate::malformed::Malformed,
    pub counters: Counters,
    pub servers: Vec<ServerInfo>,
    pub cas: Vec<CasSlot>,
    /// With `LabOptions::cas_tls`: the CAS listeners serve over TLS with it.
    pub cas_tls: Option<tokio_rustls::TlsAcceptor>,
    pub graph_url: String,
    pub control_url: String,
    pub smtp_addr: SocketAddr,
    pub smtp: SmtpSlot,
    pub mail: MailStore,
    pub settings_guid: Guid,
    /// The static Exchange token for `bearer` connector configs.
    pub exchange_token: String,
    /// The remote PowerShell face's account, limits and shells.
    pub powershell: crate::exchange::powershell::PowerShellState,
    /// The task adding devices over time, while an arrival rate is set.
    pub arrivals: Mutex<Option<JoinHandle<()>>>,
}

/// A summary: the organization is too large to print, and the tenant holds the client secret.
impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cas", &self.servers)
            .field("graph_url", &self.graph_url)
            .field("control_url", &self.control_url)
            .field("smtp_addr", &self.smtp_addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn cas_mode(&self, i: usize) -> CasMode {
        *self.cas[i].mode.lock().expect("cas mode")
    }

    pub fn latency(&self) -> LatencyModel {
        self.latency.read().expect("latency").clone()
    }
}

/// Why the lab could not start or a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab only listens on loopback; {0} is not a loopback address")]
    NotLoopback(std::net::IpAddr),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("there is no CAS {0}")]
    NoSuchCas(usize),
    #[error(transparent)]
    Org(#[from] crate::org::OrgError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A stopped listener's port, kept bound but not listening: connections to it are refused, and
/// nothing else on the machine can take the port (an ephemeral port of another test's
/// connection did, once, between a stop and a start) before the listener starts again.
#[derive(Debug, Default)]
pub(crate) struct HeldPort(Mutex<Option<tokio::net::TcpSocket>>);

impl HeldPort {
    /// Holds `addr` after its listener closed; best effort (the start binds anew either way).
    pub fn hold(&self, addr: SocketAddr) {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        };
        let held = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            Ok(s)
        });
        match held {
            Ok(s) => *self.0.lock().expect("held port") = Some(s),
            Err(e) => tracing::debug!(%addr, "could not hold a stopped listener's port: {e}"),
        }
    }

    /// Lets go of the port, for the listener about to bind it.
    pub fn release(&self) {
        self.0.lock().expect("held port").take();
    }
}

/// Binds a stopped listener's address again. A child process another test forked in the
/// instant before the stop holds a copy of the old listening socket until it executes its
/// program (close-on-exec), and the port answers "in use" until then: a few tries over up to
/// two seconds, instead of failing the restart.
pub(crate) async fn bind_again(what: &str, addr: SocketAddr) -> Result<TcpListener, LabError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match bind(what, addr).await {
            Err(LabError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

pub(crate) async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, LabError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| LabError::Bind {
            what: what.to_owned(),
            addr,
            source,
        })
}

/// Serves `router` over HTTP/1.1 on `listener` until the returned task is aborted.
pub(crate) fn serve(listener: TcpListener, router: Router) -> JoinHandle<()> {
    serve_with(listener, router, None)
}

/// Serves `router` over HTTP/1.1 on `listener`, over TLS when `tls` is given (a handshake that
/// fails ends that connection only).
pub(crate) fn serve_with(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of descriptors and the like: back off instead of spinning.
                            tracing::warn!("lab listener cannot accept: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Small requests and responses: don't wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    // Each connection gets its own slot for the Kerberos context that a remote
                    // PowerShell client establishes on it (WinRM binds it to the connection).
                    let service = TowerToHyperService::new(router.clone().layer(axum::Extension(
                        crate::exchange::powershell::ConnectionAuth::default(),
                    )));
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let http = http1::Builder::new().keep_alive(true).clone();
                        let served = match tls {
                            None => http.serve_connection(TokioIo::new(stream), service).await,
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(stream) => {
                                    http.serve_connection(TokioIo::new(stream), service).await
                                }
                                Err(e) => {
                                    tracing::debug!("lab TLS handshake failed: {e}");
                                    return;
                                }
                            },
                        };
                        if let Err(e) = served {
                            tracing::debug!("lab connection ended: {e}");
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

/// Starts CAS `i` on `listener`, or (after a stop) on a socket bound anew to its address.
pub(crate) async fn start_cas(
    shared: &Arc<Shared>,
    i: usize,
    listener: Option<TcpListener>,
) -> Result<(), LabError> {
    let slot = shared.cas.get(i).ok_or(LabError::NoSuchCas(i))?;
    let _op = slot.op.lock().await;
    if slot.running() {
        return Ok(());
    }
    let listener = match listener {
        Some(l) => l,
        None => {
            slot.held.release();
            bind_again(&format!("CAS {i}"), slot.addr).await?
        }
    };
    let task = serve_with(
        listener,
        crate::exchange::router(shared.clone(), i),
        shared.cas_tls.clone(),
    );
    *slot.task.lock().expect("cas task") = Some(task);
    Ok(())
}

/// Stops CAS `i`: when this returns its port refuses connections and its connections are gone.
pub(crate) async fn stop_cas(shared: &Shared, i: usize) -> Result<(), LabError> {
    let slot = shared.cas.get(i).ok_or(LabError::NoSuchCas(i))?;
    let _op = slot.op.lock().await;
    let task = slot.task.lock().expect("cas task").take();
    if let Some(task) = task {
        task.abort();
        // Waiting for the cancelled task is what guarantees the socket is closed.
        let _ = task.await;
        slot.held.hold(slot.addr);
        // Its remote PowerShell shells die with it.
        shared.powershell.drop_cas(i);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_listened_on_elsewhere_for_a_moment_is_bound_once_it_is_free() {
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = elsewhere.local_addr().unwrap();
        assert!(matches!(
            bind("test", addr).await,
            Err(LabError::Bind { ref source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse
        ));
        let freed = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(elsewhere);
        });
        let listener = bind_again("test", addr).await.unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
        freed.join().unwrap();
    }
}
