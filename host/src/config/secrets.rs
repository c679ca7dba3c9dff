//! Secrets: where they come from (inline, environment, file), their redacted wrapper, and the
//! check that every one the configuration names can be read.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::{Config, ConfigError, Notify, Proxy, Smtp};

/// A secret value; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration (a plain string).
    Inline(Secret),
    /// `{ env = "NAME" }`: the environment variable `NAME`.
    Env(String),
    /// `{ file = "path" }`: the file's contents without trailing line breaks. Relative paths are
    /// made absolute against the configuration file's directory when it is loaded.
    File(PathBuf),
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{0}` is not set (or not valid Unicode)")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret from {0} is empty")]
    Empty(String),
    /// A Kerberos keytab that is unreadable, damaged, or holds no usable key for the account.
    #[error(transparent)]
    Keytab(#[from] crate::exchange::psrp::keytab::KeytabError),
}

impl SecretSource {
    /// Reads the secret now (environment and files can change between runs, so this is done
    /// when the connector starts, not when the configuration is parsed).
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let (value, origin) = match self {
            SecretSource::Inline(s) => (s.expose().to_owned(), "the configuration".to_owned()),
            SecretSource::Env(name) => (
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?,
                format!("environment variable `{name}`"),
            ),
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                (
                    text.trim_end_matches(['\r', '\n']).to_owned(),
                    path.display().to_string(),
                )
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(Secret(value))
    }
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SourceVisitor;

        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = SecretSource;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a string, { env = "NAME" } or { file = "path" }"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Inline(Secret(v.to_owned())))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
                let mut source = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    let next = match key.as_str() {
                        "env" => SecretSource::Env(value),
                        "file" => SecretSource::File(PathBuf::from(value)),
                        other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                    };
                    if source.replace(next).is_some() {
                        return Err(de::Error::custom(
                            "a secret comes from one place: give `env` or `file`, not both",
                        ));
                    }
                }
                source.ok_or_else(|| {
                    de::Error::custom(r#"expected { env = "NAME" } or { file = "path" }"#)
                })
            }
        }

        d.deserialize_any(SourceVisitor)
    }
}

impl Config {
    /// Resolves every secret now, so a missing one stops start-up with the field named.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        if let Some(Proxy {
            password: Some(p), ..
        }) = &self.network.proxy
        {
            p.resolve().map_err(|source| ConfigError::Secret {
                field: "network.proxy.password".into(),
                source,
            })?;
        }
        if let Some(admin) = &self.admin {
            admin
                .token
                .resolve()
                .map_err(|source| ConfigError::Secret {
                    field: "admin.token".into(),
                    source,
                })?;
        }
        if let Some(Notify {
            smtp: Smtp {
                password: Some(p), ..
            },
            ..
        }) = &self.notify
        {
            p.resolve().map_err(|source| ConfigError::Secret {
                field: "notify.smtp.password".into(),
                source,
            })?;
        }
        for (i, org) in self.organizations.iter().enumerate() {
            let check = |field: &str, s: &SecretSource| {
                s.resolve().map(drop).map_err(|source| ConfigError::Secret {
                    field: format!("organization[{i}].{field}"),
                    source,
                })
            };
            check("graph.client_secret", &org.graph.client_secret)?;
            if let Some((key, secret)) = org.exchange.auth.secret() {
                check(&format!("exchange.auth.{key}"), secret)?;
            }
            if let Some((path, account, realm)) = org.exchange.auth.keytab() {
                crate::exchange::psrp::keytab::load(path, &account, &realm).map_err(|e| {
                    ConfigError::Secret {
                        field: format!("organization[{i}].exchange.auth.keytab"),
                        source: e.into(),
                    }
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{FULL, parse};

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let c = parse(FULL).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("inline-secret-value"), "{debug}");
        assert!(debug.contains("[redacted]"));
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secrets_resolve_from_inline_env_and_file() {
        assert_eq!(
            SecretSource::Inline(Secret::new("x"))
                .resolve()
                .unwrap()
                .expose(),
            "x"
        );
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            SecretSource::Env("PATH".into()).resolve().unwrap().expose(),
            path
        );
        let missing = SecretSource::Env("EASGATE_TEST_SURELY_UNSET_4711".into()).resolve();
        assert!(matches!(missing, Err(SecretError::EnvMissing(_))));

        let dir = std::env::temp_dir().join(format!("easgate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.secret");
        std::fs::write(&file, "from-a-file\n").unwrap();
        assert_eq!(
            SecretSource::File(file.clone()).resolve().unwrap().expose(),
            "from-a-file"
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            SecretSource::File(file).resolve(),
            Err(SecretError::Empty(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();

        // check_secrets names the field that failed.
        let c = parse(FULL).unwrap();
        let e = c.check_secrets().unwrap_err().to_string();
        assert!(e.starts_with("organization[1].graph.client_secret: cannot read secret file /etc/easgate/fabrikam.secret"), "{e}");
    }
}
