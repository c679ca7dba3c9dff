//! The per-call sandbox: what a plugin instance can reach while it runs.
//!
//! Every call gets a fresh [`wasmtime::Store`] holding a [`SandboxState`]: a WASI context that
//! denies everything (no preopened directories, no environment, no arguments, no sockets or
//! name lookups, closed stdin), captured and bounded stdout/stderr, a memory limiter, and the
//! plugin's `host.log` lines, also bounded. Nothing survives the call.
//!
//! Nor does the call see the host's time or entropy: the wall clock reads the sync's `now`
//! and stands still, the monotonic clock reads 0, and both random interfaces are one
//! generator with a fixed seed. A plugin's answer is then a function of its input alone, so
//! `policy test` sees exactly what a sync will (no time bombs, no dice).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::AsyncWrite;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::Level;
use super::bindings::access::easgate::policy::host;

/// Log lines kept per call; the rest are counted and dropped.
pub const MAX_LOG_LINES: usize = 100;
/// Bytes kept of one log line.
pub const MAX_LOG_LINE_BYTES: usize = 1024;
/// Bytes of stdout plus stderr kept per call; the rest is dropped.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// One line a plugin wrote, through `host.log` or to stdout/stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLogLine {
    pub level: Level,
    pub message: String,
}

/// What the host keeps per store. Public only so the bindings' trait bounds can name it.
pub struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    log: Vec<PluginLogLine>,
    dropped_log_lines: usize,
    output: CapturedOutput,
}

/// The seed of every call's random numbers.
const RANDOM_SEED: u64 = 0x4541_5347;

/// A wall clock stopped at the sync's `now`.
struct StoppedWallClock(Duration);

impl HostWallClock for StoppedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that never moves.
struct StoppedMonotonicClock;

impl HostMonotonicClock for StoppedMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl SandboxState {
    /// The state of one call whose clock reads `now` (Unix seconds; before 1970 reads 1970).
    pub(crate) fn new(memory_limit: usize, now: i64) -> Self {
        let output = CapturedOutput::default();
        let wall = Duration::from_secs(u64::try_from(now).unwrap_or(0));
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(StoppedWallClock(wall))
            .monotonic_clock(StoppedMonotonicClock)
            .secure_random(StdRng::seed_from_u64(RANDOM_SEED))
            .insecure_random(StdRng::seed_from_u64(RANDOM_SEED))
            .insecure_random_seed(u128::from(RANDOM_SEED))
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            log: Vec::new(),
            dropped_log_lines: 0,
            output,
        }
    }

    /// The plugin's log of this call: `host.log` lines, then what it printed, then a note on
    /// anything dropped.
    pub(crate) fn take_log(&mut self) -> Vec<PluginLogLine> {
        let mut log = std::mem::take(&mut self.log);
        let (printed, dropped_bytes) = self.output.take();
        for line in String::from_utf8_lossy(&printed).lines() {
            push_bounded(&mut log, &mut self.dropped_log_lines, Level::Info, line);
        }
        if self.dropped_log_lines > 0 || dropped_bytes > 0 {
            log.push(PluginLogLine {
                level: Level::Warn,
                message: format!(
                    "dropped {} log line(s) and {dropped_bytes} byte(s) of output over the per-call limits",
                    self.dropped_log_lines
                ),
            });
        }
        log
    }
}

fn push_bounded(log: &mut Vec<PluginLogLine>, dropped: &mut usize, level: Level, message: &str) {
    if log.len() >= MAX_LOG_LINES {
        *dropped += 1;
        return;
    }
    let mut end = message.len().min(MAX_LOG_LINE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    log.push(PluginLogLine {
        level,
        message: message[..end].to_owned(),
    });
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

// The `types` interface has no functions; the bindings still ask for its (empty) host trait.
impl super::bindings::types::Host for SandboxState {}

impl host::Host for SandboxState {
    fn log(&mut self, level: Level, message: String) {
        push_bounded(&mut self.log, &mut self.dropped_log_lines, level, &message);
    }
}

/// Caps the memory a plugin instance may grow to. Growth past the cap traps the guest (rather
/// than returning -1 to its allocator) and is remembered, so the error can say "memory limit"
/// instead of whatever the guest's allocator did next.
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) exceeded: bool,
}

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            wasmtime::bail!(
                "memory limit of {} bytes exceeded (wanted {desired})",
                self.limit
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a well-behaved policy needs a few thousand at most.
        Ok(desired <= 100_000)
    }
}

/// Guest stdout and stderr: kept up to [`MAX_OUTPUT_BYTES`], the rest counted and dropped so
/// that a chatty plugin neither fails (a closed stdout makes Rust's `println!` panic) nor
/// grows the host's memory.
#[derive(Clone, Default)]
struct CapturedOutput(Arc<Mutex<OutputBuffer>>);

#[derive(Default)]
struct OutputBuffer {
    kept: Vec<u8>,
    dropped: usize,
}

impl CapturedOutput {
    fn take(&self) -> (Vec<u8>, usize) {
        let mut buffer = self.0.lock().expect("output buffer lock");
        (
            std::mem::take(&mut buffer.kept),
            std::mem::take(&mut buffer.dropped),
        )
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut buffer = self.0.lock().expect("output buffer lock");
        let room = MAX_OUTPUT_BYTES.saturating_sub(buffer.kept.len());
        let kept = buf.len().min(room);
        buffer.kept.extend_from_slice(&buf[..kept]);
        buffer.dropped += buf.len() - kept;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_bounded_in_count_and_length() {
        let mut state = SandboxState::new(1 << 20, 0);
        let long = "é".repeat(MAX_LOG_LINE_BYTES);
        for _ in 0..MAX_LOG_LINES + 5 {
            host::Host::log(&mut state, Level::Info, long.clone());
        }
        let log = state.take_log();
        assert_eq!(log.len(), MAX_LOG_LINES + 1);
        assert!(log[0].message.len() <= MAX_LOG_LINE_BYTES);
        assert!(
            log.last()
                .unwrap()
                .message
                .contains("dropped 5 log line(s)")
        );
    }
}
