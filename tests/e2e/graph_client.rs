//! The Graph client against the lab over HTTP: managed devices (all, and changed since), group
//! members, users, throttling and token expiry in the middle of a listing.

use std::collections::HashSet;
use std::time::Duration;

use easgate::graph::GraphClient;
use easgate::graph::models::ComplianceState;
use easgate::timestamp::Timestamp;
use easgate_lab::GraphLimits;

use crate::support::{client_lab, lab_organization, test_http, within};

#[tokio::test]
async fn lists_managed_devices_and_the_quick_sync_subset() {
    let lab = client_lab(2500, 1).await;
    let g = GraphClient::new(&lab_organization(&lab), &test_http()).unwrap();
    let all = within(Duration::from_secs(30), g.managed_devices())
        .await
        .unwrap();
    assert_eq!(all.len(), lab.control().info().managed_devices);
    let ids: HashSet<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), all.len());
    // Every managed device the lab links to an EAS device is listed.
    for t in lab.control().truth() {
        if let Some(id) = t.managed_device_id {
            assert!(ids.contains(id.as_str()), "{id} missing");
        }
    }
    assert!(
        all.iter()
            .any(|d| d.compliance_state == ComplianceState::Compliant)
    );

    // Quick sync: only those synced at or after the cursor.
    let mut times: Vec<Timestamp> = all.iter().filter_map(|d| d.last_sync_date_time).collect();
    times.sort();
    let cursor = times[times.len() * 9 / 10];
    let recent = g.managed_devices_since(cursor).await.unwrap();
    let want = all
        .iter()
        .filter(|d| d.last_sync_date_time.is_some_and(|t| t >= cursor))
        .count();
    assert_eq!(recent.len(), want);
    assert!(recent.len() < all.len() / 5);

    // The quick sync's look over every record: the same records, four fields each.
    let states = g.managed_device_states().await.unwrap();
    assert_eq!(states.len(), all.len());
    let by_id: std::collections::HashMap<&str, _> =
        all.iter().map(|d| (d.id.as_str(), d)).collect();
    for s in &states {
        let d = by_id[s.id.as_str()];
        assert_eq!(
            (&s.id, &s.eas_device_id, &s.management_state),
            (&d.id, &d.eas_device_id, &d.management_state)
        );
        let compliance: ComplianceState =
            serde_json::from_value(serde_json::json!(s.compliance_state)).unwrap();
        assert_eq!(compliance, d.compliance_state);
    }
}

#[tokio::test]
async fn group_members_users_and_their_groups() {
    let lab = client_lab(300, 1).await;
    let g = GraphClient::new(&lab_organization(&lab), &test_http()).unwrap();
    let upn = lab.control().truth()[0]
        .user_principal_name
        .clone()
        .expect("the first device has an owner");
    let user = g.user(&upn).await.unwrap();
    assert!(user.user_principal_name.eq_ignore_ascii_case(&upn));
    let groups = g.member_of(&upn).await.unwrap();
    let all_staff = groups
        .iter()
        .find(|x| x.display_name.as_deref() == Some("All Staff"))
        .expect("everyone is in All Staff");
    assert!(all_staff.is_group());
    let members = g.group_members(&all_staff.id).await.unwrap();
    let users = members.iter().filter(|m| m.is_user()).count();
    assert_eq!(users, lab.control().info().mailboxes);
    assert!(
        members
            .iter()
            .filter(|m| m.is_user())
            .all(|m| m.user_principal_name.is_some())
    );
    let missing = g.user("nobody@contoso.com").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
}

#[tokio::test]
async fn throttled_and_expiring_token_mid_listing_completes_transparently() {
    let lab = client_lab(5000, 1).await;
    // One request per second, tokens for one second: the five pages of the listing meet both
    // 429s with Retry-After and expired tokens.
    lab.control().set_graph_limits(GraphLimits {
        tenant_requests: 4,
        app_requests: 2,
        window_ms: 2000,
    });
    lab.control().set_token_lifetime(Duration::from_secs(1));
    let g = GraphClient::new(&lab_organization(&lab), &test_http()).unwrap();
    let devices = within(Duration::from_secs(40), g.managed_devices())
        .await
        .unwrap();
    assert_eq!(devices.len(), lab.control().info().managed_devices);
    let c = lab.control().counters().graph;
    assert!(c.tokens_issued >= 3, "tokens renewed: {}", c.tokens_issued);
    assert!(c.throttled >= 1, "throttled: {}", c.throttled);
    assert_eq!(
        c.by_endpoint["managedDevices"] - c.throttled,
        5,
        "five pages, each once"
    );
}
