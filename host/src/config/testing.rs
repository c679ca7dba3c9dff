//! What the configuration tests share: a valid two-organization file and the parse helpers.

use std::path::Path;

use super::{Config, ConfigError};

pub(super) const FULL: &str = r#"
[[organization]]
name = "contoso"

[organization.exchange]
cas_urls = ["https://cas01.contoso.com", "https://cas02.contoso.com:8443"]
tenant_id = "contoso.onmicrosoft.com"

[organization.graph]
tenant = "contoso.onmicrosoft.com"
client_id = "3b1a6f2e-0000-4000-8000-000000000001"
client_secret = "inline-secret-value"

[[organization]]
name = "fabrikam"

[organization.exchange]
cas_urls = ["http://127.0.0.1:8080"]
tenant_id = "fabrikam.onmicrosoft.com"
auth = { kind = "bearer", token = { env = "PATH" } }

[organization.graph]
graph_url = "http://127.0.0.1:8081"
login_url = "http://127.0.0.1:8081"
tenant = "fabrikam.onmicrosoft.com"
client_id = "3b1a6f2e-0000-4000-8000-000000000002"
client_secret = { file = "fabrikam.secret" }
"#;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("/etc/easgate/easgate.toml"))
}

/// The error's (line, column, field).
pub(super) fn place(e: ConfigError) -> (usize, usize, String, String) {
    match e {
        ConfigError::Parse {
            line,
            column,
            field,
            message,
            ..
        }
        | ConfigError::Invalid {
            line,
            column,
            field,
            message,
            ..
        } => (line, column, field, message),
        other => panic!("not a located error: {other}"),
    }
}
