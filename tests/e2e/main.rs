//! End-to-end tests: the real `easgate` binary and library against real plugins and the lab.
//! One integration binary, one module per area; shared helpers in `support`.

// First: its macros (`over_transports!`) are used by the modules below.
#[macro_use]
mod support;

mod access_levels;
mod admin;
mod bad_responses;
mod cli_policy;
mod client_secrets;
mod containment;
mod crash;
mod daemon;
mod device_actions;
mod dry_run;
mod exchange_client;
mod faults;
mod graph_client;
mod held_plans;
mod hot_reload;
mod kerberos;
mod malformed;
mod metrics;
mod monitoring;
mod notice_template;
mod notices;
mod notify;
mod ntlm;
mod org_policy;
mod policy_diff;
mod policy_table;
mod polyglot;
mod psrp_client;
mod psrp_https;
mod quick_sync;
mod secrets;
mod statistics;
mod store_faults;
mod swap_storm;
mod sync;
mod sync_cli;
