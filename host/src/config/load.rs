//! Reading the file: parse, make paths absolute, validate, check secrets, and name the file,
//! line, column and key of whatever is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Config, ExchangeAuth, Notify, Proxy, SecretError, SecretSource, Smtp};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{}:{line}:{column}: {field}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        /// Dotted path of the offending key, e.g. `organization[0].graph.client_id`.
        field: String,
        message: String,
    },
    /// The file parses but a value is not acceptable.
    #[error("{}:{line}:{column}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{field}: {source}")]
    Secret {
        field: String,
        #[source]
        source: SecretError,
    },
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::from_toml(&text, path)?;
        // A missing secret is a mistake in this file: said at load, where it is, rather than
        // by the first sync that needs it.
        config.check_secrets().map_err(|err| match err {
            ConfigError::Secret { field, source } => {
                let (line, column) = locate_field(&text, &field);
                ConfigError::Invalid {
                    path: path.to_owned(),
                    line,
                    column,
                    field,
                    message: source.to_string(),
                }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates `text`, read from `path` (named in errors; relative secret files
    /// are taken relative to its directory).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, column) = line_column(text, span.start);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                field: field_at(text, span.start, e.message()),
                message: e.message().trim().to_owned(),
            }
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        config.absolutize(dir);
        config.validate().map_err(|(field, message)| {
            let (line, column) = locate_field(text, &field);
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                field,
                message,
            }
        })?;
        Ok(config)
    }

    /// Makes relative secret file paths relative to `dir`. Sections with secrets add theirs here.
    fn absolutize(&mut self, dir: &Path) {
        if self.sync.data_dir.is_relative() {
            self.sync.data_dir = dir.join(&self.sync.data_dir);
        }
        if let Some(p) = &mut self.sync.plugin_dir
            && p.is_relative()
        {
            *p = dir.join(&*p);
        }
        if let Some(p) = &mut self.network.ca_file
            && p.is_relative()
        {
            *p = dir.join(&*p);
        }
        let fix = |s: &mut SecretSource| {
            if let SecretSource::File(p) = s
                && p.is_relative()
            {
                *p = dir.join(&*p);
            }
        };
        if let Some(Proxy {
            password: Some(p), ..
        }) = &mut self.network.proxy
        {
            fix(p);
        }
        if let Some(admin) = &mut self.admin {
            fix(&mut admin.token);
        }
        if let Some(Notify {
            smtp: Smtp {
                password: Some(p), ..
            },
            ..
        }) = &mut self.notify
        {
            fix(p);
        }
        for org in &mut self.organizations {
            if let Some(policy) = &mut org.policy {
                policy.absolutize(dir);
            }
            fix(&mut org.graph.client_secret);
            if let Some((_, secret)) = org.exchange.auth.secret_mut() {
                fix(secret);
            }
            if let ExchangeAuth::Kerberos {
                keytab: Some(p), ..
            } = &mut org.exchange.auth
                && p.is_relative()
            {
                *p = dir.join(&*p);
            }
        }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The key of a `key = value` line, if the line is one.
fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('[') || t.starts_with('#') {
        return None;
    }
    let (key, _) = t.split_once('=')?;
    Some(key.trim().trim_matches('"'))
}

/// Walks the lines up to (and including) line index `upto`, returning the dotted path of the
/// table they are in, with array-of-tables indexes (`organization[1].graph`).
fn table_path(lines: &[&str], upto: usize) -> String {
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut current = String::new();
    for line in lines.iter().take(upto + 1) {
        let t = line.trim();
        let (header, is_array) = if let Some(h) = t.strip_prefix("[[") {
            (h.split("]]").next().unwrap_or(""), true)
        } else if let Some(h) = t.strip_prefix('[') {
            (h.split(']').next().unwrap_or(""), false)
        } else {
            continue;
        };
        let header = header.trim();
        if is_array {
            *arrays.entry(header.to_owned()).or_insert(0) += 1;
        }
        let mut path = String::new();
        let mut prefix = String::new();
        for segment in header.split('.').map(str::trim) {
            if !prefix.is_empty() {
                prefix.push('.');
                path.push('.');
            }
            prefix.push_str(segment);
            path.push_str(segment);
            if let Some(n) = arrays.get(&prefix) {
                path.push_str(&format!("[{}]", n - 1));
            }
        }
        current = path;
    }
    current
}

fn join(table: &str, key: &str) -> String {
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => table.to_owned(),
        _ => format!("{table}.{key}"),
    }
}

/// Names the field a parse error at byte `offset` is about.
fn field_at(text: &str, offset: usize, message: &str) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let (line, _) = line_column(text, offset);
    let index = line - 1;
    let table = table_path(&lines, index);
    // serde names the field itself for missing and unknown fields; the span is the table.
    for lead in ["missing field `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(lead)
            && let Some((name, _)) = rest.split_once('`')
        {
            // An unknown key's span is the key itself; a missing one's is the table holding it
            // (a header line, or an inline table after its key).
            return match lines.get(index).and_then(|l| key_of(l)) {
                Some(key) if key == name => join(&table, key),
                Some(key) => join(&join(&table, key), name),
                None => join(&table, name),
            };
        }
    }
    let key = lines.get(index).and_then(|l| key_of(l)).unwrap_or("");
    join(&table, key)
}

/// Finds the line and column where `field` (as `validate` names it) is written.
/// Where `field` is written in `text` (line and column): a key inside an inline table
/// (`proxy = { url = … }`) is found at its parent's key; the file's start if nowhere.
fn locate_field(text: &str, field: &str) -> (usize, usize) {
    let mut at = Some(field);
    let mut place = None;
    while let (None, Some(f)) = (place, at) {
        place = locate(text, f);
        at = f.rsplit_once('.').map(|(parent, _)| parent);
    }
    place.unwrap_or((1, 1))
}

fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    // `organization[0].exchange.cas_urls[1]` → table `organization[0].exchange`, key `cas_urls`.
    let field = field
        .strip_suffix(']')
        .map_or(field, |f| f.rsplit_once('[').map_or(f, |(head, _)| head));
    let (table, key) = field.rsplit_once('.').unwrap_or(("", field));
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let here = table_path(&lines, i);
        let matches_key = key_of(line) == Some(key) && here == table;
        // A missing key is reported at its table's header.
        let is_table = line.trim_start().starts_with('[') && here == field;
        if matches_key || is_table {
            return Some((i + 1, line.len() - line.trim_start().len() + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExchangeAuth;
    use crate::config::testing::{FULL, parse, place};

    /// Regression (hostile run, hole 10): a missing secret failed only at sync time, with exit
    /// 2 and the organization named three times. It is now a load error naming file, line and
    /// key, its cause said once.
    #[test]
    fn a_missing_secret_is_a_load_error_naming_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("easgate.toml");
        std::fs::write(dir.path().join("fabrikam.secret"), "s3cret").unwrap();
        let config = FULL.replace(
            "{ env = \"PATH\" }",
            "{ env = \"EASGATE_TEST_UNSET_4711\" }",
        );
        std::fs::write(&path, &config).unwrap();
        let err = Config::load(&path).unwrap_err();
        let text = format!("{err:#}");
        let written = config
            .lines()
            .position(|l| l.contains("UNSET_4711"))
            .unwrap()
            + 1;
        assert!(
            text.starts_with(&format!("{}:{written}:", path.display())),
            "file and line: {text}"
        );
        assert!(
            text.contains("organization[1].exchange.auth.token"),
            "{text}"
        );
        assert_eq!(text.matches("EASGATE_TEST_UNSET_4711").count(), 1, "{text}");
        assert_eq!(text.matches("fabrikam").count(), 0, "{text}");
    }

    /// A keytab is checked where a password file is: at load, its problem named with the file,
    /// the line and `exchange.auth.keytab` (the file written relative to the configuration).
    #[test]
    fn a_keytab_without_a_usable_key_is_a_load_error_naming_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("easgate.toml");
        let keytab = dir.path().join("svc.keytab");
        std::fs::write(
            &keytab,
            include_bytes!("../exchange/psrp/fixtures/contoso.keytab"),
        )
        .unwrap();
        let config = |user: &str| {
            format!(
                "[[organization]]\nname = \"contoso\"\n\n[organization.exchange]\n\
                 transport = \"powershell\"\n\
                 cas_urls = [\"http://cas01.contoso.com/PowerShell/\"]\n\
                 auth = {{ kind = \"kerberos\", username = \"{user}\", keytab = \"svc.keytab\" }}\n\n\
                 [organization.graph]\ntenant = \"contoso.onmicrosoft.com\"\n\
                 client_id = \"3b1a6f2e-0000-4000-8000-000000000001\"\n\
                 client_secret = \"s\"\n"
            )
        };
        std::fs::write(&path, config("svc-easgate@contoso.com")).unwrap();
        Config::load(&path).expect("the account's AES key is in the keytab");

        let kt = keytab.display().to_string();
        for (user, words) in [
            (
                "svc-other@contoso.com",
                vec![
                    kt.as_str(),
                    "no key for `svc-other@CONTOSO.COM`",
                    "legacy@CONTOSO.COM, svc-easgate@CONTOSO.COM",
                ],
            ),
            (
                "legacy@contoso.com",
                vec![kt.as_str(), "only rc4-hmac keys", "AES256-SHA1"],
            ),
        ] {
            std::fs::write(&path, config(user)).unwrap();
            let text = Config::load(&path).unwrap_err().to_string();
            assert!(
                text.starts_with(&format!(
                    "{}:7:1: organization[0].exchange.auth.keytab: ",
                    path.display()
                )),
                "{text}"
            );
            for w in words {
                assert!(text.contains(w), "{w:?} in {text}");
            }
        }
        std::fs::remove_file(&keytab).unwrap();
        std::fs::write(&path, config("svc-easgate@contoso.com")).unwrap();
        let text = Config::load(&path).unwrap_err().to_string();
        assert!(
            text.contains(&format!("auth.keytab: cannot read the keytab {kt}: ")),
            "{text}"
        );
    }

    #[test]
    fn parse_errors_name_file_line_column_and_field() {
        let typo = FULL.replace(
            "client_id = \"3b1a6f2e-0000-4000-8000-000000000002\"",
            "clientid = \"x\"",
        );
        let e = parse(&typo).unwrap_err();
        assert!(
            e.to_string().starts_with("/etc/easgate/easgate.toml:"),
            "{e}"
        );
        let (line, _, field, message) = place(e);
        assert_eq!(line, 26);
        assert_eq!(field, "organization[1].graph.clientid");
        assert!(message.contains("unknown field `clientid`"), "{message}");

        let wrong_type = FULL.replace("tenant_id = \"contoso.onmicrosoft.com\"", "tenant_id = 42");
        let (line, column, field, _) = place(parse(&wrong_type).unwrap_err());
        assert_eq!(
            (line, column, field.as_str()),
            (7, 13, "organization[0].exchange.tenant_id")
        );

        let missing = FULL.replace("client_secret = \"inline-secret-value\"\n", "");
        let (_, _, field, message) = place(parse(&missing).unwrap_err());
        assert_eq!(field, "organization[0].graph.client_secret");
        assert!(message.contains("missing field `client_secret`"));

        let bad_secret = FULL.replace("{ file = \"fabrikam.secret\" }", "{ path = \"x\" }");
        let (line, _, field, _) = place(parse(&bad_secret).unwrap_err());
        assert_eq!(
            (line, field.as_str()),
            (27, "organization[1].graph.client_secret.path")
        );

        let bad_auth = FULL.replace("kind = \"bearer\"", "kind = \"telepathy\"");
        let (line, _, field, _) = place(parse(&bad_auth).unwrap_err());
        assert_eq!(
            (line, field.as_str()),
            (20, "organization[1].exchange.auth")
        );

        let (line, column, _, _) = place(parse("[[organization]\n").unwrap_err());
        assert_eq!((line, column), (1, 16));
    }

    #[test]
    fn invalid_values_are_located_too() {
        let (_, _, field, _) = place(parse("").unwrap_err());
        assert_eq!(field, "organization");

        let dup = FULL.replace("name = \"fabrikam\"", "name = \"Contoso\"");
        let (line, _, field, message) = place(parse(&dup).unwrap_err());
        assert_eq!((line, field.as_str()), (15, "organization[1].name"));
        assert!(message.contains("organization[0]"));

        let empty = FULL.replace("cas_urls = [\"http://127.0.0.1:8080\"]", "cas_urls = []");
        let (line, _, field, _) = place(parse(&empty).unwrap_err());
        assert_eq!(
            (line, field.as_str()),
            (18, "organization[1].exchange.cas_urls")
        );

        let bad = FULL.replace(
            "\"https://cas02.contoso.com:8443\"",
            "\"cas02.contoso.com\"",
        );
        let (line, _, field, message) = place(parse(&bad).unwrap_err());
        assert_eq!(
            (line, field.as_str()),
            (6, "organization[0].exchange.cas_urls[1]")
        );
        assert!(message.contains("not an http:// or https:// URL"));

        let scope = FULL.replace(
            "client_secret = \"inline-secret-value\"",
            "client_secret = \"x\"\nscope = \"https://graph.microsoft.com/User.Read\"",
        );
        let (_, _, field, _) = place(parse(&scope).unwrap_err());
        assert_eq!(field, "organization[0].graph.scope");
    }

    #[test]
    fn the_labs_written_config_loads_and_points_at_the_lab() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let lab = easgate_lab::Lab::start(easgate_lab::LabOptions {
                devices: 10,
                ..Default::default()
            })
            .await
            .unwrap();
            let dir =
                std::env::temp_dir().join(format!("easgate-config-lab-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("lab.toml");
            lab.write_connector_config(&path).unwrap();
            let c = Config::load(&path).unwrap();
            c.check_secrets().unwrap();
            let org = &c.organizations[0];
            assert_eq!(org.exchange.cas_urls, lab.cas_urls());
            assert_eq!(org.exchange.tenant_id, lab.tenant_domain());
            assert_eq!(org.graph.graph_url, lab.graph_url());
            assert_eq!(org.graph.login_url, lab.login_url());
            assert_eq!(org.graph.tenant, lab.tenant_id());
            assert_eq!(org.graph.client_id, lab.client_id());
            assert_eq!(
                org.graph.client_secret.resolve().unwrap().expose(),
                lab.client_secret()
            );
            assert!(matches!(
                org.exchange.auth,
                ExchangeAuth::ClientCredentials { .. }
            ));

            // The other secret placements the lab can write parse as well.
            for source in [
                easgate_lab::SecretSource::Inline,
                easgate_lab::SecretSource::Env("LAB_SECRET".into()),
            ] {
                let text = lab.connector_config(&source);
                let c = Config::from_toml(&text, &path).unwrap();
                assert_eq!(c.organizations[0].graph.client_id, lab.client_id());
            }
            std::fs::remove_dir_all(&dir).unwrap();
            lab.shutdown().await;
        });
    }
}
