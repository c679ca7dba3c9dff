//! End-to-end tests: the real `easgate` binary and library against real plugins and the lab.
//! One integration binary, one module per area; shared helpers in `support`.

mod cli_policy;
mod containment;
mod exchange_client;
mod graph_client;
mod hot_reload;
mod notice_template;
mod policy_table;
mod support;
