//! What the Exchange and Graph clients share: the HTTP client (rustls with verification always
//! on, proxy, timeouts), the plain-HTTP rule, reading JSON answers into typed values with the
//! failing field named, OAuth2 client-credentials tokens ([`token`]), and jittered backoff.
//!
//! Secrets (client secret, tokens, proxy password) live in [`Secret`]s and are sent from here;
//! nothing in this module puts them in an error or a log line.

pub mod record;
pub mod token;

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::config::{self, Network, Secret, SecretError};

/// How every outgoing connection is made, resolved from [`Network`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub proxy: Option<ProxySettings>,
    pub allow_insecure_http: bool,
    /// Certificate authorities trusted besides the webpki roots (`network.ca_file`).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{field}: {source}")]
    Secret {
        field: String,
        #[source]
        source: SecretError,
    },
    #[error("{field}: {message}")]
    Url { field: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// A setting this client cannot act on (e.g. a PowerShell sign-in given to the REST client).
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
}

impl HttpSettings {
    /// Resolves the proxy password now, as the connector starts.
    pub fn from_config(net: &Network) -> Result<Self, SetupError> {
        let proxy = match &net.proxy {
            None => None,
            Some(p) => Some(ProxySettings {
                url: p.url.clone(),
                username: p.username.clone(),
                password: p
                    .password
                    .as_ref()
                    .map(|s| s.resolve())
                    .transpose()
                    .map_err(|source| SetupError::Secret {
                        field: "network.proxy.password".into(),
                        source,
                    })?,
            }),
        };
        let extra_roots = match &net.ca_file {
            None => Vec::new(),
            Some(path) => config::read_ca_file(path).map_err(|message| SetupError::Url {
                field: "network.ca_file".into(),
                message,
            })?,
        };
        Ok(HttpSettings {
            extra_roots,
            connect_timeout: net.connect_timeout,
            request_timeout: net.request_timeout,
            proxy,
            allow_insecure_http: net.allow_insecure_http,
        })
    }

    /// The HTTP client both services are called with.
    pub fn client(&self) -> Result<reqwest::Client, SetupError> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(false)
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            // A failed CAS must not be hidden behind a redirect to somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64);
        // Added to the webpki roots reqwest's rustls already trusts, not instead of them.
        for der in &self.extra_roots {
            let cert = reqwest::Certificate::from_der(der).map_err(SetupError::Http)?;
            b = b.add_root_certificate(cert);
        }
        b = match &self.proxy {
            // Only the configured proxy: an HTTPS_PROXY in the daemon's environment must not
            // silently reroute tokens.
            None => b.no_proxy(),
            Some(p) => {
                let mut proxy = reqwest::Proxy::all(&p.url).map_err(|_| SetupError::Url {
                    field: "network.proxy.url".into(),
                    message: format!("`{}` is not a proxy URL", p.url),
                })?;
                if let Some(user) = &p.username {
                    let password = p.password.as_ref().map_or("", |s| s.expose());
                    proxy = proxy.basic_auth(user, password);
                }
                b.proxy(proxy)
            }
        };
        b.build().map_err(|e| SetupError::Http(e.without_url()))
    }

    /// The TLS client settings of connections made outside reqwest (remote PowerShell's
    /// authenticated ones): the webpki roots plus [`extra_roots`](Self::extra_roots), verified
    /// the same way reqwest does.
    pub fn tls_config(&self) -> std::sync::Arc<tokio_rustls::rustls::ClientConfig> {
        let mut roots = tokio_rustls::rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Each was checked when the configuration was read.
        let (_added, _ignored) = roots.add_parsable_certificates(self.extra_roots.iter().cloned());
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        std::sync::Arc::new(tls)
    }

    /// Applies the plain-HTTP rule to a URL met at run time (a discovered CAS, a next link).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        if url.starts_with("https://") {
            return Ok(());
        }
        if !url.starts_with("http://") {
            return Err(format!("`{url}` is not an http(s) URL"));
        }
        if self.allow_insecure_http || config::is_loopback_url(url) {
            Ok(())
        } else {
            Err(format!(
                "`{url}` is plain HTTP to a host other than loopback (network.allow_insecure_http is off)"
            ))
        }
    }
}

/// Where a JSON answer did not fit: the path of the field (`value[3].DeviceId`, `.` for the
/// document) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadField {
    pub field: String,
    pub problem: String,
}

/// Decodes `bytes` as `T`, naming the field that failed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BadField> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BadField {
            field: ".".into(),
            problem: "the body is empty".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| BadField {
        field: e.path().to_string(),
        problem: e.inner().to_string(),
    })?;
    de.end().map_err(|e| BadField {
        field: ".".into(),
        problem: e.to_string(),
    })?;
    Ok(value)
}

/// Reads an enum from its name only (`deserialize_with`): a number where a name belongs is then
/// reported as the wrong type, not as serde_json's bare "expected value".
pub fn string_enum<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::de::IntoDeserializer;
    let name = String::deserialize(d)?;
    T::deserialize(name.into_deserializer())
}

/// Checks that a successful answer says it is JSON; an HTML page from a proxy or a sign-in
/// portal must be reported as such, not as a JSON syntax error.
pub fn expect_json(headers: &reqwest::header::HeaderMap) -> Result<(), BadField> {
    let ct = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(BadField {
            field: "Content-Type".into(),
            problem: if ct.is_empty() {
                "no Content-Type; expected application/json".into()
            } else {
                format!("`{ct}`; expected application/json")
            },
        })
    }
}

/// `Retry-After` in seconds (the services send whole seconds; an HTTP date is not honoured and
/// falls back to backoff).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Exponential backoff with "equal jitter": half of `base · 2^attempt` (capped at `cap`) fixed,
/// the other half random, so that clients throttled together don't come back together.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The wait before retrying a throttled request: the server's `Retry-After` when given (plus up
/// to a quarter of it at random, at most a second, to spread the retries), otherwise backoff.
pub fn throttle_delay(retry_after: Option<Duration>, attempt: u32) -> Duration {
    match retry_after {
        Some(d) => d + (d / 4).min(Duration::from_secs(1)).mul_f64(fastrand::f64()),
        None => backoff(attempt, Duration::from_millis(500), Duration::from_secs(30)),
    }
}

/// The first line of an error text, shortened: service messages can be long and are quoted
/// into our errors verbatim otherwise.
pub fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() > 300 {
        let cut: String = line.chars().take(300).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// A transport error in words, without the URL (the caller names the CAS).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the connection failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_names_the_field() {
        #[derive(serde::Deserialize, Debug)]
        struct Page {
            #[allow(dead_code)]
            value: Vec<Item>,
        }
        #[derive(serde::Deserialize, Debug)]
        struct Item {
            #[allow(dead_code)]
            #[serde(rename = "DeviceId")]
            id: String,
        }
        let e = decode::<Page>(br#"{"value":[{"DeviceId":"a"},{"DeviceId":5}]}"#).unwrap_err();
        assert_eq!(e.field, "value[1].DeviceId");
        assert!(e.problem.contains("invalid type"), "{}", e.problem);
        let e = decode::<Page>(br#"{"value":[{"x":1}]}"#).unwrap_err();
        assert_eq!(e.field, "value[0]");
        assert!(e.problem.contains("missing field `DeviceId`"));
        assert_eq!(
            decode::<Page>(b"  ").unwrap_err().problem,
            "the body is empty"
        );
        assert!(decode::<Page>(br#"{"value":[{"DeviceId":"a"}"#).is_err());
        assert!(decode::<Page>(br#"{"value":[]} x"#).is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for attempt in 0..30 {
            let exp = (base * 2u32.pow(attempt.min(20))).min(cap);
            let d = backoff(attempt, base, cap);
            assert!(d >= exp / 2 && d <= exp, "{attempt}: {d:?}");
        }
        let d = throttle_delay(Some(Duration::from_secs(2)), 0);
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2500));
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let mut s = HttpSettings::from_config(&Network::default()).unwrap();
        assert!(s.check_url("https://cas.contoso.com").is_ok());
        assert!(s.check_url("http://127.0.0.1:9").is_ok());
        assert!(s.check_url("http://cas.contoso.com").is_err());
        assert!(s.check_url("ftp://cas.contoso.com").is_err());
        s.allow_insecure_http = true;
        assert!(s.check_url("http://cas.contoso.com").is_ok());
    }
}
