//! `[network]`: the proxy, the plain-HTTP rule, the timeouts and the private certificate
//! authorities of every outgoing connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use serde::Deserialize;

use super::duration::duration;
use super::url::{check_url, has_userinfo};
use super::{SecretSource, defaults};

/// `[network]`: settings of every outgoing connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// An HTTP(S) proxy for every request to Exchange, Graph and the token endpoint.
    pub proxy: Option<Proxy>,
    /// Allows plain `http://` to hosts other than loopback. Off: tokens and device data only
    /// travel over TLS (always verified) unless they stay on this machine.
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[serde(default = "defaults::connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Whole request, body included; a CAS that exceeds it counts as failed.
    #[serde(default = "defaults::request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// A PEM file of certificate authorities trusted besides the public (webpki) roots, for a
    /// CAS, a Graph gateway or a proxy whose certificate a private CA issued. Every HTTPS
    /// client uses it: Graph, REST, remote PowerShell.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            proxy: None,
            allow_insecure_http: false,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            request_timeout: defaults::REQUEST_TIMEOUT,
            ca_file: None,
        }
    }
}

/// A proxy; credentials go in their own keys, never in the URL (URLs end up in logs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// `http://host:port` (or `https://`).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
}

/// The certificates of a `ca_file`: each one PEM `CERTIFICATE` block, each a CA certificate
/// rustls can trust. Why not, naming the file, otherwise.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{shown}` is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "`{shown}` holds no certificate (a PEM file of -----BEGIN CERTIFICATE----- blocks)"
        ));
    }
    let mut store = tokio_rustls::rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "certificate {} of `{shown}` is not usable as a CA: {e}",
                i + 1
            )
        })?;
    }
    Ok(certs)
}

impl Network {
    /// Timeouts above zero; a proxy URL without credentials (they have their own keys); a
    /// `ca_file` that reads as certificates.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if let Some(path) = &self.ca_file {
            read_ca_file(path).map_err(|m| ("network.ca_file".to_owned(), m))?;
        }
        for (field, d) in [
            ("network.connect_timeout", self.connect_timeout),
            ("network.request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err((field.into(), "must be longer than 0".into()));
            }
        }
        if let Some(proxy) = &self.proxy {
            check_url(&proxy.url).map_err(|m| ("network.proxy.url".to_owned(), m))?;
            if has_userinfo(&proxy.url) {
                return Err((
                    "network.proxy.url".into(),
                    "put the proxy's credentials in `username` and `password`, not in the URL"
                        .into(),
                ));
            }
            if proxy.password.is_some() && proxy.username.is_none() {
                return Err((
                    "network.proxy.password".into(),
                    "a password needs a `username`".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults;
    use crate::config::testing::{FULL, parse, place};

    #[test]
    fn connection_settings_default_and_parse() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.network, Network::default());
        let x = &c.organizations[0].exchange;
        assert!(x.cas_failover);
        assert_eq!(x.parallel_commands, 1);
        assert_eq!(x.unavailable_timeout, defaults::UNAVAILABLE_TIMEOUT);
        assert_eq!(x.probe_interval, defaults::PROBE_INTERVAL);
        assert_eq!(c.organizations[0].graph.request_budget, 1500);

        let tuned = FULL
            .replace(
                "tenant_id = \"contoso.onmicrosoft.com\"",
                "tenant_id = \"contoso.onmicrosoft.com\"\ncas_failover = false\nparallel_commands = 16\nunavailable_timeout = \"1500ms\"\nprobe_interval = \"1m\"",
            )
            .replace(
                "client_secret = \"inline-secret-value\"",
                "client_secret = \"inline-secret-value\"\nrequest_budget = 200",
            )
            + "\n[network]\nallow_insecure_http = true\nconnect_timeout = \"3s\"\nrequest_timeout = \"1h\"\nproxy = { url = \"http://proxy.contoso.com:3128\", username = \"easgate\", password = \"proxy-pw-value\" }\n";
        let c = parse(&tuned).unwrap();
        let x = &c.organizations[0].exchange;
        assert!(!x.cas_failover);
        assert_eq!(x.parallel_commands, 16);
        assert_eq!(x.unavailable_timeout, Duration::from_millis(1500));
        assert_eq!(x.probe_interval, Duration::from_secs(60));
        assert_eq!(c.organizations[0].graph.request_budget, 200);
        assert!(c.network.allow_insecure_http);
        assert_eq!(c.network.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.network.request_timeout, Duration::from_secs(3600));
        let proxy = c.network.proxy.as_ref().unwrap();
        assert_eq!(proxy.username.as_deref(), Some("easgate"));
        assert!(!format!("{c:?}").contains("proxy-pw-value"));
    }

    #[test]
    fn connection_settings_are_checked() {
        let with_network = |net: &str| format!("{FULL}\n[network]\n{net}\n");
        let cases = [
            (
                FULL.replace(
                    "tenant_id = \"contoso.onmicrosoft.com\"",
                    "tenant_id = \"x\"\nparallel_commands = 0",
                ),
                "organization[0].exchange.parallel_commands",
                "between 1 and 64",
            ),
            (
                FULL.replace(
                    "tenant_id = \"contoso.onmicrosoft.com\"",
                    "tenant_id = \"x\"\nunavailable_timeout = \"soon\"",
                ),
                "organization[0].exchange.unavailable_timeout",
                "not a duration",
            ),
            (
                FULL.replace(
                    "client_secret = \"inline-secret-value\"",
                    "client_secret = \"s\"\nrequest_budget = 2500",
                ),
                "organization[0].graph.request_budget",
                "between 1 and 2000",
            ),
            (
                FULL.replace("https://cas01.contoso.com", "http://cas01.contoso.com"),
                "organization[0].exchange.cas_urls[0]",
                "plain HTTP",
            ),
            (
                FULL.replace(
                    "https://cas01.contoso.com",
                    "https://admin:pw@cas01.contoso.com",
                ),
                "organization[0].exchange.cas_urls[0]",
                "carries credentials",
            ),
            (
                with_network("proxy = { url = \"http://u:p@proxy:3128\" }"),
                "network.proxy.url",
                "not in the URL",
            ),
            (
                with_network("proxy = { url = \"http://proxy:3128\", password = \"x\" }"),
                "network.proxy.password",
                "needs a `username`",
            ),
            (
                with_network("request_timeout = \"0s\""),
                "network.request_timeout",
                "longer than 0",
            ),
            (
                with_network("ca_file = \"/nonexistent/easgate-corp-ca.pem\""),
                "network.ca_file",
                "cannot read `/nonexistent/easgate-corp-ca.pem`",
            ),
            (
                with_network("proxy_url = \"http://proxy:3128\""),
                "network.proxy_url",
                "unknown field",
            ),
        ];
        for (text, want_field, want_message) in cases {
            let (line, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(field, want_field, "{message}");
            assert!(message.contains(want_message), "{field}: {message}");
            assert!(line > 1, "{field} located at line {line}");
        }
        // A file that is there but holds no certificate, and one whose block is not one.
        let dir = tempfile::tempdir().unwrap();
        for (name, body, want) in [
            ("empty.pem", "just text\n", "holds no certificate"),
            (
                "bad.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "certificate 1 of",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            let text = with_network(&format!("ca_file = {:?}", path.display().to_string()));
            let (line, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(field, "network.ca_file", "{message}");
            assert!(
                message.contains(want) && message.contains(name),
                "{message}"
            );
            assert!(line > 1);
        }
        // Plain HTTP to a remote host is allowed when said so.
        let allowed = with_network("allow_insecure_http = true")
            .replace("https://cas01.contoso.com", "http://cas01.contoso.com");
        assert!(parse(&allowed).is_ok());
    }
}
