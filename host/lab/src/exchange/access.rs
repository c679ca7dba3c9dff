//! How Exchange decides a device's `DeviceAccessState` and `DeviceAccessStateReason`.
//!
//! Precedence, as Exchange applies it:
//! 1. the mailbox's `ActiveSyncBlockedDeviceIDs` → Blocked / Individual;
//! 2. the mailbox's `ActiveSyncAllowedDeviceIDs` → Allowed / Individual;
//! 3. a device that has not yet told Exchange what it is → DeviceDiscovery / Global (no rule can
//!    match a model that is not known yet);
//! 4. device access rules → the rule's level / DeviceRule. When several match, the most specific
//!    characteristic wins (model, then user agent, then OS, then type — a model rule is how admins
//!    carve an exception out of a family rule), and among equally specific ones the most
//!    restrictive level (Block, then Quarantine, then Allow);
//! 5. the organization's `DefaultAccessLevel` → Global.
//!
//! IDs in the lists compare case-insensitively, as Exchange compares them. A device whose mailbox
//! is gone has no lists; rules and the default still apply.

use crate::org::{
    AccessLevel, AccessReason, AccessState, Characteristic, DeviceRule, EasDevice, Mailbox,
};

/// The outcome of `evaluate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub state: AccessState,
    pub reason: AccessReason,
    /// Index of the deciding rule, for `DeviceAccessControlRule`.
    pub rule: Option<u16>,
}

fn specificity(c: Characteristic) -> u8 {
    match c {
        Characteristic::DeviceModel => 4,
        Characteristic::UserAgent => 3,
        Characteristic::DeviceOS => 2,
        Characteristic::DeviceType => 1,
        // The lab's devices send no X-MS-WL header, so such rules never match.
        Characteristic::XMSWLHeader => 0,
    }
}

fn restrictiveness(level: AccessLevel) -> u8 {
    match level {
        AccessLevel::Block => 3,
        AccessLevel::Quarantine => 2,
        AccessLevel::Allow => 1,
    }
}

fn rule_matches(rule: &DeviceRule, dev: &EasDevice) -> bool {
    let p = dev.profile();
    let build = &p.builds[usize::from(dev.build)];
    let value = match rule.characteristic {
        Characteristic::DeviceType => p.eas_type.to_owned(),
        Characteristic::DeviceModel => p.eas_model.to_owned(),
        Characteristic::DeviceOS => build.eas_os.to_owned(),
        Characteristic::UserAgent => p.user_agent(build),
        Characteristic::XMSWLHeader => return false,
    };
    value.eq_ignore_ascii_case(&rule.query)
}

pub(crate) fn evaluate(
    dev: &EasDevice,
    mailbox: Option<&Mailbox>,
    rules: &[DeviceRule],
    default: AccessLevel,
) -> Verdict {
    let listed = |list: &[Box<str>]| list.iter().any(|x| x.eq_ignore_ascii_case(&dev.device_id));
    if let Some(m) = mailbox {
        if listed(&m.blocked) {
            return Verdict {
                state: AccessState::Blocked,
                reason: AccessReason::Individual,
                rule: None,
            };
        }
        if listed(&m.allowed) {
            return Verdict {
                state: AccessState::Allowed,
                reason: AccessReason::Individual,
                rule: None,
            };
        }
    }
    if !dev.discovered {
        return Verdict {
            state: AccessState::DeviceDiscovery,
            reason: AccessReason::Global,
            rule: None,
        };
    }
    let best = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| rule_matches(r, dev))
        .max_by_key(|(i, r)| {
            (
                specificity(r.characteristic),
                restrictiveness(r.level),
                // Stable choice between identical rules: the older one.
                std::cmp::Reverse(*i),
            )
        });
    if let Some((i, rule)) = best {
        return Verdict {
            state: rule.level.state(),
            reason: AccessReason::DeviceRule,
            rule: Some(i as u16),
        };
    }
    Verdict {
        state: default.state(),
        reason: AccessReason::Global,
        rule: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::PROFILES;
    use crate::org::Owner;
    use crate::random::Guid;
    use crate::utc::Utc;

    fn profile_index(eas_model: &str) -> u16 {
        PROFILES
            .iter()
            .position(|p| p.eas_model == eas_model)
            .unwrap() as u16
    }

    fn device(id: &str, model: &str, discovered: bool) -> EasDevice {
        EasDevice {
            seq: 0,
            device_id: id.into(),
            owner: Owner::Mailbox(0),
            profile: profile_index(model),
            build: 0,
            guid: Guid(1),
            derive: 0,
            first_sync: Utc::from_unix(0),
            last_sync: Utc::from_unix(0),
            when_changed: Utc::from_unix(0),
            discovered,
            state: AccessState::Unknown,
            reason: AccessReason::Unknown,
            rule: None,
            wipe: None,
        }
    }

    fn mailbox(allowed: &[&str], blocked: &[&str]) -> Mailbox {
        Mailbox {
            alias: "a".into(),
            display_name: "A".into(),
            upn: "a@x".into(),
            primary_smtp: "a@x".into(),
            guid: Guid(2),
            user_id: Guid(3),
            department: 0,
            preferred_language: None,
            languages: &[],
            allowed: allowed.iter().map(|s| (*s).into()).collect(),
            blocked: blocked.iter().map(|s| (*s).into()).collect(),
            active_sync_enabled: true,
            devices: vec![0],
            when_created: Utc::from_unix(0),
            when_changed: Utc::from_unix(0),
            edits_applied: 0,
        }
    }

    fn rule(c: Characteristic, q: &str, level: AccessLevel) -> DeviceRule {
        DeviceRule {
            guid: Guid(9),
            characteristic: c,
            query: q.into(),
            level,
            when_created: Utc::from_unix(0),
            when_changed: Utc::from_unix(0),
        }
    }

    /// One row per precedence case: (allowed, blocked, discovered, rules, default) → verdict.
    #[test]
    fn precedence_row_by_row() {
        use AccessLevel::*;
        use AccessReason as R;
        use AccessState as S;
        use Characteristic::*;
        let family_block = || rule(DeviceType, "iPhone", Block);
        let model_allow = || rule(DeviceModel, "iPhone14C7", Allow);
        let family_quarantine = || rule(DeviceType, "IPHONE", Quarantine);
        let other_family = || rule(DeviceType, "Android", Block);
        type Row = (
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            bool,
            Vec<DeviceRule>,
            AccessLevel,
            (AccessState, AccessReason, Option<u16>),
        );
        let rows: Vec<Row> = vec![
            (
                "block list beats allow list",
                &["DEV1"],
                &["DEV1"],
                true,
                vec![],
                Allow,
                (S::Blocked, R::Individual, None),
            ),
            (
                "block list is case-insensitive",
                &[],
                &["dev1"],
                true,
                vec![],
                Allow,
                (S::Blocked, R::Individual, None),
            ),
            (
                "allow list beats a blocking rule",
                &["dev1"],
                &[],
                true,
                vec![family_block()],
                Block,
                (S::Allowed, R::Individual, None),
            ),
            (
                "allow list beats quarantine default",
                &["DEV1"],
                &[],
                true,
                vec![],
                Quarantine,
                (S::Allowed, R::Individual, None),
            ),
            (
                "allow list applies during discovery",
                &["DEV1"],
                &[],
                false,
                vec![],
                Quarantine,
                (S::Allowed, R::Individual, None),
            ),
            (
                "undiscovered device: DeviceDiscovery",
                &[],
                &[],
                false,
                vec![family_block()],
                Allow,
                (S::DeviceDiscovery, R::Global, None),
            ),
            (
                "family rule beats the default",
                &[],
                &[],
                true,
                vec![family_block()],
                Allow,
                (S::Blocked, R::DeviceRule, Some(0)),
            ),
            (
                "model rule beats family rule",
                &[],
                &[],
                true,
                vec![family_block(), model_allow()],
                Block,
                (S::Allowed, R::DeviceRule, Some(1)),
            ),
            (
                "most restrictive of equal rules",
                &[],
                &[],
                true,
                vec![family_quarantine(), family_block()],
                Allow,
                (S::Blocked, R::DeviceRule, Some(1)),
            ),
            (
                "non-matching rule: default Allow",
                &[],
                &[],
                true,
                vec![other_family()],
                Allow,
                (S::Allowed, R::Global, None),
            ),
            (
                "default Block",
                &[],
                &[],
                true,
                vec![],
                Block,
                (S::Blocked, R::Global, None),
            ),
            (
                "default Quarantine",
                &["OTHER"],
                &["ELSE"],
                true,
                vec![],
                Quarantine,
                (S::Quarantined, R::Global, None),
            ),
        ];
        let dev = device("DEV1", "iPhone14C7", true);
        for (name, allowed, blocked, discovered, rules, default, want) in rows {
            let dev = EasDevice {
                discovered,
                ..dev.clone()
            };
            let m = mailbox(allowed, blocked);
            let v = evaluate(&dev, Some(&m), &rules, default);
            assert_eq!((v.state, v.reason, v.rule), want, "{name}");
        }
    }

    #[test]
    fn departed_owner_has_no_lists_but_rules_apply() {
        let dev = device("DEV1", "SM-G960F", true);
        let rules = [rule(
            Characteristic::DeviceModel,
            "SM-G960F",
            AccessLevel::Quarantine,
        )];
        let v = evaluate(&dev, None, &rules, AccessLevel::Allow);
        assert_eq!(v.state, AccessState::Quarantined);
        let v = evaluate(&dev, None, &[], AccessLevel::Block);
        assert_eq!(
            (v.state, v.reason),
            (AccessState::Blocked, AccessReason::Global)
        );
    }

    #[test]
    fn os_and_user_agent_rules_match_the_printed_values() {
        let dev = device("DEV1", "iPhone14C7", true);
        let os = rule(
            Characteristic::DeviceOS,
            "iOS 17.5.1 21F90",
            AccessLevel::Block,
        );
        let ua = rule(
            Characteristic::UserAgent,
            "Apple-iPhone14C7/2105.90",
            AccessLevel::Quarantine,
        );
        let v = evaluate(&dev, None, std::slice::from_ref(&os), AccessLevel::Allow);
        assert_eq!(v.state, AccessState::Blocked);
        // A user-agent rule is more specific than an OS rule.
        let v = evaluate(&dev, None, &[os, ua], AccessLevel::Allow);
        assert_eq!((v.state, v.rule), (AccessState::Quarantined, Some(1)));
    }
}
