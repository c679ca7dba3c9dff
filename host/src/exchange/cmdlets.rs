//! The cmdlets the connector runs: their names, typed parameters ([`Parameters`], rendered by
//! each transport its own way) and typed results. Listing cmdlets ask for `-ResultSize
//! Unlimited` by default: without it Exchange stops at 1000 objects with only a warning.

use std::borrow::Cow;

use serde::de::{DeserializeOwned, IgnoredAny};

use super::models::{
    AccessLevel, CasMailbox, ClientAccessService, CommandInfo, DeviceAccessRule, ExchangeServer,
    Mailbox, MobileDevice, MobileDeviceStatistics, OrganizationSettings, properties_of,
};
use crate::model::{Command, ParamValue, Parameters};

/// A cmdlet with its parameters and the objects it returns.
pub trait Cmdlet: Send + Sync {
    /// Changes state. A write whose request may have reached Exchange without an answer is
    /// retried only where repeating it has the same effect; see `ExchangeError::is_repeat_of_applied`.
    const WRITE: bool;
    type Output: DeserializeOwned + Send + 'static;
    /// The cmdlet's name, e.g. `Get-MobileDevice` (data for a planned [`Command`]).
    fn name(&self) -> &str;
    /// Its parameters, in the order a transport renders them.
    fn parameters(&self) -> Cow<'_, Parameters>;
    /// The properties of each object the connector reads, for a transport that can ask for
    /// just those (remote PowerShell: `… | Select-Object -Property …`, which spares Exchange
    /// and the connector a listing's other properties). `None`: every property.
    fn properties(&self) -> Option<&'static [&'static str]> {
        None
    }
}

/// A planned command, run exactly as the plan and the journal hold it. Every command a plan
/// holds is a write whose repetition has the same effect (an `@{Add; Remove}` edit, a removal,
/// a setting).
impl Cmdlet for Command {
    const WRITE: bool = true;
    type Output = IgnoredAny;
    fn name(&self) -> &str {
        &self.cmdlet
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Borrowed(&self.parameters)
    }
}

/// `-ResultSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultSize {
    #[default]
    Unlimited,
    Limit(u32),
}

impl ResultSize {
    fn value(self) -> ParamValue {
        match self {
            ResultSize::Unlimited => ParamValue::Unlimited,
            ResultSize::Limit(n) => ParamValue::Int(n.into()),
        }
    }
}

/// An `@{Add=…; Remove=…}` change of a multi-valued property ([`ParamValue::HashEdit`]).
/// Repeating it has the same effect (Exchange refuses an `Add` of a present value, which the
/// client recognizes after an unanswered attempt).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HashTableEdit {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl HashTableEdit {
    pub fn new(add: Vec<String>, remove: Vec<String>) -> Self {
        HashTableEdit { add, remove }
    }

    fn value(&self) -> ParamValue {
        ParamValue::HashEdit {
            add: self.add.clone(),
            remove: self.remove.clone(),
        }
    }
}

/// A switch: present when `on`.
trait WithSwitch {
    fn with_switch(self, name: &str, on: bool) -> Self;
}

impl WithSwitch for Parameters {
    fn with_switch(self, name: &str, on: bool) -> Self {
        if on { self.switch(name) } else { self }
    }
}

/// Adds `name` when `value` is set.
fn optional(p: Parameters, name: &str, value: Option<ParamValue>) -> Parameters {
    match value {
        Some(v) => p.with(name, v),
        None => p,
    }
}

/// `Get-MobileDevice`.
#[derive(Debug, Clone, Default)]
pub struct GetMobileDevice {
    pub result_size: ResultSize,
    pub mailbox: Option<String>,
    /// OPATH filter, e.g. `FirstSyncTime -gt '2025-01-01T00:00:00Z'`.
    pub filter: Option<String>,
    /// EAS devices only (not OWA for Devices).
    pub active_sync: bool,
}

impl Cmdlet for GetMobileDevice {
    const WRITE: bool = false;
    type Output = MobileDevice;
    fn name(&self) -> &str {
        "Get-MobileDevice"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(
            optional(
                optional(
                    Parameters::new().with("ResultSize", self.result_size.value()),
                    "Mailbox",
                    self.mailbox.clone().map(ParamValue::Text),
                ),
                "Filter",
                self.filter.clone().map(ParamValue::Text),
            )
            .with_switch("ActiveSync", self.active_sync),
        )
    }
    fn properties(&self) -> Option<&'static [&'static str]> {
        properties_of::<MobileDevice>()
    }
}

/// `Get-MobileDevice` read one record at a time: a device record that cannot be read is
/// returned as such (which device, which field) instead of failing its page.
#[derive(Debug, Clone, Default)]
pub struct GetMobileDeviceRecords(pub GetMobileDevice);

impl Cmdlet for GetMobileDeviceRecords {
    const WRITE: bool = false;
    type Output = crate::net::record::Checked<MobileDevice>;
    fn name(&self) -> &str {
        "Get-MobileDevice"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        self.0.parameters()
    }
    fn properties(&self) -> Option<&'static [&'static str]> {
        properties_of::<MobileDevice>()
    }
}

/// `Get-CASMailbox`.
/// `Get-MobileDeviceStatistics -Mailbox <mailbox> -ActiveSync`: the statistics of every
/// ActiveSync partnership of one mailbox in one request (Exchange has no parameter set for a
/// listing of the organization, and `-Identity` would cost a request per device).
#[derive(Debug, Clone)]
pub struct GetMobileDeviceStatistics {
    pub mailbox: String,
}

impl Cmdlet for GetMobileDeviceStatistics {
    const WRITE: bool = false;
    type Output = MobileDeviceStatistics;
    fn name(&self) -> &str {
        "Get-MobileDeviceStatistics"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(
            Parameters::new()
                .text("Mailbox", self.mailbox.clone())
                .switch("ActiveSync"),
        )
    }
    fn properties(&self) -> Option<&'static [&'static str]> {
        properties_of::<MobileDeviceStatistics>()
    }
}

#[derive(Debug, Clone, Default)]
pub struct GetCasMailbox {
    pub result_size: ResultSize,
    pub identity: Option<String>,
    pub filter: Option<String>,
}

impl Cmdlet for GetCasMailbox {
    const WRITE: bool = false;
    type Output = CasMailbox;
    fn name(&self) -> &str {
        "Get-CASMailbox"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(recipient_lookup(
            self.result_size,
            &self.identity,
            &self.filter,
        ))
    }
    fn properties(&self) -> Option<&'static [&'static str]> {
        properties_of::<CasMailbox>()
    }
}

/// The parameters of a recipient listing or lookup (`Get-CASMailbox`, `Get-Mailbox`).
fn recipient_lookup(
    result_size: ResultSize,
    identity: &Option<String>,
    filter: &Option<String>,
) -> Parameters {
    optional(
        optional(
            Parameters::new().with("ResultSize", result_size.value()),
            "Identity",
            identity.clone().map(ParamValue::Text),
        ),
        "Filter",
        filter.clone().map(ParamValue::Text),
    )
}

/// `Get-Mailbox`.
#[derive(Debug, Clone, Default)]
pub struct GetMailbox {
    pub result_size: ResultSize,
    pub identity: Option<String>,
    pub filter: Option<String>,
}

impl Cmdlet for GetMailbox {
    const WRITE: bool = false;
    type Output = Mailbox;
    fn name(&self) -> &str {
        "Get-Mailbox"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(recipient_lookup(
            self.result_size,
            &self.identity,
            &self.filter,
        ))
    }
    fn properties(&self) -> Option<&'static [&'static str]> {
        properties_of::<Mailbox>()
    }
}

/// `Set-CASMailbox -Identity X -ActiveSyncAllowedDeviceIDs @{…} -ActiveSyncBlockedDeviceIDs @{…}`.
#[derive(Debug, Clone)]
pub struct SetCasMailbox {
    pub identity: String,
    pub allowed: Option<HashTableEdit>,
    pub blocked: Option<HashTableEdit>,
}

impl Cmdlet for SetCasMailbox {
    const WRITE: bool = true;
    type Output = IgnoredAny;
    fn name(&self) -> &str {
        "Set-CASMailbox"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(optional(
            optional(
                Parameters::new().text("Identity", self.identity.clone()),
                "ActiveSyncAllowedDeviceIDs",
                self.allowed.as_ref().map(HashTableEdit::value),
            ),
            "ActiveSyncBlockedDeviceIDs",
            self.blocked.as_ref().map(HashTableEdit::value),
        ))
    }
}

/// `Clear-MobileDevice -Identity X [-AccountOnly] -Confirm:$false`: a remote wipe, issued only
/// by an administrator's confirmed action (never by a plan). Exchange marks the wipe pending
/// and the device carries it out at its next sync; `-AccountOnly` removes only the mail
/// account's data. Asking twice has the effect of asking once (one pending wipe), which is
/// what makes the client's retry of an unanswered attempt harmless.
#[derive(Debug, Clone)]
pub struct ClearMobileDevice {
    pub identity: String,
    pub account_only: bool,
}

impl Cmdlet for ClearMobileDevice {
    const WRITE: bool = true;
    type Output = IgnoredAny;
    fn name(&self) -> &str {
        "Clear-MobileDevice"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(
            Parameters::new()
                .text("Identity", self.identity.clone())
                .with_switch("AccountOnly", self.account_only)
                // The cmdlet asks "are you sure?" otherwise; the connector asked already.
                .bool("Confirm", false),
        )
    }
}

/// `Remove-MobileDevice -Identity X -Confirm:$false`: the partnership removal an
/// administrator asked for (a plan's removals are planned [`Command`]s).
#[derive(Debug, Clone)]
pub struct RemoveMobileDevice {
    pub identity: String,
}

impl Cmdlet for RemoveMobileDevice {
    const WRITE: bool = true;
    type Output = IgnoredAny;
    fn name(&self) -> &str {
        "Remove-MobileDevice"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(
            Parameters::new()
                .text("Identity", self.identity.clone())
                .bool("Confirm", false),
        )
    }
}

/// `Get-ActiveSyncOrganizationSettings`.
#[derive(Debug, Clone, Default)]
pub struct GetOrganizationSettings {}

impl Cmdlet for GetOrganizationSettings {
    const WRITE: bool = false;
    type Output = OrganizationSettings;
    fn name(&self) -> &str {
        "Get-ActiveSyncOrganizationSettings"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(Parameters::new())
    }
}

/// `Set-ActiveSyncOrganizationSettings -DefaultAccessLevel …`.
#[derive(Debug, Clone)]
pub struct SetOrganizationSettings {
    pub default_access_level: AccessLevel,
}

impl Cmdlet for SetOrganizationSettings {
    const WRITE: bool = true;
    type Output = IgnoredAny;
    fn name(&self) -> &str {
        "Set-ActiveSyncOrganizationSettings"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(Parameters::new().text(
            "DefaultAccessLevel",
            match self.default_access_level {
                AccessLevel::Allow => "Allow",
                AccessLevel::Block => "Block",
                AccessLevel::Quarantine => "Quarantine",
            },
        ))
    }
}

/// `Get-ActiveSyncDeviceAccessRule`: every rule of the organization.
#[derive(Debug, Clone, Default)]
pub struct GetDeviceAccessRule {}

impl Cmdlet for GetDeviceAccessRule {
    const WRITE: bool = false;
    type Output = DeviceAccessRule;
    fn name(&self) -> &str {
        "Get-ActiveSyncDeviceAccessRule"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(Parameters::new())
    }
}

/// `Get-ExchangeServer`.
#[derive(Debug, Clone, Default)]
pub struct GetExchangeServer {}

impl Cmdlet for GetExchangeServer {
    const WRITE: bool = false;
    type Output = ExchangeServer;
    fn name(&self) -> &str {
        "Get-ExchangeServer"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(Parameters::new())
    }
}

/// `Get-ClientAccessService`.
#[derive(Debug, Clone, Default)]
pub struct GetClientAccessService {}

impl Cmdlet for GetClientAccessService {
    const WRITE: bool = false;
    type Output = ClientAccessService;
    fn name(&self) -> &str {
        "Get-ClientAccessService"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(Parameters::new())
    }
}

/// `Get-Command -Name … -ErrorAction SilentlyContinue`: which of the named commands the
/// account's remote PowerShell session has, as its management roles decide (a command it lacks
/// is left out, not an error). Remote PowerShell only: Exchange Online's admin API has no
/// such cmdlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetCommand {
    pub names: Vec<String>,
}

impl Cmdlet for GetCommand {
    const WRITE: bool = false;
    type Output = CommandInfo;
    fn name(&self) -> &str {
        "Get-Command"
    }
    fn parameters(&self) -> Cow<'_, Parameters> {
        Cow::Owned(
            Parameters::new()
                .texts("Name", self.names.clone())
                .text("ErrorAction", "SilentlyContinue"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `CmdletInput.Parameters` JSON the REST transport sends for `cmdlet`.
    fn rest_json(cmdlet: &impl Cmdlet) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&super::super::rest::invoke_body(
            cmdlet.name(),
            &cmdlet.parameters(),
        ))
        .unwrap()["CmdletInput"]["Parameters"]
            .take()
    }

    #[test]
    fn parameters_serialize_as_exchange_expects() {
        let set = SetCasMailbox {
            identity: "alice".into(),
            allowed: Some(HashTableEdit::new(vec!["ID1".into()], vec![])),
            blocked: None,
        };
        assert_eq!(
            rest_json(&set),
            json!({"Identity":"alice","ActiveSyncAllowedDeviceIDs":
                {"@odata.type":"#Exchange.GenericHashTable","Add":["ID1"],"Remove":[]}})
        );
        assert_eq!(
            rest_json(&GetMobileDevice::default()),
            json!({"ResultSize":"Unlimited"})
        );
        let limited = GetCasMailbox {
            result_size: ResultSize::Limit(5),
            ..Default::default()
        };
        assert_eq!(rest_json(&limited), json!({"ResultSize":5}));
        assert_eq!(rest_json(&GetExchangeServer {}), json!({}));
        // Regression: the move to typed parameters sent `Get-Mailbox` with none, so a full
        // sync read 1000 mailboxes (Exchange's default result size) and a quick sync's
        // lookups by identity read those same 1000 each.
        assert_eq!(
            rest_json(&GetMailbox::default()),
            json!({"ResultSize":"Unlimited"})
        );
        let lookup = GetMailbox {
            identity: Some("alice".into()),
            filter: Some("RecipientTypeDetails -eq 'UserMailbox'".into()),
            ..Default::default()
        };
        assert_eq!(
            rest_json(&lookup),
            json!({"ResultSize":"Unlimited","Identity":"alice",
                "Filter":"RecipientTypeDetails -eq 'UserMailbox'"})
        );
    }

    #[test]
    fn admin_actions_serialize_with_their_switch_and_no_prompt() {
        let wipe = |account_only| ClearMobileDevice {
            identity: "alice\\ExchangeActiveSyncDevices\\EAS§X".into(),
            account_only,
        };
        assert_eq!(
            rest_json(&wipe(false)),
            json!({"Identity":"alice\\ExchangeActiveSyncDevices\\EAS§X","Confirm":false})
        );
        assert_eq!(
            rest_json(&wipe(true)),
            json!({"Identity":"alice\\ExchangeActiveSyncDevices\\EAS§X","AccountOnly":true,"Confirm":false})
        );
        assert_eq!(
            rest_json(&RemoveMobileDevice {
                identity: "D1".into()
            }),
            json!({"Identity":"D1","Confirm":false})
        );
    }

    /// The bodies as the typed parameters' serde derive wrote them before `Parameters`: same
    /// members, same order, same bytes.
    #[test]
    fn rest_bodies_are_byte_for_byte_the_serde_derived_ones() {
        let body = |c: &dyn Fn() -> Vec<u8>| String::from_utf8(c()).unwrap();
        let devices = GetMobileDevice {
            result_size: ResultSize::Unlimited,
            mailbox: Some("alice".into()),
            filter: Some("FirstSyncTime -gt '2025-01-01'".into()),
            active_sync: true,
        };
        assert_eq!(
            body(&|| super::super::rest::invoke_body(devices.name(), &devices.parameters())),
            r#"{"CmdletInput":{"CmdletName":"Get-MobileDevice","Parameters":{"ResultSize":"Unlimited","Mailbox":"alice","Filter":"FirstSyncTime -gt '2025-01-01'","ActiveSync":true}}}"#
        );
        let set = SetCasMailbox {
            identity: "alice".into(),
            allowed: Some(HashTableEdit::new(vec!["ID1".into()], vec![])),
            blocked: Some(HashTableEdit::new(vec![], vec!["ID2".into()])),
        };
        assert_eq!(
            body(&|| super::super::rest::invoke_body(set.name(), &set.parameters())),
            r##"{"CmdletInput":{"CmdletName":"Set-CASMailbox","Parameters":{"Identity":"alice","ActiveSyncAllowedDeviceIDs":{"@odata.type":"#Exchange.GenericHashTable","Add":["ID1"],"Remove":[]},"ActiveSyncBlockedDeviceIDs":{"@odata.type":"#Exchange.GenericHashTable","Add":[],"Remove":["ID2"]}}}}"##
        );
        let org = SetOrganizationSettings {
            default_access_level: AccessLevel::Quarantine,
        };
        assert_eq!(
            body(&|| super::super::rest::invoke_body(org.name(), &org.parameters())),
            r#"{"CmdletInput":{"CmdletName":"Set-ActiveSyncOrganizationSettings","Parameters":{"DefaultAccessLevel":"Quarantine"}}}"#
        );
    }
}
