//! `[[organization]]`: one Exchange organization and the Intune tenant (Graph) that manages its
//! devices, with its schedule, notice overrides and sync settings.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration::duration;
use super::schedule::time_of_day;
use super::url::check_service_url;
use super::{ExchangeConnection, NotifyOverrides, SecretSource, defaults};

/// One Exchange organization and the Intune tenant that manages its devices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    /// Unique name, used in logs, the store and the admin API.
    pub name: String,
    pub exchange: ExchangeConnection,
    pub graph: GraphConnection,
    /// This organization's sender, admin copies and remediation links, where they differ from
    /// `[notify]`.
    #[serde(default)]
    pub notify: NotifyOverrides,
    /// Time between scheduled quick syncs; manual triggers come on top.
    #[serde(default = "defaults::quick_interval", deserialize_with = "duration")]
    pub quick_interval: Duration,
    /// Time between scheduled full syncs.
    #[serde(default = "defaults::full_interval", deserialize_with = "duration")]
    pub full_interval: Duration,
    /// `"HH:MM"` (UTC): a daily full sync at that time instead of every `full_interval`
    /// (seconds after midnight once read).
    #[serde(default, deserialize_with = "time_of_day")]
    pub full_at: Option<u32>,
    /// `[organization.sync]`: the blast-radius guard, the org default, UPN overrides,
    /// partnership removal and the policy's scope groups; see [`SyncSettings`].
    #[serde(default)]
    pub sync: crate::model::SyncSettings,
    /// `[organization.policy]`: this organization's own policy plugin and settings; `None`:
    /// the `[sync]` policy decides.
    pub policy: Option<super::OrgPolicy>,
}

/// Where and how to reach Microsoft Graph (Intune, groups) and its token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConnection {
    /// Graph base URL; requests go to `{graph_url}/v1.0/…`.
    #[serde(default = "defaults::graph_url")]
    pub graph_url: String,
    /// Token endpoint base URL; tokens come from `{login_url}/{tenant}/oauth2/v2.0/token`.
    #[serde(default = "defaults::login_url")]
    pub login_url: String,
    /// Entra tenant: GUID or initial domain.
    pub tenant: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    pub client_secret: SecretSource,
    /// Client-credentials scope for Graph.
    #[serde(default = "defaults::graph_scope")]
    pub scope: String,
    /// Graph requests the connector allows itself per 20 seconds (at most Intune's 2000).
    #[serde(default = "defaults::graph_request_budget")]
    pub request_budget: u32,
}

impl Organization {
    /// Checks the `i`th organization; `names` holds the names seen so far (lower-cased),
    /// `insecure` is `network.allow_insecure_http`.
    pub(super) fn validate(
        &self,
        i: usize,
        names: &mut HashMap<String, usize>,
        insecure: bool,
    ) -> Result<(), (String, String)> {
        let at = |field: &str| format!("organization[{i}].{field}");
        if self.name.trim().is_empty() {
            return Err((at("name"), "must not be empty".into()));
        }
        if let Some(first) = names.insert(self.name.to_lowercase(), i) {
            return Err((
                at("name"),
                format!("`{}` is also the name of organization[{first}]", self.name),
            ));
        }
        self.exchange.validate(at, insecure)?;
        self.graph.validate(at, insecure)?;
        self.validate_schedule(at)?;
        self.sync
            .validate()
            .map_err(|(field, message)| (at(&format!("sync.{field}")), message))?;
        let percent = self.sync.max_new_restrictions.percent;
        // NaN and infinity parse as TOML floats; either would switch the guard off.
        if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
            return Err((
                at("sync.max_new_restrictions.percent"),
                format!("{percent} is not a share of the devices: write 0 to 100"),
            ));
        }
        Ok(())
    }
}

impl GraphConnection {
    /// Checks this organization's Graph settings; `at` names its fields.
    fn validate(
        &self,
        at: impl Fn(&str) -> String,
        insecure: bool,
    ) -> Result<(), (String, String)> {
        check_service_url(&self.graph_url, insecure).map_err(|m| (at("graph.graph_url"), m))?;
        check_service_url(&self.login_url, insecure).map_err(|m| (at("graph.login_url"), m))?;
        if !(1..=defaults::GRAPH_APP_LIMIT).contains(&self.request_budget) {
            return Err((
                at("graph.request_budget"),
                format!(
                    "must be between 1 and {} (Intune's limit per app and 20 seconds)",
                    defaults::GRAPH_APP_LIMIT
                ),
            ));
        }
        for (field, value) in [
            ("graph.tenant", &self.tenant),
            ("graph.client_id", &self.client_id),
        ] {
            if value.trim().is_empty() {
                return Err((at(field), "must not be empty".into()));
            }
        }
        if !self.scope.ends_with("/.default") {
            return Err((
                at("graph.scope"),
                format!(
                    "`{}` is not a client-credentials scope (it must end in /.default)",
                    self.scope
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{FULL, parse, place};
    use crate::config::{ExchangeAuth, defaults};

    /// Regression (hostile run, hole 10): −5, NaN, 101 and inf were accepted as the guard's
    /// share (inf switches the guard off).
    #[test]
    fn a_guard_share_outside_0_to_100_is_refused_with_its_line() {
        for bad in ["-5.0", "nan", "101.0", "inf"] {
            let text = format!(
                "{FULL}\n[organization.sync]\nmax_new_restrictions = {{ percent = {bad}, floor = 10 }}\n"
            );
            let (line, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(
                field, "organization[1].sync.max_new_restrictions.percent",
                "{bad}"
            );
            let written = text.lines().position(|l| l.starts_with("max_new")).unwrap() + 1;
            assert_eq!(line, written, "{bad}");
            assert!(message.contains("0 to 100"), "{bad}: {message}");
        }
        for good in ["0.0", "12.5", "100.0"] {
            let text = format!(
                "{FULL}\n[organization.sync]\nmax_new_restrictions = {{ percent = {good}, floor = 10 }}\n"
            );
            parse(&text).unwrap();
        }
    }

    #[test]
    fn parses_and_applies_defaults() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.organizations.len(), 2);
        let contoso = &c.organizations[0];
        assert_eq!(contoso.exchange.cas_urls[0], "https://cas01.contoso.com");
        assert_eq!(
            contoso.exchange.auth,
            ExchangeAuth::ClientCredentials {
                scope: defaults::EXCHANGE_SCOPE.into()
            }
        );
        assert_eq!(contoso.graph.graph_url, defaults::GRAPH_URL);
        assert_eq!(contoso.graph.login_url, defaults::LOGIN_URL);
        assert_eq!(contoso.graph.scope, defaults::GRAPH_SCOPE);
        let fabrikam = &c.organizations[1];
        assert_eq!(
            fabrikam.exchange.auth,
            ExchangeAuth::Bearer {
                token: SecretSource::Env("PATH".into())
            }
        );
        // Relative secret files are relative to the configuration's directory.
        assert_eq!(
            fabrikam.graph.client_secret,
            SecretSource::File("/etc/easgate/fabrikam.secret".into())
        );
    }
}
