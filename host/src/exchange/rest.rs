//! The REST wire: one attempt of a cmdlet as `POST {cas}/adminapi/beta/{tenant}/InvokeCommand`
//! with a bearer token, its answer classified into an [`Attempt`]:
//! - success → the page's JSON (`{"value":[…]}`) and its `@odata.nextLink`, whose path and
//!   skip token can be sent to any CAS of the pool;
//! - 429, a 503 with `Retry-After`, or "maximum number of concurrent requests" → throttled;
//! - refused or dropped connection, timeout, other 5xx → that CAS failed;
//! - 401 → unauthorized (a client-credentials token is renewed once, see [`RestWire::renew`]);
//! - any other error → [`ExchangeError::Cmdlet`] with Exchange's exception and its text, read
//!   from `details[].message` = `"Ex6F9304|Microsoft.Exchange.…Exception|text"` (error site id,
//!   exception, text: see [`Detail`]), since `error.message` of a failed cmdlet only says
//!   "Error executing cmdlet".
//!
//! Each request carries the headers the ExchangeOnlineManagement module sends (see
//! [`RestWire::attempt`]).
//!
//! The typed [`Parameters`] become `CmdletInput.Parameters` here and only here: a hashtable
//! edit is sent as an `#Exchange.GenericHashTable`, a switch as `true`.

use serde::Deserialize;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::cas::CasPool;
use super::wire::{Attempt, Continuation, Next};
use super::{CmdletFailure, ExchangeError};
use crate::config::{ExchangeAuth, Organization, Secret};
use crate::model::{ParamValue, Parameters};
use crate::net::token::{Token, TokenCache};
use crate::net::{self, BadField, HttpSettings, SetupError};

/// The OData type that makes a multi-valued parameter an `Add`/`Remove` edit.
const GENERIC_HASH_TABLE: &str = "#Exchange.GenericHashTable";

const CONCURRENCY_TEXT: &str = "maximum number of concurrent requests";

/// The whole `InvokeCommand` body of `cmdlet` with `parameters`, members in the parameters'
/// order.
pub fn invoke_body(cmdlet: &str, parameters: &Parameters) -> Vec<u8> {
    struct Body<'a>(&'a str, &'a Parameters);
    impl Serialize for Body<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            struct Input<'a>(&'a str, &'a Parameters);
            impl Serialize for Input<'_> {
                fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    let mut m = s.serialize_map(Some(2))?;
                    m.serialize_entry("CmdletName", self.0)?;
                    m.serialize_entry("Parameters", &RestParameters(self.1))?;
                    m.end()
                }
            }
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("CmdletInput", &Input(self.0, self.1))?;
            m.end()
        }
    }
    serde_json::to_vec(&Body(cmdlet, parameters)).expect("strings and numbers always serialize")
}

/// `command` as the REST body's `CmdletInput` object: how reports (`easgate policy diff`) have
/// always shown a planned command.
pub fn cmdlet_input(command: &crate::model::Command) -> serde_json::Value {
    let mut body: serde_json::Value =
        serde_json::from_slice(&invoke_body(&command.cmdlet, &command.parameters))
            .expect("a rendered body is JSON");
    body["CmdletInput"].take()
}

/// `CmdletInput.Parameters`.
struct RestParameters<'a>(&'a Parameters);

impl Serialize for RestParameters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0.iter() {
            m.serialize_entry(name, &RestValue(value))?;
        }
        m.end()
    }
}

struct RestValue<'a>(&'a ParamValue);

impl Serialize for RestValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ParamValue::Text(t) => s.serialize_str(t),
            ParamValue::Texts(v) => v.serialize(s),
            ParamValue::Int(n) => s.serialize_i64(*n),
            ParamValue::Unlimited => s.serialize_str("Unlimited"),
            ParamValue::Switch => s.serialize_bool(true),
            ParamValue::Bool(b) => s.serialize_bool(*b),
            ParamValue::HashEdit { add, remove } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("@odata.type", GENERIC_HASH_TABLE)?;
                m.serialize_entry("Add", &Strings(add))?;
                m.serialize_entry("Remove", &Strings(remove))?;
                m.end()
            }
        }
    }
}

struct Strings<'a>(&'a [String]);

impl Serialize for Strings<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

#[derive(Debug)]
enum Auth {
    Bearer(Secret),
    Tokens(TokenCache),
}

/// The credential an attempt is sent with: the bearer token, the cached token it came from
/// (for a renewal), and whether it was just renewed (a renewed token refused again is an
/// error, not a second renewal).
#[derive(Debug)]
pub(super) struct RestCredential {
    bearer: Secret,
    token: Option<Token>,
    renewed: bool,
}

/// What the REST wire needs of the configuration.
#[derive(Debug)]
pub(super) struct RestWire {
    http: reqwest::Client,
    tenant: String,
    /// `X-AnchorMailbox`, `APP:<system mailbox>@<tenant>`.
    anchor: String,
    auth: Auth,
    page_size: usize,
}

/// Exchange's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ErrorLine>,
}

#[derive(Deserialize)]
struct ErrorLine {
    #[serde(default)]
    message: String,
}

/// One `details[].message` of Exchange's error body, `"<error id>|<exception>|<text>"`: the id
/// of the error site (`Ex6F9304`, empty in some answers), the .NET exception type, and the
/// text (which may itself hold `|`). Anything else is all text.
#[derive(Debug, PartialEq, Eq)]
struct Detail<'a> {
    exception: &'a str,
    text: &'a str,
}

impl<'a> Detail<'a> {
    fn parse(message: &'a str) -> Self {
        let mut parts = message.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(_id), Some(exception), Some(text)) if looks_like_type(exception) => Detail {
                exception: exception.trim(),
                text: text.trim(),
            },
            _ => Detail {
                exception: "",
                text: message.trim(),
            },
        }
    }
}

/// A .NET type name: dotted identifiers, no spaces (so that prose with two `|` is not
/// mistaken for one).
fn looks_like_type(s: &str) -> bool {
    let s = s.trim();
    s.contains('.')
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '`')
        })
}

/// `X-AnchorMailbox` of an application acting for itself: the organization's system mailbox,
/// whose name is the same in every Exchange organization. The module routes app-only sessions
/// by it (`UPN:<user>` is for a signed-in user, which the connector never is).
const APP_ANCHOR_MAILBOX: &str = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}";

/// `X-ClientApplication`: the connector names itself rather than pose as the module
/// (`ExoManagementModule`): the value is the service's telemetry and the tenant's audit of who
/// called, and third-party clients naming themselves are served alike.
const CLIENT_APPLICATION: &str = concat!("easgate/", env!("CARGO_PKG_VERSION"));

/// Just the next link of a page, read before its objects are decoded.
#[derive(Deserialize)]
struct NextLink {
    #[serde(rename = "@odata.nextLink", default)]
    next: Option<String>,
    /// What a PowerShell session would print as WARNING (e.g. a result cut at `-ResultSize`).
    #[serde(rename = "adminapi.warnings", default)]
    warnings: Option<Vec<String>>,
}

impl RestWire {
    /// Resolves the secrets and builds the HTTP client.
    pub(super) fn new(
        org: &Organization,
        http: &HttpSettings,
        page_size: usize,
    ) -> Result<Self, SetupError> {
        let x = &org.exchange;
        let at = |f: &str| format!("organization `{}`: exchange.{f}", org.name);
        let client = http.client()?;
        let auth = match &x.auth {
            ExchangeAuth::Bearer { token } => {
                Auth::Bearer(token.resolve().map_err(|source| SetupError::Secret {
                    field: at("auth.token"),
                    source,
                })?)
            }
            other @ (ExchangeAuth::Basic { .. }
            | ExchangeAuth::Kerberos { .. }
            | ExchangeAuth::Ntlm { .. }) => {
                return Err(SetupError::Unsupported {
                    field: at("auth"),
                    message: format!(
                        "kind = \"{}\" signs in to remote PowerShell, not to the REST admin API",
                        other.kind()
                    ),
                });
            }
            ExchangeAuth::ClientCredentials { scope } => {
                let g = &org.graph;
                http.check_url(&g.login_url)
                    .map_err(|message| SetupError::Url {
                        field: format!("organization `{}`: graph.login_url", org.name),
                        message,
                    })?;
                let secret = g
                    .client_secret
                    .resolve()
                    .map_err(|source| SetupError::Secret {
                        field: format!("organization `{}`: graph.client_secret", org.name),
                        source,
                    })?;
                Auth::Tokens(TokenCache::new(
                    client.clone(),
                    &g.login_url,
                    &g.tenant,
                    &g.client_id,
                    secret,
                    scope,
                ))
            }
        };
        Ok(RestWire {
            http: client,
            tenant: x.tenant_id.clone(),
            anchor: format!("APP:{APP_ANCHOR_MAILBOX}@{}", x.tenant_id),
            auth,
            page_size,
        })
    }

    /// The first page's path.
    pub(super) fn first_path(&self) -> String {
        format!("/adminapi/beta/{}/InvokeCommand", self.tenant)
    }

    /// The token to send; from the cache on every attempt, since a throttling or failover
    /// wait may outlast it.
    pub(super) async fn credential(&self, cmdlet: &str) -> Result<RestCredential, ExchangeError> {
        match &self.auth {
            Auth::Bearer(s) => Ok(RestCredential {
                bearer: s.clone(),
                token: None,
                renewed: false,
            }),
            Auth::Tokens(cache) => {
                let t = cache.token().await.map_err(|source| ExchangeError::Token {
                    cmdlet: cmdlet.into(),
                    source,
                })?;
                Ok(RestCredential {
                    bearer: t.value.clone(),
                    token: Some(t),
                    renewed: false,
                })
            }
        }
    }

    /// After a 401: a renewed client-credentials token to send once more, or `None` when
    /// there is nothing to renew (a configured bearer token, or one renewed already).
    pub(super) async fn renew(
        &self,
        refused: &RestCredential,
        cmdlet: &str,
    ) -> Result<Option<RestCredential>, ExchangeError> {
        match (&self.auth, &refused.token, refused.renewed) {
            (Auth::Tokens(cache), Some(rejected), false) => {
                let t = cache
                    .renew(rejected)
                    .await
                    .map_err(|source| ExchangeError::Token {
                        cmdlet: cmdlet.into(),
                        source,
                    })?;
                Ok(Some(RestCredential {
                    bearer: t.value.clone(),
                    token: Some(t),
                    renewed: true,
                }))
            }
            _ => Ok(None),
        }
    }

    /// One HTTP request of `body` to `path` on the CAS `base`, classified. Sent with the
    /// module's headers: `X-CmdletName` (the cmdlet of the body, readable without parsing
    /// it), `X-AnchorMailbox` (which mailbox server runs the session), `X-ResponseFormat: json`
    /// (the answer's format: the module asks `clixml` for its own deserializer, any other
    /// client JSON) and `X-ClientApplication` ([`CLIENT_APPLICATION`]).
    pub(super) async fn attempt(
        &self,
        credential: &RestCredential,
        cmdlet: &str,
        base: &str,
        path: &str,
        body: &[u8],
        pool: &CasPool,
    ) -> Attempt {
        let url = format!("{base}{path}");
        let response = self
            .http
            .post(&url)
            .bearer_auth(credential.bearer.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .header("Prefer", format!("odata.maxpagesize={}", self.page_size))
            .header("X-CmdletName", cmdlet)
            .header("X-AnchorMailbox", &self.anchor)
            .header("X-ResponseFormat", "json")
            .header("X-ClientApplication", CLIENT_APPLICATION)
            .body(body.to_vec())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Attempt::CasFailed {
                    sent: !e.is_connect(),
                    reason: net::describe(&e),
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::CasFailed {
                    sent: true,
                    reason: net::describe(&e),
                };
            }
        };
        let bad = |b: BadField| ExchangeError::BadResponse {
            cmdlet: cmdlet.into(),
            endpoint: base.to_owned(),
            field: b.field,
            problem: b.problem,
        };
        if status.is_success() {
            if let Err(b) = net::expect_json(&headers) {
                return Attempt::Error(bad(b));
            }
            let objects = Vec::from(bytes);
            let next = self.next(&objects, cmdlet, base, pool);
            return Attempt::Page { objects, next };
        }
        let error = net::decode::<ErrorBody>(&bytes).ok().map(|b| b.error);
        let (exception, text) = error
            .as_ref()
            .and_then(|e| e.details.first())
            .map(|d| Detail::parse(&d.message))
            .map_or((String::new(), String::new()), |d| {
                (d.exception.to_owned(), d.text.to_owned())
            });
        // What Exchange says happened: the detail's text where there is one (a failed cmdlet's
        // `error.message` is only "Error executing cmdlet"), else the error's message.
        let message = match &error {
            _ if !text.is_empty() => text,
            Some(e) => e.message.clone(),
            None => String::new(),
        };
        let retry_after = net::retry_after(&headers);
        if status.as_u16() == 429
            || message.contains(CONCURRENCY_TEXT)
            || error
                .as_ref()
                .is_some_and(|e| e.message.contains(CONCURRENCY_TEXT))
            || (status.as_u16() == 503 && retry_after.is_some())
        {
            return Attempt::Throttled {
                retry_after,
                message: net::first_line(&message),
            };
        }
        if status.is_server_error() {
            return Attempt::CasFailed {
                sent: true,
                reason: format!(
                    "HTTP {}{}",
                    status.as_u16(),
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", net::first_line(&message))
                    }
                ),
            };
        }
        let Some(error) = error else {
            return Attempt::Error(bad(BadField {
                field: "error".into(),
                problem: format!(
                    "HTTP {} without Exchange's error object ({} bytes of {})",
                    status.as_u16(),
                    bytes.len(),
                    headers
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("no content type")
                ),
            }));
        };
        let e = ExchangeError::Cmdlet(Box::new(CmdletFailure {
            cmdlet: cmdlet.into(),
            cas: base.to_owned(),
            status: status.as_u16(),
            code: error.code,
            exception,
            category: String::new(),
            message: net::first_line(&message),
        }));
        if status.as_u16() == 401 {
            Attempt::Unauthorized(e)
        } else {
            Attempt::Error(e)
        }
    }

    /// Where the listing goes on from after the page `raw` that `base` answered.
    fn next(&self, raw: &[u8], cmdlet: &str, base: &str, pool: &CasPool) -> Next {
        match net::decode::<NextLink>(raw) {
            Ok(n) => {
                for w in n.warnings.iter().flatten() {
                    tracing::warn!(cmdlet, cas = %base, "Exchange warns: {w}");
                }
                match n.next {
                    None => Next::Last,
                    Some(link) => match next_path(&link, cmdlet, base, pool) {
                        Ok(path) => Next::More(Continuation::Link(path)),
                        Err(e) => Next::BadLink(e),
                    },
                }
            }
            Err(b) => Next::Unreadable(ExchangeError::BadResponse {
                cmdlet: cmdlet.into(),
                endpoint: base.to_owned(),
                field: b.field,
                problem: b.problem,
            }),
        }
    }
}

/// The path and query of a next link, which must point at a known CAS (a link elsewhere
/// would take our token with it).
fn next_path(link: &str, cmdlet: &str, cas: &str, pool: &CasPool) -> Result<String, ExchangeError> {
    let bad = |problem: String| ExchangeError::BadResponse {
        cmdlet: cmdlet.into(),
        endpoint: cas.to_owned(),
        field: "@odata.nextLink".into(),
        problem,
    };
    let url = reqwest::Url::parse(link).map_err(|e| bad(format!("not a URL: {e}")))?;
    let origin = url.origin().ascii_serialization();
    if !pool.knows(&origin) {
        return Err(bad(format!(
            "`{origin}` is not one of the Client Access Servers"
        )));
    }
    if !url.path().starts_with("/adminapi/") {
        return Err(bad(format!("`{}` is not an admin API path", url.path())));
    }
    Ok(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
}

/// Exchange's refusal of a followed next link's skip token (expired, or not valid for the
/// request): HTTP 400 naming the skip token. The admin API documents no code or exception for
/// it, so the message is what sets it apart from a refused parameter.
pub(super) fn refused_page_link(e: &ExchangeError) -> Option<&CmdletFailure> {
    match e {
        ExchangeError::Cmdlet(f) if f.status == 400 => {
            let message = f.message.to_ascii_lowercase();
            (message.contains("skip token") || message.contains("skiptoken")).then_some(&**f)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, message: &str) -> ExchangeError {
        ExchangeError::Cmdlet(Box::new(CmdletFailure {
            cmdlet: "Get-MobileDevice".into(),
            cas: "http://cas".into(),
            status,
            code: "BadRequest".into(),
            exception: "Microsoft.Exchange.Admin.OData.Core.ODataServiceException".into(),
            category: "InvalidArgument".into(),
            message: message.into(),
        }))
    }

    #[test]
    fn only_a_400_naming_the_skip_token_is_a_refused_page_link() {
        for (error, refused) in [
            (
                refusal(400, "The skip token has expired. Run the command again."),
                true,
            ),
            (
                refusal(400, "The skip token is not valid for this request."),
                true,
            ),
            (refusal(400, "Invalid $skiptoken value"), true),
            (
                refusal(
                    400,
                    "A parameter cannot be found that matches parameter name 'X'.",
                ),
                false,
            ),
            (refusal(404, "The skip token has expired."), false),
            (
                ExchangeError::Throttled {
                    cmdlet: "Get-MobileDevice".into(),
                    attempts: 30,
                    message: "skip token".into(),
                },
                false,
            ),
        ] {
            assert_eq!(refused_page_link(&error).is_some(), refused, "{error}");
        }
    }

    #[test]
    fn the_exception_is_the_middle_of_exchange_onlines_detail() {
        // As Exchange Online answers a missing object (quoted in public bug reports).
        let real = r#"{"error":{"code":"NotFound","message":"Error executing cmdlet","details":[{"code":"Context","target":"","message":"Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be performed because object 'd2fed596-8883-4d3c-8df6-9a283286c4e4' couldn't be found on 'DB6PR06A001DC06.EURPR06A001.prod.outlook.com'."}],"innererror":{"message":"Error executing cmdlet","type":"Microsoft.Exchange.Admin.OData.Core.ODataServiceException","stacktrace":"   at Microsoft.Exchange.AdminApi.CommandInvocation.CommandInvocation.InvokeCommand(QueryContext queryContext, CmdletInvokeInputType cmdletInvokeInputType)"}}}"#;
        let body: ErrorBody = serde_json::from_str(real).unwrap();
        assert_eq!(body.error.message, "Error executing cmdlet");
        let d = Detail::parse(&body.error.details[0].message);
        assert_eq!(
            d.exception,
            "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
        );
        assert!(
            d.text
                .starts_with("The operation couldn't be performed because object 'd2fed596")
        );

        for (message, exception, text) in [
            // An answer with no error id.
            (
                "|Microsoft.Exchange.Data.Storage.Management.MigrationTransientException|Try again.",
                "Microsoft.Exchange.Data.Storage.Management.MigrationTransientException",
                "Try again.",
            ),
            // The text may hold `|` itself.
            (
                "Ex1A2B3C|System.InvalidOperationException|The value \"a|b\" is already present in the collection.",
                "System.InvalidOperationException",
                "The value \"a|b\" is already present in the collection.",
            ),
            // No parts: all text.
            ("Something went wrong.", "", "Something went wrong."),
            // Prose between bars is not an exception type.
            ("a | b c | d", "", "a | b c | d"),
        ] {
            assert_eq!(
                Detail::parse(message),
                Detail { exception, text },
                "{message}"
            );
        }
    }

    #[test]
    fn every_value_renders_as_the_admin_api_reads_it() {
        let p = Parameters::new()
            .text("Identity", "alice")
            .texts("AdminMailRecipients", vec!["a@x".into()])
            .int("ResultSize", 5)
            .unlimited("Other")
            .switch("ActiveSync")
            .bool("Confirm", false)
            .hash_edit("ActiveSyncBlockedDeviceIDs", vec![], vec!["ID".into()]);
        assert_eq!(
            String::from_utf8(invoke_body("Set-X", &p)).unwrap(),
            r##"{"CmdletInput":{"CmdletName":"Set-X","Parameters":{"Identity":"alice","AdminMailRecipients":["a@x"],"ResultSize":5,"Other":"Unlimited","ActiveSync":true,"Confirm":false,"ActiveSyncBlockedDeviceIDs":{"@odata.type":"#Exchange.GenericHashTable","Add":[],"Remove":["ID"]}}}}"##
        );
    }
}
