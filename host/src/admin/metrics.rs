//! `GET /metrics`: the event figures of [`crate::metrics::Metrics`] plus gauges read now from
//! the store, the scheduler and the plugin registry, in the format the scraper asked for
//! (OpenMetrics for Prometheus, the Prometheus text format otherwise).

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use super::{AdminState, ApiError};
use crate::metrics::{Format, ScrapeGauges, encode, set};

pub async fn metrics(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::for_accept(accept);
    let text = tokio::task::spawn_blocking(move || render(&state, format))
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], text))
}

fn render(state: &AdminState, format: Format) -> Result<String, ApiError> {
    let scrape = scrape_registry(state)?;
    Ok(encode(format, &[state.metrics.registry(), &scrape]))
}

/// The gauges of state, read now: one registry per scrape, so that nothing stale (a plugin no
/// longer in the directory) outlives the scrape that saw it.
fn scrape_registry(state: &AdminState) -> Result<Registry, ApiError> {
    let mut r = Registry::default();
    organization_gauges(state, &mut r)?;
    plugin_gauges(state, &mut r);
    Ok(r)
}

/// The store's and the scheduler's view of each organization.
fn organization_gauges(state: &AdminState, r: &mut Registry) -> Result<(), ApiError> {
    let devices = ScrapeGauges::default();
    let last_success = ScrapeGauges::default();
    let held = ScrapeGauges::default();
    let running = ScrapeGauges::default();
    let outbox = ScrapeGauges::default();
    for name in state.scheduler.organizations() {
        let id = state.store.organization(name, (state.now)())?;
        let c = state.store.verdict_counts(id)?;
        for (verdict, n) in [
            ("allow", c.allow),
            ("block", c.block),
            ("quarantine", c.quarantine),
            ("exempt", c.exempt),
            ("undecided", c.undecided),
        ] {
            set(&devices, &[("org", name), ("verdict", verdict)], n as i64);
        }
        if let Some(at) = state.store.last_successful_sync(id)? {
            set(&last_success, &[("org", name)], at);
        }
        let waiting = state.store.held_runs(id)?.len();
        set(&held, &[("org", name)], waiting as i64);
        let busy = state
            .scheduler
            .state(name)
            .is_some_and(|s| s.current.is_some());
        set(&running, &[("org", name)], i64::from(busy));
        let pending = state.store.notice_counts(id)?.pending;
        set(&outbox, &[("org", name)], pending as i64);
    }
    r.register(
        "easgate_devices",
        "Devices by organization and current verdict",
        devices,
    );
    r.register_with_unit(
        "easgate_last_successful_sync_timestamp",
        "When the organization's last successful sync ended (Unix time)",
        Unit::Seconds,
        last_success,
    );
    r.register(
        "easgate_held_plans",
        "Plans waiting for an operator's approval",
        held,
    );
    r.register(
        "easgate_sync_running",
        "1 while a sync of the organization runs",
        running,
    );
    r.register(
        "easgate_notice_outbox_pending",
        "Notices waiting in the outbox to be sent (new or to be retried)",
        outbox,
    );
    Ok(())
}

/// The plugin registry's reloads, rejections and active versions.
fn plugin_gauges(state: &AdminState, r: &mut Registry) {
    // Counted by the plugin registry; a fresh counter per scrape carries its total.
    let reloads = Family::<Vec<(&'static str, String)>, Counter>::default();
    let counts = state.registry.reload_counts();
    let loaded = vec![("result", "loaded".to_owned())];
    reloads.get_or_create(&loaded).inc_by(counts.loaded);
    for (kind, n) in counts.rejected {
        let rejected = vec![
            ("result", "rejected".to_owned()),
            ("kind", kind.as_str().to_owned()),
        ];
        reloads.get_or_create(&rejected).inc_by(n);
    }
    r.register(
        "easgate_plugin_reloads",
        "Directory plugin versions loaded, or rejected by kind of error (the last good version \
         kept serving)",
        reloads,
    );
    let rejections = ScrapeGauges::default();
    for plugin in state.registry.status() {
        let n = plugin.rejections.len() as i64;
        set(&rejections, &[("plugin", &plugin.name)], n);
    }
    r.register(
        "easgate_plugin_rejections",
        "Rejected versions remembered per directory plugin (the last 10)",
        rejections,
    );
    let active = ScrapeGauges::default();
    let access = state.registry.access_policy();
    let notice = state.registry.notice_template();
    for meta in [&access.meta, &notice.meta] {
        let digest = meta.digest.hex();
        let labels = [
            ("world", meta.world.as_str()),
            ("name", meta.name.as_str()),
            ("digest", digest.as_str()),
        ];
        set(&active, &labels, 1);
    }
    r.register(
        "easgate_plugin_active",
        "The active plugin version of each world",
        active,
    );
    // 0 while an organization's own policy cannot serve (its syncs fail until its plugin or
    // settings file is fixed), or its latest plugin version or settings were refused.
    let ready = ScrapeGauges::default();
    for policy in state.registry.org_policies() {
        let serving = policy.active.is_some() && policy.failure.is_none();
        set(&ready, &[("org", &policy.organization)], i64::from(serving));
    }
    r.register(
        "easgate_organization_policy_ready",
        "1 when the organization's own access policy serves with its latest plugin version and \
         settings, 0 when they were refused (per organization with [organization.policy])",
        ready,
    );
}
