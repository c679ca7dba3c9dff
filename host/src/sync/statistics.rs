//! Device statistics: each decided device's `LastSuccessSync`, read from Exchange
//! (`Get-MobileDeviceStatistics`) just before its batch goes to the policy, for the policy's
//! `last-success-sync`.
//!
//! Read only where needed: only when the organization asks for it
//! (`read_device_statistics`), only for the devices the run decides (a quick sync decides the
//! changed ones, so its cost still follows the number of changes), and with one request per
//! mailbox of a batch, not per device, through the client's command limiter (the same bound
//! and throttling back-off as every other command).
//!
//! Never fails a sync: a mailbox or device gone meanwhile (Exchange's not-found) leaves its
//! devices without statistics, which the policy must read as "unknown"; any other error does
//! the same and is counted, with the first error (its mailbox and cause) kept. The count and
//! that error reach the run's summary (`statistics`), one line of its errors (so the run is
//! partial and its history says why) and `easgate_device_statistics_failures_total`.
//!
//! No cache: `LastSuccessSync` moves on every sync of a device, so a stored value is out of
//! date for every device in use by the next full sync; a cache could only prove "not stale
//! yet" for a known staleness limit, which is the policy's, not the host's.

use std::collections::{BTreeMap, HashMap};

use crate::exchange::ExchangeClient;
use crate::exchange::cmdlets::GetMobileDeviceStatistics;
use crate::model::ExchangeDevice;

/// What reading statistics did in one run (the summary's `statistics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatisticsReport {
    /// `Get-MobileDeviceStatistics` requests (one per mailbox of a batch).
    pub requests: u64,
    /// Devices that got their statistics.
    pub read: u64,
    /// Devices whose mailbox or partnership Exchange no longer has.
    pub gone: u64,
    /// Devices left without statistics by another error.
    pub failed: u64,
    /// The first of those errors: `mailbox <mailbox>: <cause>`.
    pub first_error: Option<String>,
}

/// Reads the statistics of `devices` when the run reads them (`report` is `Some`).
pub async fn fill_in(
    exchange: &ExchangeClient,
    devices: &mut [ExchangeDevice],
    report: &mut Option<StatisticsReport>,
) {
    if let Some(report) = report
        && !devices.is_empty()
    {
        fill(exchange, devices, report).await;
    }
}

impl StatisticsReport {
    /// The line the run's errors get when devices were decided without their statistics by
    /// an error; `None` when none was.
    pub fn error_line(&self) -> Option<String> {
        (self.failed > 0).then(|| {
            format!(
                "device statistics: {} devices decided without their last sync; first: {}",
                self.failed,
                self.first_error.as_deref().unwrap_or("no error text")
            )
        })
    }

    /// One line for the run's log: warned when devices were left without statistics by an
    /// error.
    pub fn log(&self, org: &str) {
        let StatisticsReport {
            requests,
            read,
            gone,
            failed,
            ..
        } = self;
        if let Some(line) = self.error_line() {
            tracing::warn!(org, requests, read, gone, failed, "{line}");
        } else {
            tracing::info!(org, requests, read, gone, "device statistics read");
        }
    }
}

/// `mailbox <mailbox>: <cause>`, the mailbox named once: a cause that already names it (as
/// Exchange's own messages may) is not prefixed again.
fn failure(mailbox: &str, cause: &str) -> String {
    if cause.to_lowercase().contains(&mailbox.to_lowercase()) {
        cause.to_owned()
    } else {
        format!("mailbox {mailbox}: {cause}")
    }
}

/// Sets `last_success_sync` of every device in `devices` that Exchange reports on; the others
/// keep `None`.
pub async fn fill(
    exchange: &ExchangeClient,
    devices: &mut [ExchangeDevice],
    report: &mut StatisticsReport,
) {
    // Mailbox (lowercase) → its spelling and its devices' positions in `devices`. A device
    // whose mailbox is gone has no statistics to read.
    let mut by_mailbox: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
    for (i, device) in devices.iter().enumerate() {
        if let Some(mailbox) = &device.mailbox {
            by_mailbox
                .entry(mailbox.to_lowercase())
                .or_insert_with(|| (mailbox.clone(), Vec::new()))
                .1
                .push(i);
        }
    }
    let (commands, positions): (Vec<_>, Vec<_>) = by_mailbox
        .into_values()
        .map(|(mailbox, positions)| (GetMobileDeviceStatistics { mailbox }, positions))
        .unzip();
    report.requests += commands.len() as u64;
    let mailboxes: Vec<String> = commands.iter().map(|c| c.mailbox.clone()).collect();
    let results = exchange.run_all(commands).await;
    for ((result, positions), mailbox) in results.into_iter().zip(positions).zip(mailboxes) {
        let count = positions.len() as u64;
        let statistics = match result {
            Ok(statistics) => statistics,
            Err(error) if error.is_not_found() => {
                report.gone += count;
                continue;
            }
            Err(error) => {
                tracing::debug!(mailbox, "device statistics not read: {error}");
                report.failed += count;
                report
                    .first_error
                    .get_or_insert_with(|| failure(&mailbox, &error.to_string()));
                continue;
            }
        };
        let last: HashMap<String, Option<i64>> = statistics
            .into_iter()
            .map(|s| (s.identity.to_lowercase(), s.last_success_sync.map(|t| t.0)))
            .collect();
        for i in positions {
            let device = &mut devices[i];
            match last.get(&device.identity.to_lowercase()) {
                Some(&at) => {
                    device.last_success_sync = at;
                    report.read += 1;
                }
                // Removed between the listing and this read.
                None => report.gone += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_names_its_mailbox_once() {
        assert_eq!(
            failure("a@contoso.com", "Get-MobileDeviceStatistics: HTTP 400"),
            "mailbox a@contoso.com: Get-MobileDeviceStatistics: HTTP 400"
        );
        let named = "Get-MobileDeviceStatistics: no access to A@contoso.com";
        assert_eq!(failure("a@contoso.com", named), named);
    }

    #[test]
    fn only_errors_make_an_error_line() {
        let mut report = StatisticsReport {
            requests: 3,
            read: 4,
            gone: 1,
            ..StatisticsReport::default()
        };
        assert_eq!(report.error_line(), None, "gone devices are not errors");
        report.failed = 2;
        report.first_error = Some("mailbox a@contoso.com: refused".into());
        assert_eq!(
            report.error_line().as_deref(),
            Some(
                "device statistics: 2 devices decided without their last sync; first: \
                 mailbox a@contoso.com: refused"
            )
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["failed"], 2);
        assert_eq!(json["first_error"], "mailbox a@contoso.com: refused");
    }
}
