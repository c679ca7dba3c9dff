//! Faults the control API injects into the lab's Exchange beyond a CAS's mode (`server::CasMode`):
//! a number of `@odata.nextLink`s whose skip token has expired when followed, optionally only
//! those of one cmdlet's listings. Each expiry is used up by the request that meets it, so a test
//! sets the fault once and the requests after it meet a healthy service again.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What to inject (`PUT /_lab/exchange-faults`); every field is optional, absent ones are off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExchangeFaults {
    /// The next n requests that follow an `@odata.nextLink` find its skip token expired.
    pub expire_next_links: u32,
    /// Only next links of this cmdlet's listings expire (any cmdlet's when absent), so that a
    /// drill can aim at one of the listings a sync runs side by side.
    pub cmdlet: Option<String>,
}

/// The faults in force.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    state: Mutex<ExchangeFaults>,
}

impl Faults {
    /// Replaces the faults in force with `f`.
    pub fn set(&self, f: ExchangeFaults) {
        *self.state.lock().expect("exchange faults") = f;
    }

    /// What is left of the faults in force.
    pub fn get(&self) -> ExchangeFaults {
        self.state.lock().expect("exchange faults").clone()
    }

    /// Whether the skip token of this followed next link of `cmdlet` has expired.
    pub fn expire_link(&self, cmdlet: &str) -> bool {
        let mut s = self.state.lock().expect("exchange faults");
        let aimed = s
            .cmdlet
            .as_deref()
            .is_none_or(|c| c.eq_ignore_ascii_case(cmdlet));
        if !aimed || s.expire_next_links == 0 {
            return false;
        }
        s.expire_next_links -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_used_up_by_the_aimed_cmdlet_only() {
        let f = Faults::default();
        assert!(!f.expire_link("Get-MobileDevice"), "off by default");
        f.set(ExchangeFaults {
            expire_next_links: 2,
            cmdlet: Some("get-mobiledevice".into()),
        });
        assert!(!f.expire_link("Get-CASMailbox"));
        assert!(f.expire_link("Get-MobileDevice"));
        assert_eq!(f.get().expire_next_links, 1);
        assert!(f.expire_link("Get-MobileDevice"));
        assert!(!f.expire_link("Get-MobileDevice"), "used up");

        f.set(ExchangeFaults {
            expire_next_links: 1,
            cmdlet: None,
        });
        assert!(f.expire_link("Get-Mailbox"));
        assert!(!f.expire_link("Get-Mailbox"));
    }
}
