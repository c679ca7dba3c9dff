//! The connector configuration that points a connector at a lab (`easgate sim --write-config`).
//!
//! The schema is the host's (`easgate::config`); the lab cannot depend on the host, so it writes
//! the TOML text itself and the host's tests parse what it writes, which keeps the two in step.
//! The client secret goes to a file beside the config (mode 0600) that the config references,
//! the way an operator is told to do it, rather than inline.

use std::path::{Path, PathBuf};

use crate::control::LabInfo;
use crate::server::LabError;

/// Where the written config takes the client secret from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// In the config itself (discouraged; fine for a throwaway lab).
    Inline,
    /// From this file (relative paths are relative to the config file's directory).
    File(String),
    /// From this environment variable.
    Env(String),
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The config text for `info`, naming the organization `name`.
pub fn connector_config(info: &LabInfo, name: &str, secret: &SecretSource) -> String {
    let cas = info
        .cas_urls
        .iter()
        .map(|u| quote(u))
        .collect::<Vec<_>>()
        .join(", ");
    let secret = match secret {
        SecretSource::Inline => quote(&info.client_secret),
        SecretSource::File(f) => format!("{{ file = {} }}", quote(f)),
        SecretSource::Env(v) => format!("{{ env = {} }}", quote(v)),
    };
    format!(
        r#"# easgate connector configuration for the lab (written by `easgate sim --write-config`).
# Only the URLs and credentials differ from a configuration for the real services.
# The lab's SMTP sink for notices listens on {smtp}.

[[organization]]
name = {name}

[organization.exchange]
# Base URLs of the Client Access Servers; the first is the primary.
cas_urls = [{cas}]
# The {{tenantId}} of /adminapi/beta/{{tenantId}}/InvokeCommand (tenant GUID or initial domain).
tenant_id = {tenant_domain}
# Tokens from the Graph app registration below, with scope https://outlook.office365.com/.default.
auth = {{ kind = "client_credentials" }}

[organization.graph]
graph_url = {graph}
login_url = {login}
tenant = {tenant_id}
client_id = {client_id}
client_secret = {secret}
"#,
        smtp = info.smtp,
        name = quote(name),
        tenant_domain = quote(&info.tenant_domain),
        graph = quote(&info.graph_url),
        login = quote(&info.login_url),
        tenant_id = quote(&info.tenant_id),
        client_id = quote(&info.client_id),
    )
}

/// Which Exchange face the written config makes the connector use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExchangeApi {
    /// The Exchange Online admin API (`InvokeCommand`), with tokens from the login endpoint.
    #[default]
    Rest,
    /// On-premises remote PowerShell (`/PowerShell/`, WS-Management), Basic authentication.
    Powershell,
}

/// The config text for the remote PowerShell face: `password_file` holds the service account's
/// password (relative paths are relative to the config file's directory).
pub fn powershell_connector_config(
    info: &LabInfo,
    name: &str,
    secret: &SecretSource,
    password_file: &str,
) -> String {
    powershell_config(info, name, secret, password_file, None)
}

/// The realm a written configuration authenticates to with Kerberos (`easgate sim --kerberos`).
#[derive(Debug, Clone)]
pub struct KerberosRealm {
    /// The user principal's name in the realm (`svc-easgate`).
    pub username: String,
    /// `LAB.EASGATE.TEST`.
    pub realm: String,
    /// The KDC, `127.0.0.1:PORT`.
    pub kdc: String,
    /// A krb5.conf naming that KDC, for MIT tools (`KRB5_CONFIG`).
    pub krb5_conf: PathBuf,
    /// The user's password (written to the password file, never inline).
    pub password: String,
}

fn powershell_config(
    info: &LabInfo,
    name: &str,
    secret: &SecretSource,
    password_file: &str,
    kerberos: Option<&KerberosRealm>,
) -> String {
    let rest = connector_config(info, name, secret);
    let cas = info
        .powershell_urls
        .iter()
        .map(|u| quote(u))
        .collect::<Vec<_>>()
        .join(", ");
    let exchange = format!(
        r#"[organization.exchange]
# On-premises Exchange: remote PowerShell (WS-Management) on each Client Access Server; the
# first is the primary.
transport = "powershell"
cas_urls = [{cas}]
{auth}

"#,
        auth = match kerberos {
            None => format!(
                "auth = {{ kind = \"basic\", username = {}, password = {{ file = {} }} }}",
                quote(&info.powershell_user),
                quote(password_file)
            ),
            Some(k) => format!(
                "# The lab's test KDC; for MIT tools (kinit, klist): KRB5_CONFIG={}\n\
                 # The CAS URLs name 127.0.0.1; the face's service principal is HTTP/localhost.\n\
                 auth = {{ kind = \"kerberos\", username = {}, password = {{ file = {} }}, realm = {}, kdc = {}, spn = \"HTTP/localhost\" }}",
                k.krb5_conf.display(),
                quote(&k.username),
                quote(password_file),
                quote(&k.realm),
                quote(&k.kdc)
            ),
        },
    );
    // Replace the REST face's Exchange section, keep the rest (Graph).
    let start = rest
        .find("[organization.exchange]")
        .expect("the REST config has an Exchange section");
    let end = rest
        .find("[organization.graph]")
        .expect("the REST config has a Graph section");
    format!("{}{exchange}{}", &rest[..start], &rest[end..])
}

/// Writes the config to `path` and the secret to `path` with extension `secret`; returns the
/// secret's path.
pub(crate) fn write(info: &LabInfo, name: &str, path: &Path) -> Result<PathBuf, LabError> {
    let secret_path = path.with_extension("secret");
    let file_name = secret_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "easgate-lab.secret".to_owned());
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| LabError::Write { path, source }
    };
    write_private(&secret_path, info.client_secret.as_bytes()).map_err(err(&secret_path))?;
    let text = connector_config(info, name, &SecretSource::File(file_name));
    std::fs::write(path, text).map_err(err(path))?;
    Ok(secret_path)
}

/// Writes the remote PowerShell config to `path`, the service account's password to
/// `{path}.exchange-password` and the Graph client secret to `path` with extension `secret`
/// (each 0600); returns the password file's path.
pub(crate) fn write_powershell(
    info: &LabInfo,
    name: &str,
    path: &Path,
    kerberos: Option<&KerberosRealm>,
) -> Result<PathBuf, LabError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| LabError::Write { path, source }
    };
    let mut password_path = path.as_os_str().to_owned();
    password_path.push(".exchange-password");
    let password_path = PathBuf::from(password_path);
    let password_name = password_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let secret_path = path.with_extension("secret");
    let secret_name = secret_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let password = kerberos.map_or(info.powershell_password.as_str(), |k| &k.password);
    write_private(&password_path, password.as_bytes()).map_err(err(&password_path))?;
    write_private(&secret_path, info.client_secret.as_bytes()).map_err(err(&secret_path))?;
    let text = powershell_config(
        info,
        name,
        &SecretSource::File(secret_name),
        &password_name,
        kerberos,
    );
    std::fs::write(path, text).map_err(err(path))?;
    Ok(password_path)
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)?;
    // `mode` only applies when the file is created; tighten an existing one too.
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> LabInfo {
        LabInfo {
            organization: "Contoso".into(),
            cas_urls: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            graph_url: "http://127.0.0.1:3".into(),
            login_url: "http://127.0.0.1:3".into(),
            control_url: "http://127.0.0.1:4".into(),
            smtp: "127.0.0.1:5".into(),
            tenant_id: "t".into(),
            tenant_domain: "contoso.onmicrosoft.com".into(),
            client_id: "c".into(),
            client_secret: "s3cret".into(),
            exchange_token: "tok".into(),
            powershell_urls: vec![
                "http://127.0.0.1:1/PowerShell/".into(),
                "http://127.0.0.1:2/PowerShell/".into(),
            ],
            powershell_user: "svc-easgate@contoso.com".into(),
            powershell_password: "pw".into(),
            devices: 1,
            managed_devices: 0,
            mailboxes: 1,
        }
    }

    #[test]
    fn the_powershell_config_names_the_face_and_keeps_the_password_out() {
        let dir = std::env::temp_dir().join(format!("easgate-ps-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lab.toml");
        let pw = write_powershell(&info(), "contoso", &path, None).unwrap();
        assert_eq!(pw, dir.join("lab.toml.exchange-password"));
        assert_eq!(std::fs::read_to_string(&pw).unwrap(), "pw");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        let ex = &v["organization"][0]["exchange"];
        assert_eq!(ex["transport"].as_str(), Some("powershell"));
        assert_eq!(
            ex["cas_urls"][1].as_str(),
            Some("http://127.0.0.1:2/PowerShell/")
        );
        assert_eq!(ex["auth"]["kind"].as_str(), Some("basic"));
        assert_eq!(
            ex["auth"]["username"].as_str(),
            Some("svc-easgate@contoso.com")
        );
        assert_eq!(
            ex["auth"]["password"]["file"].as_str(),
            Some("lab.toml.exchange-password")
        );
        assert!(ex.get("tenant_id").is_none());
        assert_eq!(
            v["organization"][0]["graph"]["client_secret"]["file"].as_str(),
            Some("lab.secret")
        );
        assert!(!text.contains("\"pw\""), "the password is not inline");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_kerberos_config_names_the_realm_and_kdc_and_keeps_the_password_out() {
        let dir = std::env::temp_dir().join(format!("easgate-krb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lab.toml");
        let realm = KerberosRealm {
            username: "svc-easgate".into(),
            realm: "LAB.EASGATE.TEST".into(),
            kdc: "127.0.0.1:8888".into(),
            krb5_conf: dir.join("krb5.conf"),
            password: "krb-pw".into(),
        };
        let pw = write_powershell(&info(), "contoso", &path, Some(&realm)).unwrap();
        assert_eq!(std::fs::read_to_string(&pw).unwrap(), "krb-pw");
        let text = std::fs::read_to_string(&path).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        let auth = &v["organization"][0]["exchange"]["auth"];
        assert_eq!(auth["kind"].as_str(), Some("kerberos"));
        assert_eq!(auth["username"].as_str(), Some("svc-easgate"));
        assert_eq!(auth["realm"].as_str(), Some("LAB.EASGATE.TEST"));
        assert_eq!(auth["kdc"].as_str(), Some("127.0.0.1:8888"));
        assert_eq!(auth["spn"].as_str(), Some("HTTP/localhost"));
        assert_eq!(
            auth["password"]["file"].as_str(),
            Some("lab.toml.exchange-password")
        );
        assert!(text.contains(&format!("KRB5_CONFIG={}", dir.join("krb5.conf").display())));
        assert!(!text.contains("krb-pw"), "the password is not inline");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
