//! `GET /metrics`: the event counters of [`crate::metrics::Metrics`] plus gauges read now from
//! the store, the scheduler and the plugin registry.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{AdminState, ApiError};
use crate::metrics::{family_header, sample};

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(state): State<AdminState>) -> Result<impl IntoResponse, ApiError> {
    let text = tokio::task::spawn_blocking(move || render(&state))
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))?;
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], text))
}

fn render(state: &AdminState) -> Result<String, ApiError> {
    let mut out = state.metrics.render_counters();
    let names: Vec<String> = state.scheduler.organizations().map(str::to_owned).collect();
    let mut devices = Vec::new();
    let mut last_success = Vec::new();
    let mut held = Vec::new();
    let mut running = Vec::new();
    let mut outbox = Vec::new();
    for name in &names {
        let id = state.store.organization(name, (state.now)())?;
        let c = state.store.verdict_counts(id)?;
        for (verdict, n) in [
            ("allow", c.allow),
            ("block", c.block),
            ("quarantine", c.quarantine),
            ("exempt", c.exempt),
            ("undecided", c.undecided),
        ] {
            devices.push((name.as_str(), verdict, n as f64));
        }
        if let Some(at) = state.store.last_successful_sync(id)? {
            last_success.push((name.as_str(), at as f64));
        }
        held.push((name.as_str(), state.store.held_runs(id)?.len() as f64));
        let busy = state
            .scheduler
            .state(name)
            .is_some_and(|s| s.current.is_some());
        running.push((name.as_str(), if busy { 1.0 } else { 0.0 }));
        let notices = state.store.notice_counts(id)?;
        outbox.push((name.as_str(), notices.pending as f64));
    }
    family_header(
        &mut out,
        "easgate_devices",
        "Devices by organization and current verdict.",
        "gauge",
    );
    for (org, verdict, n) in devices {
        sample(
            &mut out,
            "easgate_devices",
            &[("org", org), ("verdict", verdict)],
            n,
        );
    }
    family_header(
        &mut out,
        "easgate_last_successful_sync_timestamp_seconds",
        "When the organization's last successful sync ended (Unix time).",
        "gauge",
    );
    for (org, at) in last_success {
        sample(
            &mut out,
            "easgate_last_successful_sync_timestamp_seconds",
            &[("org", org)],
            at,
        );
    }
    family_header(
        &mut out,
        "easgate_held_plans",
        "Plans waiting for an operator's approval.",
        "gauge",
    );
    for (org, n) in held {
        sample(&mut out, "easgate_held_plans", &[("org", org)], n);
    }
    family_header(
        &mut out,
        "easgate_sync_running",
        "1 while a sync of the organization runs.",
        "gauge",
    );
    for (org, n) in running {
        sample(&mut out, "easgate_sync_running", &[("org", org)], n);
    }
    family_header(
        &mut out,
        "easgate_notice_outbox_pending",
        "Notices waiting in the outbox to be sent (new or to be retried).",
        "gauge",
    );
    for (org, n) in outbox {
        sample(
            &mut out,
            "easgate_notice_outbox_pending",
            &[("org", org)],
            n,
        );
    }
    family_header(
        &mut out,
        "easgate_plugin_reloads_total",
        "Directory plugin versions loaded, or rejected by kind of error (the last good version \
         kept serving).",
        "counter",
    );
    let reloads = state.registry.reload_counts();
    sample(
        &mut out,
        "easgate_plugin_reloads_total",
        &[("result", "loaded")],
        reloads.loaded as f64,
    );
    for (kind, n) in reloads.rejected {
        sample(
            &mut out,
            "easgate_plugin_reloads_total",
            &[("result", "rejected"), ("kind", kind.as_str())],
            n as f64,
        );
    }
    family_header(
        &mut out,
        "easgate_plugin_rejections",
        "Rejected versions remembered per directory plugin (the last 10).",
        "gauge",
    );
    for plugin in state.registry.status() {
        sample(
            &mut out,
            "easgate_plugin_rejections",
            &[("plugin", &plugin.name)],
            plugin.rejections.len() as f64,
        );
    }
    family_header(
        &mut out,
        "easgate_plugin_active",
        "The active plugin version of each world.",
        "gauge",
    );
    let access = state.registry.access_policy();
    let notice = state.registry.notice_template();
    for meta in [&access.meta, &notice.meta] {
        sample(
            &mut out,
            "easgate_plugin_active",
            &[
                ("world", meta.world.as_str()),
                ("name", &meta.name),
                ("digest", &meta.digest.hex()),
            ],
            1.0,
        );
    }
    Ok(out)
}
