//! A lab set up for syncs, the connector's configuration and sync for it, and what the
//! built-in policy (empty settings) should make of its devices, computed from the lab's ground
//! truth (`truth()`) independently of the connector's matching and plan code: a compliant (or
//! in-grace) enrolled device is allowed, any other enrolled device blocked, and a device that is
//! not enrolled quarantined.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use easgate::config::Organization;
use easgate::exchange::cmdlets::GetMobileDevice;
use easgate::exchange::models::MobileDevice;
use easgate::exchange::{ExchangeClient, ExchangeError};
use easgate::graph::GraphClient;
use easgate::model::{RestrictionLimit, SyncSettings, Verdict};
use easgate::store::Store;
use easgate::sync::OrgSync;
use easgate_lab::{ComplianceState, DeviceTruth, Lab, LabOptions, LatencyModel};

use super::{Transport, organization_over, test_http, within};

/// A lab whose times are today's, so that devices added during a test are newer than the
/// quick-sync cursor; 1 ms per Exchange request keeps a 5 000-device sync short.
pub async fn sync_lab(devices: usize) -> Lab {
    Lab::start(LabOptions {
        devices,
        cas: 1,
        seed: 5,
        latency: LatencyModel::uniform(1, 0),
        ..Default::default()
    })
    .await
    .expect("the lab starts")
}

/// The first full sync of a lab moves every device allowed only by the org default, which a
/// real roll-out approves once; tests that are not about the guard lift it.
pub fn unguarded() -> SyncSettings {
    SyncSettings {
        max_new_restrictions: RestrictionLimit {
            percent: 100.0,
            floor: usize::MAX / 2,
        },
        ..SyncSettings::default()
    }
}

pub fn org_sync(lab: &Lab, store: Arc<Store>, settings: SyncSettings) -> OrgSync {
    org_sync_over(lab, store, settings, Transport::Rest)
}

/// [`org_sync`] with Exchange reached over `transport`.
pub fn org_sync_over(
    lab: &Lab,
    store: Arc<Store>,
    settings: SyncSettings,
    transport: Transport,
) -> OrgSync {
    let mut org = organization_over(lab, transport);
    org.exchange.parallel_commands = 16;
    let http = test_http();
    let exchange = ExchangeClient::builder(&org, &http)
        .build()
        .expect("exchange client");
    let graph = GraphClient::new(&org, &http).expect("graph client");
    OrgSync::new(org.name.clone(), exchange, graph, settings, store)
}

/// The built-in policy's verdict for a device, from the lab's ground truth.
pub fn expected(device: &DeviceTruth) -> Verdict {
    match (&device.managed_device_id, device.compliance_state) {
        (Some(_), Some(ComplianceState::Compliant | ComplianceState::InGracePeriod)) => {
            Verdict::Allow
        }
        (Some(_), _) => Verdict::Block,
        (None, _) => Verdict::Quarantine,
    }
}

/// Whether Exchange enforces `verdict` for `device`: list membership and the resulting state.
/// Quarantine only requires that the device is on neither list and not allowed: a device
/// access rule may block it, and a device still in discovery shows `DeviceDiscovery`.
pub fn enforced(device: &DeviceTruth, verdict: Verdict) -> bool {
    use easgate_lab::AccessState as S;
    match verdict {
        Verdict::Allow => {
            device.in_allow_list && !device.in_block_list && device.access_state == S::Allowed
        }
        Verdict::Block => {
            device.in_block_list && !device.in_allow_list && device.access_state == S::Blocked
        }
        Verdict::Quarantine => {
            !device.in_allow_list && !device.in_block_list && device.access_state != S::Allowed
        }
        Verdict::Exempt => true,
    }
}

/// Devices (with a mailbox: a partnership whose owner left has no lists to edit) whose state
/// does not match what `verdict_of` says.
pub fn mismatches(lab: &Lab, verdict_of: impl Fn(&DeviceTruth) -> Verdict) -> Vec<String> {
    lab.control()
        .truth()
        .iter()
        .filter(|d| d.mailbox.is_some())
        .filter(|d| !enforced(d, verdict_of(d)))
        .map(|d| {
            format!(
                "{} ({:?}, allow list {}, block list {}) expected {:?}",
                d.identity,
                d.access_state,
                d.in_allow_list,
                d.in_block_list,
                verdict_of(d)
            )
        })
        .collect()
}

/// Fails the test unless every device (with a mailbox) is as `verdict_of` says; the message
/// counts the others and shows five of them.
pub fn assert_enforced(lab: &Lab, verdict_of: impl Fn(&DeviceTruth) -> Verdict) {
    let wrong = mismatches(lab, verdict_of);
    assert!(
        wrong.is_empty(),
        "{} devices not as the policy decided, e.g. {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// The lab's "Mobile Access Exempt" group, found through the first of `users` who is a member
/// (each lookup bounded): its id and its user members' principal names, lowercase.
pub async fn exempt_group(
    graph: &GraphClient,
    users: impl IntoIterator<Item = &str>,
) -> (String, std::collections::HashSet<String>) {
    let mut group = None;
    for upn in users {
        let groups = within(Duration::from_secs(30), graph.member_of(upn))
            .await
            .unwrap();
        if let Some(g) = groups
            .into_iter()
            .find(|g| g.display_name.as_deref() == Some("Mobile Access Exempt"))
        {
            group = Some(g.id);
            break;
        }
    }
    let group = group.expect("none of the users is a member of the exempt group");
    let members = graph
        .group_members(&group)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.is_user())
        .filter_map(|m| m.user_principal_name.map(|u| u.to_lowercase()))
        .collect();
    (group, members)
}

/// A link with a query: `&` must come out as `&amp;` in the HTML part.
pub const REMEDIATION_URL: &str = "https://portal.contoso.example/enroll?src=mail&org=contoso";

/// The `[notify]` section sending plain SMTP to `port` on loopback.
pub fn notify_section(port: u16, timeout: &str) -> String {
    format!(
        "\n[notify]\n\
         smtp = {{ host = \"127.0.0.1\", port = {port}, security = \"none\", timeout = \"{timeout}\" }}\n\
         from = \"Contoso IT <noreply@contoso.com>\"\n\
         remediation_url = \"{REMEDIATION_URL}\"\n"
    )
}

/// Appends to the configuration at `config` a `[notify]` section sending plain SMTP to `port`
/// on loopback.
pub fn add_notify(config: &Path, port: u16, timeout: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, text + &notify_section(port, timeout)).unwrap();
}

/// Writes a configuration for `lab` into `dir` with the store in `dir/data`, `parallel`
/// commands in flight and the blast-radius guard lifted (a first roll-out).
pub fn write_config(lab: &Lab, dir: &Path, parallel: usize) -> PathBuf {
    write_config_over(lab, dir, parallel, Transport::Rest)
}

/// [`write_config`] with Exchange reached over `transport` (PowerShell: the lab's
/// `/PowerShell/` URLs, Basic, the password in `dir/exchange.pw`).
pub fn write_config_over(lab: &Lab, dir: &Path, parallel: usize, transport: Transport) -> PathBuf {
    let text = match transport {
        Transport::Rest => lab.connector_config(&easgate_lab::SecretSource::Inline),
        Transport::PowerShell => {
            std::fs::write(dir.join("exchange.pw"), lab.powershell_account().1)
                .expect("password written");
            easgate_lab::powershell_connector_config(
                &lab.control().info(),
                "contoso",
                &easgate_lab::SecretSource::Inline,
                "exchange.pw",
            )
        }
    };
    let text = text.replace(
        "[organization.graph]",
        &format!("parallel_commands = {parallel}\n\n[organization.graph]"),
    );
    let text = format!(
        "[sync]\ndata_dir = \"data\"\n\n{text}\n[organization.sync]\n\
         max_new_restrictions = {{ percent = 100.0, floor = 1000000 }}\n"
    );
    let path = dir.join("easgate.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

/// Makes the lab's Exchange throttle a connector that sends several commands at once: over
/// REST it admits one request at a time; over remote PowerShell, which has no such limit, the
/// account's user load quota admits `per_second` commands a second.
pub fn throttle_exchange(lab: &Lab, transport: Transport, per_second: u32) {
    match transport {
        Transport::Rest => lab.control().set_exchange_concurrency(1),
        Transport::PowerShell => {
            lab.control()
                .set_powershell_limits(easgate_lab::PowerShellLimits {
                    max_shells_per_user: easgate_lab::DEFAULT_MAX_SHELLS,
                    user_load_quota: Some(easgate_lab::UserLoadQuota {
                        requests: per_second,
                        seconds: 1,
                    }),
                })
        }
    }
}

/// Every device `org`'s settings list (one client, closed after), within a minute: what the
/// sign-in tests compare a refusal with, or expect one from.
pub async fn list_devices(org: &Organization) -> Result<Vec<MobileDevice>, ExchangeError> {
    let client = ExchangeClient::builder(org, &test_http())
        .build()
        .expect("the client builds");
    let devices = within(
        Duration::from_secs(60),
        client.run(&GetMobileDevice::default()),
    )
    .await;
    client.close().await;
    devices
}

/// Lists every device of `lab` with `org`, whose sign-in must work (`why` says what that
/// shows): the settings a test's refusals were compared with.
pub async fn lists_every_device(lab: &Lab, org: &Organization, why: &str) {
    let devices = list_devices(org).await.expect(why);
    assert_eq!(devices.len(), lab.control().truth().len(), "{why}");
}
