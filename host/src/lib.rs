//! easgate: an Exchange ActiveSync connector whose access decisions and user notices are
//! sandboxed WebAssembly plugins.
//!
//! # Layout
//!
//! One module per stage of the data flow, over a ground floor they share:
//!
//! * [`model`]: the shared vocabulary (the command a plan holds); imports nothing of the crate.
//! * [`plugin`]: the plugin engine (wasmtime), the registry with hot reload, the built-ins.
//! * [`exchange`]: running cmdlets on Exchange — CAS pool and failover, parallel commands,
//!   throttling.
//! * [`graph`]: Intune's managed devices and the directory through Microsoft Graph.
//! * [`notify`]: notices to users — the MIME mail, recipients, SMTP delivery, retry policy.
//! * [`net`]: what both clients share — HTTP client, proxy, TLS rule, tokens, backoff.
//! * [`timestamp`]: the services' UTC date-times as Unix seconds.
//! * [`memory`]: how the process uses glibc's allocator (arena cap, free pages back).
//! * [`schedule`]: when syncs run — one queue per organization, timers, manual triggers.
//! * [`daemon`]: the long-running connector (`easgate run`, `easgate lab`): store, plugins,
//!   scheduler, runners and admin API started and stopped together.
//! * [`admin`]: the admin HTTP API, the status page and `/metrics`.
//! * [`metrics`]: the event counters behind `/metrics`.
//! * [`config`]: the connector's configuration file.
//! * [`cli`]: the `easgate` command line (the binary in `main.rs` only parses and dispatches).
//!
//! The lab (a simulated Exchange organization and Intune tenant) is the `easgate-lab` crate in
//! `host/lab`, used by `easgate sim` and by the end-to-end tests.

pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod exchange;
pub mod graph;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod net;
pub mod notify;
pub mod plugin;
pub mod schedule;
pub mod store;
pub mod sync;
pub mod timestamp;
