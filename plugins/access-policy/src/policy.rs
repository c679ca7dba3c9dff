//! The decision table, free of any Wasm glue so that it is unit-tested natively.

use std::cmp::Ordering;

use crate::easgate::policy::types::{ComplianceState, DeviceContext, Verdict};
use crate::stale::StaleRule;

/// The configured policy: what `configure` parsed out of the settings.
#[derive(Debug)]
pub struct Policy {
    /// Empty means every user is in scope.
    pub included_groups: NameMap<()>,
    pub excluded_groups: NameMap<()>,
    /// Rules on `device-model`; they beat family rules, as a more specific rule should.
    pub model_rules: NameMap<Verdict>,
    /// Rules on `device-type`, the device family.
    pub family_rules: NameMap<Verdict>,
    /// `false` silences every notice, whatever the verdict.
    pub notify: bool,
    /// `blockStaleAfterDays`; `None` (the default) blocks no device for its age.
    pub stale: Option<StaleRule>,
}

impl Default for Policy {
    /// The policy of empty settings: everyone in scope, no device rules, notices on.
    fn default() -> Self {
        Self {
            included_groups: NameMap::default(),
            excluded_groups: NameMap::default(),
            model_rules: NameMap::default(),
            family_rules: NameMap::default(),
            notify: true,
            stale: None,
        }
    }
}

/// Why a device got its verdict; [`Reason::code`] is what the audit trail records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    OutOfScope,
    Compliant,
    Noncompliant,
    DeviceRule,
    NotEnrolled,
    Stale,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::OutOfScope => "out-of-scope",
            Reason::Compliant => "compliant",
            Reason::Noncompliant => "noncompliant",
            Reason::DeviceRule => "device-rule",
            Reason::NotEnrolled => "not-enrolled",
            Reason::Stale => "stale",
        }
    }
}

/// One row of the decision table, before it becomes a WIT `decision` (which owns its reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    pub notify: bool,
}

impl Policy {
    /// The decision table; the first row that matches wins. Allocates nothing: it runs a
    /// million times a second. `now` is the host's `sync-info.now` (Unix seconds).
    pub fn decide(&self, device: &DeviceContext, now: i64) -> Outcome {
        // An unresolved user (e.g. the owner left) cannot be shown to be out of scope, so the
        // device is judged like any other rather than silently left alone.
        if let Some(user) = &device.user {
            let in_scope = self.included_groups.is_empty()
                || user.groups.iter().any(|g| self.included_groups.contains(g));
            let excluded = !self.excluded_groups.is_empty()
                && user.groups.iter().any(|g| self.excluded_groups.contains(g));
            if !in_scope || excluded {
                return self.outcome(Verdict::Exempt, Reason::OutOfScope, false);
            }
        }

        // Before compliance: a compliant record says nothing about a partnership nobody uses.
        if self.stale.is_some_and(|rule| rule.is_stale(device, now)) {
            return self.outcome(Verdict::Block, Reason::Stale, true);
        }

        if let Some(managed) = &device.managed {
            return match managed.compliance_state {
                ComplianceState::Compliant | ComplianceState::InGracePeriod => {
                    self.outcome(Verdict::Allow, Reason::Compliant, false)
                }
                _ => self.outcome(Verdict::Block, Reason::Noncompliant, true),
            };
        }

        let rule = self
            .model_rules
            .get(&device.eas.device_model)
            .or_else(|| self.family_rules.get(&device.eas.device_type));
        match rule {
            Some(&level) => self.outcome(level, Reason::DeviceRule, level != Verdict::Allow),
            None => self.outcome(Verdict::Quarantine, Reason::NotEnrolled, true),
        }
    }

    fn outcome(&self, verdict: Verdict, reason: Reason, notify: bool) -> Outcome {
        Outcome {
            verdict,
            reason,
            notify: notify && self.notify,
        }
    }
}

/// A small map keyed by names compared ASCII-case-insensitively (group object ids, device
/// models and families), looked up without allocating: keys are stored lowercased and sorted,
/// and a lookup lowercases the needle byte by byte during a binary search.
#[derive(Debug)]
pub struct NameMap<V> {
    entries: Vec<(String, V)>,
}

// Derived, `Default` would needlessly require `V: Default`.
impl<V> Default for NameMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V> NameMap<V> {
    /// Adds `name`; gives the entry back if a name equal to it ignoring case is already there.
    pub fn insert(&mut self, name: &str, value: V) -> Result<(), V> {
        match self.search(name) {
            Ok(_) => Err(value),
            Err(at) => {
                self.entries.insert(at, (name.to_ascii_lowercase(), value));
                Ok(())
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        self.search(name).ok().map(|at| &self.entries[at].1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.search(name).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn search(&self, name: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(key, _)| cmp_lowercased(key, name))
    }
}

/// Orders an already-lowercase `key` against `name` as if `name` were lowercased too.
fn cmp_lowercased(key: &str, name: &str) -> Ordering {
    key.bytes()
        .cmp(name.bytes().map(|b| b.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::easgate::policy::types::{AccessState, EasDevice, ManagedDevice, Ownership, User};

    fn policy() -> Policy {
        let mut policy = Policy::default();
        policy.included_groups.insert("GROUP-SALES", ()).unwrap();
        policy.included_groups.insert("group-it", ()).unwrap();
        policy.excluded_groups.insert("group-vip", ()).unwrap();
        policy
            .model_rules
            .insert("iPhone15,2", Verdict::Block)
            .unwrap();
        policy
            .family_rules
            .insert("iPhone", Verdict::Allow)
            .unwrap();
        policy
            .family_rules
            .insert("Android", Verdict::Block)
            .unwrap();
        policy
    }

    fn device(family: &str, model: &str) -> DeviceContext {
        DeviceContext {
            eas: EasDevice {
                device_id: "DEV1".into(),
                identity: String::new(),
                mailbox: "alice@contoso.com".into(),
                device_type: family.into(),
                device_model: model.into(),
                device_os: String::new(),
                user_agent: String::new(),
                first_sync: None,
                last_success_sync: None,
                access_state: AccessState::Quarantined,
                access_state_reason: "Global".into(),
            },
            managed: None,
            user: Some(User {
                user_principal_name: "alice@contoso.com".into(),
                primary_smtp: "alice@contoso.com".into(),
                groups: vec!["group-sales".into()],
            }),
        }
    }

    fn enrolled(mut device: DeviceContext, state: ComplianceState) -> DeviceContext {
        device.managed = Some(ManagedDevice {
            id: "m1".into(),
            user_principal_name: "alice@contoso.com".into(),
            device_name: "Alice's phone".into(),
            operating_system: "iOS".into(),
            os_version: "17.4".into(),
            compliance_state: state,
            management_state: "managed".into(),
            ownership: Ownership::Personal,
            last_sync: None,
            enrolled: None,
        });
        device
    }

    fn in_groups(mut device: DeviceContext, groups: &[&str]) -> DeviceContext {
        if let Some(user) = &mut device.user {
            user.groups = groups.iter().map(|g| g.to_string()).collect();
        }
        device
    }

    fn expect(verdict: Verdict, reason: Reason, notify: bool) -> Outcome {
        Outcome {
            verdict,
            reason,
            notify,
        }
    }

    #[test]
    fn decision_table() {
        use ComplianceState as C;
        use Reason as R;
        use Verdict as V;
        let phone = || device("iPhone", "iPhone14,7");
        let cases = [
            (
                "not in an included group",
                in_groups(phone(), &["other"]),
                expect(V::Exempt, R::OutOfScope, false),
            ),
            (
                "no groups at all",
                in_groups(phone(), &[]),
                expect(V::Exempt, R::OutOfScope, false),
            ),
            (
                "excluded beats compliant",
                enrolled(in_groups(phone(), &["group-it", "GROUP-VIP"]), C::Compliant),
                expect(V::Exempt, R::OutOfScope, false),
            ),
            (
                "unknown user is judged",
                DeviceContext {
                    user: None,
                    ..phone()
                },
                expect(V::Allow, R::DeviceRule, false),
            ),
            (
                "compliant",
                enrolled(phone(), C::Compliant),
                expect(V::Allow, R::Compliant, false),
            ),
            (
                "in grace period",
                enrolled(phone(), C::InGracePeriod),
                expect(V::Allow, R::Compliant, false),
            ),
            (
                "noncompliant",
                enrolled(phone(), C::Noncompliant),
                expect(V::Block, R::Noncompliant, true),
            ),
            (
                "compliance unknown",
                enrolled(phone(), C::Unknown),
                expect(V::Block, R::Noncompliant, true),
            ),
            (
                "enrolled beats device rules",
                enrolled(device("Android", "x"), C::Compliant),
                expect(V::Allow, R::Compliant, false),
            ),
            (
                "model rule beats family rule",
                device("iPhone", "IPHONE15,2"),
                expect(V::Block, R::DeviceRule, true),
            ),
            (
                "model rule is exact",
                device("Outlook", "iPhone15,20"),
                expect(V::Quarantine, R::NotEnrolled, true),
            ),
            (
                "family rule, any case",
                device("android", "SM-S918B"),
                expect(V::Block, R::DeviceRule, true),
            ),
            (
                "allow rule does not notify",
                phone(),
                expect(V::Allow, R::DeviceRule, false),
            ),
            (
                "no rule",
                device("Outlook", "Outlook for iOS"),
                expect(V::Quarantine, R::NotEnrolled, true),
            ),
        ];
        let policy = policy();
        for (name, device, want) in cases {
            assert_eq!(policy.decide(&device, NOW), want, "{name}");
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_stale_partnership_is_blocked_before_compliance_but_not_out_of_scope() {
        let stale_30 = Policy {
            stale: Some(StaleRule { after_days: 30 }),
            ..policy()
        };
        let synced = |mut d: DeviceContext, days_ago: i64| {
            d.eas.last_success_sync = Some(NOW - days_ago * 86_400);
            d
        };
        let phone = || device("iPhone", "iPhone14,7");
        let cases = [
            (
                "stale and compliant",
                synced(enrolled(phone(), ComplianceState::Compliant), 31),
                expect(Verdict::Block, Reason::Stale, true),
            ),
            (
                "stale and not enrolled",
                synced(device("Outlook", "x"), 400),
                expect(Verdict::Block, Reason::Stale, true),
            ),
            (
                "recent",
                synced(enrolled(phone(), ComplianceState::Compliant), 29),
                expect(Verdict::Allow, Reason::Compliant, false),
            ),
            (
                "no statistics",
                enrolled(phone(), ComplianceState::Compliant),
                expect(Verdict::Allow, Reason::Compliant, false),
            ),
            (
                "out of scope stays exempt",
                synced(in_groups(phone(), &[]), 400),
                expect(Verdict::Exempt, Reason::OutOfScope, false),
            ),
        ];
        for (name, device, want) in cases {
            assert_eq!(stale_30.decide(&device, NOW), want, "{name}");
        }
        // Off by default.
        let old = synced(enrolled(phone(), ComplianceState::Compliant), 4000);
        assert_eq!(
            policy().decide(&old, NOW),
            expect(Verdict::Allow, Reason::Compliant, false)
        );
    }

    #[test]
    fn empty_settings_put_everyone_in_scope() {
        let policy = Policy::default();
        let device = in_groups(device("Outlook", "x"), &[]);
        assert_eq!(
            policy.decide(&device, NOW),
            expect(Verdict::Quarantine, Reason::NotEnrolled, true)
        );
    }

    #[test]
    fn notify_off_silences_every_row() {
        let policy = Policy {
            notify: false,
            ..policy()
        };
        let noncompliant = enrolled(device("iPhone", "x"), ComplianceState::Error);
        assert_eq!(
            policy.decide(&noncompliant, NOW),
            expect(Verdict::Block, Reason::Noncompliant, false)
        );
        let unknown = device("Outlook", "x");
        assert_eq!(
            policy.decide(&unknown, NOW),
            expect(Verdict::Quarantine, Reason::NotEnrolled, false)
        );
    }

    #[test]
    fn name_map_ignores_ascii_case_and_refuses_duplicates() {
        let mut map = NameMap::default();
        for name in ["b", "A", "c-D"] {
            map.insert(name, ()).unwrap();
        }
        assert!(map.contains("a") && map.contains("B") && map.contains("C-d"));
        assert!(!map.contains("d") && !map.contains("") && !map.contains("aa"));
        assert_eq!(map.insert("C-D", ()), Err(()));
    }
}
