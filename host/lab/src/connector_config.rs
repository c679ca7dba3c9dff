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
