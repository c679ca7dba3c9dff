//! The stale-device rule: a partnership that has not synced successfully for longer than the
//! operator allows is blocked, whatever its compliance, as Intune's own "block devices that
//! have not checked in" cleanup would. Only Exchange's `LastSuccessSync` counts (the host reads
//! it with `Get-MobileDeviceStatistics`); a device without one — never synced, or statistics
//! not read — is never blocked for it: the rule acts on evidence of staleness, not on its
//! absence.

use crate::easgate::policy::types::DeviceContext;

const DAY: i64 = 86_400;

/// `blockStaleAfterDays`: off when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleRule {
    pub after_days: u32,
}

impl StaleRule {
    /// Whether `device` last synced more than `after_days` days before `now` (Unix seconds).
    pub fn is_stale(self, device: &DeviceContext, now: i64) -> bool {
        device
            .eas
            .last_success_sync
            .is_some_and(|last| now.saturating_sub(last) > i64::from(self.after_days) * DAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::easgate::policy::types::{AccessState, EasDevice};

    fn synced(last: Option<i64>) -> DeviceContext {
        DeviceContext {
            eas: EasDevice {
                device_id: "A".into(),
                identity: String::new(),
                mailbox: String::new(),
                device_type: String::new(),
                device_model: String::new(),
                device_os: String::new(),
                user_agent: String::new(),
                first_sync: None,
                last_success_sync: last,
                access_state: AccessState::Allowed,
                access_state_reason: String::new(),
            },
            managed: None,
            user: None,
        }
    }

    #[test]
    fn stale_only_past_the_limit_and_only_with_a_last_sync() {
        let rule = StaleRule { after_days: 30 };
        let now = 1_800_000_000;
        for (last, stale) in [
            (Some(now - 30 * DAY - 1), true),
            (Some(now - 30 * DAY), false),
            (Some(now - DAY), false),
            // A clock ahead of the host's: synced "in the future", not stale.
            (Some(now + DAY), false),
            (Some(i64::MIN), true),
            (None, false),
        ] {
            assert_eq!(rule.is_stale(&synced(last), now), stale, "{last:?}");
        }
    }
}
