//! `[admin]`: the admin API, the status page and `/metrics`, and where they may listen.

use serde::Deserialize;

use super::SecretSource;
use super::defaults;

/// `[admin]`: the admin API, the status page and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port` to listen on; loopback by default (see [`defaults::ADMIN_LISTEN`]).
    #[serde(default = "defaults::admin_listen")]
    pub listen: std::net::SocketAddr,
    /// The bearer token every call but `/healthz` must carry.
    pub token: SecretSource,
    /// Allows `listen` off loopback. The token and device data then cross the network in
    /// clear unless a TLS proxy sits in front, so this takes an explicit yes.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Admin {
    /// A listener off loopback takes an explicit `allow_remote`.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if !self.listen.ip().is_loopback() && !self.allow_remote {
            return Err((
                "admin.listen".into(),
                format!(
                    "{} is not a loopback address: the admin token and device data would cross \
                     the network in clear; put a TLS proxy in front and set \
                     `allow_remote = true` in [admin] to listen there",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{FULL, parse, place};

    #[test]
    fn a_remote_admin_listener_takes_an_explicit_allow_remote() {
        for listen in ["0.0.0.0:8470", "192.0.2.7:8470", "[::]:8470"] {
            let text = format!("{FULL}\n[admin]\nlisten = \"{listen}\"\ntoken = \"t\"\n");
            let err = parse(&text).unwrap_err();
            let shown = err.to_string();
            let (line, _, field, message) = place(err);
            assert_eq!(field, "admin.listen", "{listen}");
            assert_eq!(
                text.lines().nth(line - 1).unwrap(),
                format!("listen = \"{listen}\"")
            );
            assert!(message.contains("allow_remote = true"), "{message}");
            assert!(shown.starts_with("/etc/easgate/easgate.toml:"), "{shown}");
            let allowed = text.replace("token = \"t\"", "token = \"t\"\nallow_remote = true");
            assert!(parse(&allowed).unwrap().admin.unwrap().allow_remote);
        }
        let loopback = format!("{FULL}\n[admin]\nlisten = \"[::1]:1\"\ntoken = \"t\"\n");
        assert!(!parse(&loopback).unwrap().admin.unwrap().allow_remote);
    }
}
