//! The one wasmtime engine all plugins run on, with its epoch ticker and linkers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};
use wasmtime_wasi::p2::DynPollable;

use super::Digest;
use super::bindings::{access, notice};
use super::cache::{CompileCache, Lookup};
use super::sandbox::SandboxState;

/// How often the engine's epoch advances: the granularity of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits no manifest may exceed: a plugin is not allowed to stall a sync or eat the host. Here
/// beside [`Limits`] because the engine sizes its memory pool and epoch ticks for them; the
/// manifest checks its `[limits]` against them (so `manifest` uses `engine`, not the reverse).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_MEMORY_MIB: u64 = 1024;

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
    cache: Option<CompileCache>,
    ticker_stop: Arc<AtomicBool>,
    /// Set by [`PluginEngine::interrupt_all`]: calls end at once, running or new.
    stopping: AtomicBool,
}

/// Where a plugin version's machine code came from, and how long getting it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compilation {
    pub from: CompiledFrom,
    pub took: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompiledFrom {
    /// Compiled from the component's Wasm by Cranelift.
    Wasm,
    /// Loaded from the compile cache.
    Cache,
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
    compile_cache: Option<PathBuf>,
}

impl PluginEngineBuilder {
    /// Limits for plugins whose manifest sets none.
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default_limits = limits;
        self
    }

    /// Keeps compiled plugin versions in `dir` (created if missing, mode 0700), so that a
    /// restart loads them instead of compiling them again; see [`super::cache`]. Off by
    /// default: the directory holds native code, so where it lives is the operator's choice.
    pub fn compile_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.compile_cache = Some(dir.into());
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
        // time is what a hot reload waits for (docs/benchmarks.md).
        config.cranelift_opt_level(OptLevel::None);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
        let engine = Engine::new(&config)?;
        let cache = match &self.compile_cache {
            Some(dir) => Some(CompileCache::open(dir, &engine).map_err(|err| {
                anyhow::anyhow!("cannot use the compile cache {}: {err}", dir.display())
            })?),
            None => None,
        };

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
                cache,
                ticker_stop,
                stopping: AtomicBool::new(false),
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
        // A Rust component holds its module plus the shims wit-component adds (3 in all); a
        // JavaScript one from componentize-js 4; a Python one from componentize-py 14 (CPython,
        // libc and the bindings are separate modules). Each has one memory and two tables.
        .max_core_instances_per_component(32)
        .total_core_instances(16 * MAX_CONCURRENT_CALLS)
        .max_memories_per_component(2)
        .total_memories(2 * MAX_CONCURRENT_CALLS)
        .max_tables_per_component(4)
        .total_tables(4 * MAX_CONCURRENT_CALLS)
        .max_memory_size((MAX_MEMORY_MIB as usize) << 20)
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
/// The no-waiting test in `tests/e2e/containment.rs` fails if this stops matching. Guests that
/// import an older 0.2 release (componentize-py's CPython imports `wasi:io/poll@0.2.9`) link to
/// this one too, since the linker resolves imports semver-compatibly; the Python sandbox probe
/// in `tests/e2e/polyglot.rs` checks that `time.sleep` hits the refusal.
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

    /// Ends every plugin call now, and every call started later, with a deadline trap: for a
    /// shutdown that must not wait for plugins (a manifest may allow a call 30 s, and systemd
    /// kills at 90). Each running call is past its deadline after this many epoch ticks.
    pub fn interrupt_all(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for _ in 0..Self::deadline_ticks(MAX_TIMEOUT) {
            self.inner.engine.increment_epoch();
        }
    }

    /// Epoch ticks a call starting now may run for `timeout`: none once the engine is stopping.
    pub(crate) fn call_deadline(&self, timeout: Duration) -> u64 {
        if self.inner.stopping.load(Ordering::SeqCst) {
            0
        } else {
            Self::deadline_ticks(timeout)
        }
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

    /// The compiled form of the component `bytes` whose digest is `digest`: from the compile
    /// cache when it has a good entry, else compiled (and then stored in the cache). A cache
    /// that fails in any way costs a compilation, never the load.
    pub(crate) fn compile(
        &self,
        bytes: &[u8],
        digest: &Digest,
    ) -> wasmtime::Result<(Component, Compilation)> {
        let started = Instant::now();
        let engine = &self.inner.engine;
        if let Some(cache) = &self.inner.cache {
            match cache.lookup(engine, digest) {
                Lookup::Hit(component) => {
                    let took = started.elapsed();
                    let from = CompiledFrom::Cache;
                    return Ok((component, Compilation { from, took }));
                }
                Lookup::Miss => {}
                Lookup::Invalid(reason) => tracing::warn!(
                    digest = %digest.short(),
                    "compile cache entry unusable, compiling the plugin instead: {reason}"
                ),
            }
        }
        let component = Component::new(engine, bytes)?;
        let took = started.elapsed();
        if let Some(cache) = &self.inner.cache
            && let Err(err) = cache.store(digest, &component)
        {
            tracing::warn!(
                digest = %digest.short(),
                "cannot write the compile cache entry {}: {err}",
                cache.entry_path(digest).display()
            );
        }
        let from = CompiledFrom::Wasm;
        Ok((component, Compilation { from, took }))
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
