//! Held plans against the lab: what waits for an operator touches nothing that says what is
//! enforced, an approved plan mails the users it concerns, and a plan a newer run superseded
//! cannot be approved (regressions of the hostile run's holes 1 to 3).

use std::time::Duration;

use easgate::model::SyncKind;
use easgate::store::{RunOutcome, StoreError};
use easgate::sync::SyncError;
use easgate_lab::Lab;

use crate::notices::{Notifying, notifying_over};
use crate::support::lab::{assert_enforced, expected, mismatches, sync_lab};
use crate::support::{Transport, within};

const LIMIT: Duration = Duration::from_secs(120);

/// The connector of `notifying_over` with the default blast-radius guard, under which a lab's
/// first full sync restricts far more than the limit.
fn guarded(lab: &Lab, dir: &std::path::Path, transport: Transport) -> Notifying {
    let mut n = notifying_over(lab, dir, transport);
    n.sync.settings.max_new_restrictions = Default::default();
    n
}

over_transports!(an_approved_plan_is_enforced_and_mails_the_users_it_restricts);
async fn an_approved_plan_is_enforced_and_mails_the_users_it_restricts(transport: Transport) {
    let lab = sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let Notifying {
        store,
        sync,
        policy,
        ..
    } = guarded(&lab, dir.path(), transport);

    let held = within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    assert_eq!(held.outcome, RunOutcome::Held, "{:?}", held.errors);
    assert!(!mismatches(&lab, expected).is_empty(), "nothing was held");
    assert!(lab.control().mails().is_empty(), "a held plan mails nobody");
    let org = store.organization(&sync.name, 0).unwrap();
    let decided = store
        .devices(org)
        .unwrap()
        .iter()
        .filter(|d| d.decision.is_some())
        .count();
    assert_eq!(
        decided, 0,
        "a held plan's verdicts are not the devices' own"
    );

    let applied = within(LIMIT, sync.approve(held.run)).await.unwrap();
    assert_eq!(
        applied.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        applied.errors
    );
    assert_enforced(&lab, expected);
    assert!(applied.notices.queued > 0, "{:?}", applied.notices);
    assert_eq!(
        applied.notices.sent, applied.notices.queued,
        "{:?}",
        applied.notices
    );
    assert_eq!(lab.control().mails().len() as u64, applied.notices.sent);

    // The next run sees the approved verdicts as current: nothing changes, nobody is mailed.
    lab.control().clear_mails();
    let next = within(LIMIT, sync.run(SyncKind::Full, false, policy))
        .await
        .unwrap();
    assert_eq!(next.outcome, RunOutcome::Succeeded, "{:?}", next.errors);
    assert_eq!(
        (next.devices_changed, next.notices.queued),
        (0, 0),
        "{next:?}"
    );
    assert!(lab.control().mails().is_empty());
}

over_transports!(a_plan_superseded_by_a_newer_run_cannot_be_approved);
async fn a_plan_superseded_by_a_newer_run_cannot_be_approved(transport: Transport) {
    let lab = sync_lab(300).await;
    let dir = tempfile::tempdir().unwrap();
    let Notifying { sync, policy, .. } = guarded(&lab, dir.path(), transport);

    let old = within(LIMIT, sync.run(SyncKind::Full, false, policy.clone()))
        .await
        .unwrap();
    assert_eq!(old.outcome, RunOutcome::Held);
    let newer = within(LIMIT, sync.run(SyncKind::Full, false, policy))
        .await
        .unwrap();
    assert_eq!(newer.outcome, RunOutcome::Held);

    let edits = lab.control().counters().calls("Set-CASMailbox");
    let refused = within(LIMIT, sync.approve(old.run)).await.unwrap_err();
    assert!(
        matches!(&refused, SyncError::Store(StoreError::Superseded { run, by })
            if *run == old.run && *by == newer.run),
        "{refused}"
    );
    assert!(refused.to_string().contains("expired"), "{refused}");
    assert_eq!(
        lab.control().counters().calls("Set-CASMailbox"),
        edits,
        "nothing sent"
    );
    let record = sync.store.run(old.run).unwrap().unwrap();
    assert_eq!(
        (record.outcome, record.superseded_by),
        (RunOutcome::Rejected, Some(newer.run))
    );

    // The newest plan is the one an operator can approve.
    let applied = within(LIMIT, sync.approve(newer.run)).await.unwrap();
    assert_eq!(
        applied.outcome,
        RunOutcome::Succeeded,
        "{:?}",
        applied.errors
    );
    assert_enforced(&lab, expected);
}
