//! The one wasmtime engine all plugins run on, with its epoch ticker and linkers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};
use wasmtime_wasi::p2::DynPollable;

use super::bindings::{access, notice};
use super::sandbox::SandboxState;

/// How often the engine's epoch advances: the granularity of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to a plugin whose manifest does not set its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one call (instantiate, configure and one decide or render).
    pub timeout: Duration,
    /// Largest linear memory the plugin may grow to.
    pub memory_bytes: usize,
}

impl Default for Limits {
    /// One second per call and 64 MiB: generous for a batch of 1000 devices, small enough
    /// that a runaway plugin is stopped long before it hurts a sync.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
        }
    }
}

/// Compiles and links plugins. Cheap to clone; the epoch ticker stops when the last clone goes.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    access_linker: Linker<SandboxState>,
    notice_linker: Linker<SandboxState>,
    default_limits: Limits,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Builds a [`PluginEngine`]; see [`PluginEngine::builder`].
#[derive(Debug, Clone, Default)]
pub struct PluginEngineBuilder {
    default_limits: Limits,
}

impl PluginEngineBuilder {
    /// Limits for plugins whose manifest sets none.
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default_limits = limits;
        self
    }

    pub fn build(self) -> anyhow::Result<PluginEngine> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Plugins are called synchronously; without the async machinery a call costs about half.
        config.concurrency_support(false);
        config.epoch_interruption(true);
        // A policy's time goes into lowering device records, not into its own code: optimized
        // code decided no faster in the benchmark, while compiling took 45 % longer, and compile
        // time is what a hot reload waits for (BENCHMARKS.md).
        config.cranelift_opt_level(OptLevel::None);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
        let engine = Engine::new(&config)?;

        let access_linker = linker(&engine, |linker| {
            access::AccessPolicy::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
        })?;
        let notice_linker = linker(&engine, |linker| {
            notice::NoticeTemplate::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
        })?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone())?;

        Ok(PluginEngine {
            inner: Arc::new(Inner {
                engine,
                access_linker,
                notice_linker,
                default_limits: self.default_limits,
                ticker_stop,
            }),
        })
    }
}

/// Concurrent plugin calls (instances alive at once) the engine supports.
pub const MAX_CONCURRENT_CALLS: u32 = 64;

/// Every call instantiates afresh, so instance slots are recycled instead of mapped anew, and
/// the first few MiB of each memory stay resident (reset with memset) so that a batch does not
/// page-fault its way through fresh memory.
fn pooling() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(MAX_CONCURRENT_CALLS)
        // A Rust component holds its module plus the shims wit-component adds (4); a Python
        // one from componentize-py holds 14 (CPython and its libraries are separate modules,
        // linked by a shim); a JavaScript one from componentize-js holds ?.
        .max_core_instances_per_component(32)
        .total_core_instances(16 * MAX_CONCURRENT_CALLS)
        .max_memories_per_component(2)
        .total_memories(2 * MAX_CONCURRENT_CALLS)
        .max_tables_per_component(4)
        .total_tables(4 * MAX_CONCURRENT_CALLS)
        .max_memory_size((super::manifest::MAX_MEMORY_MIB as usize) << 20)
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(64 << 10);
    pool
}

fn linker(
    engine: &Engine,
    add_world: impl FnOnce(&mut Linker<SandboxState>) -> wasmtime::Result<()>,
) -> anyhow::Result<Linker<SandboxState>> {
    let mut linker = Linker::new(engine);
    // The WASI interfaces that a guest's standard library imports; the context they run
    // against (see `sandbox`) grants nothing.
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    forbid_waiting(&mut linker)?;
    add_world(&mut linker)?;
    Ok(linker)
}

/// The WASI version whose `wasi:io/poll` wasmtime-wasi defines (see its `wit/deps/io.wit`).
/// The no-waiting test in `tests/e2e/containment.rs` fails if this stops matching.
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// A guest that sleeps or waits on a pollable blocks the host thread inside host code, where
/// no epoch deadline reaches it. A policy never needs to wait (its clock is `sync-info.now`),
/// so waiting traps instead.
fn forbid_waiting(linker: &mut Linker<SandboxState>) -> anyhow::Result<()> {
    const REFUSED: &str =
        "plugins may not wait or sleep (wasi:io/poll); use sync-info.now for the time";
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap(
        "poll",
        |_, (_,): (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
            wasmtime::bail!(REFUSED)
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_, (_,): (Resource<DynPollable>,)| -> wasmtime::Result<()> { wasmtime::bail!(REFUSED) },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    thread::Builder::new()
        .name("plugin-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
    Ok(())
}

impl PluginEngine {
    /// An engine with default [`Limits`]: 1 s and 64 MiB per call.
    pub fn new() -> anyhow::Result<Self> {
        Self::builder().build()
    }

    pub fn builder() -> PluginEngineBuilder {
        PluginEngineBuilder::default()
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn access_linker(&self) -> &Linker<SandboxState> {
        &self.inner.access_linker
    }

    pub(crate) fn notice_linker(&self) -> &Linker<SandboxState> {
        &self.inner.notice_linker
    }

    pub fn default_limits(&self) -> Limits {
        self.inner.default_limits
    }

    /// Epoch ticks that make up `timeout`, rounded up, plus one for the tick in progress.
    pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        (timeout.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        assert_eq!(
            PluginEngine::deadline_ticks(Duration::from_millis(1000)),
            101
        );
        assert_eq!(PluginEngine::deadline_ticks(Duration::from_millis(1)), 2);
        assert_eq!(PluginEngine::deadline_ticks(Duration::ZERO), 2);
    }
}
