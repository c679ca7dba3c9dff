//! Answers that don't have the services' shape become typed errors naming the endpoint and the
//! field, never panics. The other side here is a small fake of Microsoft's services (an axum
//! server on loopback) that answers each case's requests with one kind of bad answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use easgate::config::Config;
use easgate::exchange::cmdlets::GetMobileDevice;
use easgate::exchange::{ExchangeClient, ExchangeError};
use easgate::graph::{GraphClient, GraphError};
use easgate::net::token::TokenError;

use crate::support::{test_http, within};

const BEARER: &str = "exchange-bearer-secret-4711";
const CLIENT_SECRET: &str = "graph-client-secret-value-0815";

#[derive(Default)]
struct Fake {
    tokens: AtomicU64,
}

fn reply(status: u16, content_type: &str, body: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, content_type.to_owned())],
        body.to_owned(),
    )
        .into_response()
}

const JSON: &str = "application/json; odata.metadata=minimal";

fn device(fields: &str) -> String {
    format!(r#"{{"value":[{{"Identity":"alice\\ExchangeActiveSyncDevices\\x",{fields}}}]}}"#)
}

async fn answer(State(fake): State<Arc<Fake>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let segments: Vec<&str> = path.split('/').collect();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match segments.as_slice() {
        ["", "login", tenant, "oauth2", "v2.0", "token"] => match *tenant {
            "t-no-token" => reply(
                200,
                "application/json",
                r#"{"token_type":"Bearer","expires_in":3599}"#,
            ),
            "t-refused" => reply(
                401,
                "application/json",
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1\r\nCorrelation ID: 2"}"#,
            ),
            _ => {
                let n = fake.tokens.fetch_add(1, Ordering::SeqCst) + 1;
                reply(
                    200,
                    "application/json",
                    &format!(
                        r#"{{"token_type":"Bearer","expires_in":"3599","access_token":"tok-{n}"}}"#
                    ),
                )
            }
        },
        ["", "x", case, ..] => {
            if bearer != format!("Bearer {BEARER}") {
                return reply(
                    401,
                    "application/json",
                    r#"{"error":{"code":"Unauthorized","message":"no"}}"#,
                );
            }
            match *case {
                "missing-field" => reply(
                    200,
                    JSON,
                    &device(r#""DeviceAccessState":"Allowed","DeviceAccessStateReason":"Global""#),
                ),
                "wrong-type" => reply(
                    200,
                    JSON,
                    &device(
                        r#""DeviceId":42,"DeviceAccessState":"Allowed","DeviceAccessStateReason":"Global""#,
                    ),
                ),
                "bad-enum" => reply(
                    200,
                    JSON,
                    &device(
                        r#""DeviceId":"A","DeviceAccessState":"Sideways","DeviceAccessStateReason":"Global""#,
                    ),
                ),
                "truncated" => reply(200, JSON, r#"{"value":[{"Identity":"a","DeviceId":"x"#),
                "html-200" => reply(
                    200,
                    "text/html; charset=utf-8",
                    "<html><body>Sign in to continue</body></html>",
                ),
                "empty" => reply(200, JSON, ""),
                "no-value" => reply(200, JSON, r#"{"@odata.context":"x"}"#),
                "value-object" => reply(200, JSON, r#"{"value":{"DeviceId":"A"}}"#),
                "html-400" => reply(400, "text/html", "<html>Bad Request</html>"),
                "html-502" => reply(502, "text/html", "<html>Bad Gateway</html>"),
                "next-not-text" => reply(200, JSON, r#"{"value":[],"@odata.nextLink":42}"#),
                "foreign-next" => reply(
                    200,
                    JSON,
                    r#"{"value":[],"@odata.nextLink":"http://evil.example/adminapi/beta/t/InvokeCommand?$skiptoken=1"}"#,
                ),
                "exchange-error" => reply(
                    404,
                    "application/json",
                    r#"{"error":{"code":"NotFound","message":"Error executing cmdlet","details":[{"code":"Context","target":"","message":"Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be performed because object 'x' couldn't be found on 'DC1.prod.outlook.com'."}],"innererror":{"message":"Error executing cmdlet","type":"Microsoft.Exchange.Admin.OData.Core.ODataServiceException","stacktrace":""}}}"#,
                ),
                other => reply(500, "text/plain", other),
            }
        }
        ["", "g", case, ..] => {
            let md = |fields: &str| {
                format!(r#"{{"value":[{{"managedDeviceOwnerType":"company",{fields}}}]}}"#)
            };
            match *case {
                "g-bad-compliance" => reply(200, JSON, &md(r#""id":"m1","complianceState":7"#)),
                "g-missing-id" => reply(200, JSON, &md(r#""complianceState":"compliant""#)),
                "g-truncated" => reply(200, JSON, r#"{"value":[{"id":"#),
                "g-401-once" if bearer == "Bearer tok-1" => reply(
                    401,
                    "application/json",
                    r#"{"error":{"code":"InvalidAuthenticationToken","message":"Lifetime validation failed, the token is expired."}}"#,
                ),
                "g-401-once" => reply(200, JSON, &md(r#""id":"m1","complianceState":"compliant""#)),
                "g-401-always" => reply(
                    401,
                    "application/json",
                    r#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token validation failure."}}"#,
                ),
                _ => reply(200, JSON, r#"{"value":[]}"#),
            }
        }
        _ => reply(404, "text/plain", "not here"),
    }
}

/// Starts the fake; returns its base URL.
async fn fake() -> (String, Arc<Fake>) {
    let state = Arc::new(Fake::default());
    let app = Router::new().fallback(answer).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn organization(base: &str, case: &str, tenant: &str) -> easgate::config::Organization {
    let text = format!(
        r#"
[[organization]]
name = "fake"

[organization.exchange]
cas_urls = ["{base}/x/{case}"]
tenant_id = "contoso.onmicrosoft.com"
auth = {{ kind = "bearer", token = "{BEARER}" }}
cas_failover = false
unavailable_timeout = "300ms"
probe_interval = "100ms"

[organization.graph]
graph_url = "{base}/g/{case}"
login_url = "{base}/login"
tenant = "{tenant}"
client_id = "3b1a6f2e-0000-4000-8000-000000000001"
client_secret = "{CLIENT_SECRET}"
"#
    );
    Config::from_toml(&text, std::path::Path::new("fake.toml"))
        .unwrap()
        .organizations
        .remove(0)
}

async fn exchange_error(base: &str, case: &str) -> ExchangeError {
    let c = ExchangeClient::builder(&organization(base, case, "t"), &test_http())
        .build()
        .unwrap();
    let e = within(Duration::from_secs(10), c.run(&GetMobileDevice::default()))
        .await
        .expect_err(case);
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(
            !text.contains(BEARER) && !text.contains(CLIENT_SECRET),
            "{text}"
        );
    }
    e
}

/// The (field, problem) of a bad-response error of `Get-MobileDevice`.
async fn bad_field(base: &str, case: &str) -> (String, String) {
    match exchange_error(base, case).await {
        ExchangeError::BadResponse {
            cmdlet,
            endpoint,
            field,
            problem,
        } => {
            assert_eq!(cmdlet, "Get-MobileDevice");
            assert!(endpoint.ends_with(&format!("/x/{case}")), "{endpoint}");
            (field, problem)
        }
        other => panic!("{case}: {other}"),
    }
}

#[tokio::test]
async fn bad_exchange_answers_are_typed_errors_naming_the_field() {
    let (base, _) = fake().await;
    let cases: &[(&str, &str, &str)] = &[
        ("missing-field", "value[0]", "missing field `DeviceId`"),
        (
            "wrong-type",
            "value[0].DeviceId",
            "invalid type: integer `42`",
        ),
        (
            "bad-enum",
            "value[0].DeviceAccessState",
            "unknown variant `Sideways`",
        ),
        ("truncated", "value[0].DeviceId", "EOF while parsing"),
        ("html-200", "Content-Type", "text/html"),
        ("empty", ".", "the body is empty"),
        ("no-value", ".", "missing field `value`"),
        (
            "value-object",
            "value",
            "invalid type: map, expected a sequence",
        ),
        (
            "html-400",
            "error",
            "HTTP 400 without Exchange's error object",
        ),
        (
            "foreign-next",
            "@odata.nextLink",
            "not one of the Client Access Servers",
        ),
    ];
    for (case, want_field, want_problem) in cases {
        let (field, problem) = bad_field(&base, case).await;
        assert_eq!(field, *want_field, "{case}: {problem}");
        assert!(problem.contains(want_problem), "{case}: {problem}");
    }

    // A proxy's 502 page: the CAS failed (failover is off here, so the command does).
    let e = exchange_error(&base, "html-502").await;
    assert!(matches!(e, ExchangeError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("HTTP 502"), "{e}");

    // Exchange Online's own error shape is read into its parts: the exception from the middle
    // of the detail, the text from its end (not the generic "Error executing cmdlet").
    let e = exchange_error(&base, "exchange-error").await;
    assert!(e.is_not_found(), "{e}");
    let ExchangeError::Cmdlet(f) = &e else {
        panic!("{e}")
    };
    assert_eq!(f.status, 404);
    assert_eq!(
        f.exception,
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
    );
    assert!(
        f.message
            .starts_with("The operation couldn't be performed because object 'x'"),
        "{f}"
    );
}

#[tokio::test]
async fn bad_graph_and_token_answers_are_typed_errors() {
    let (base, _) = fake().await;
    let graph = |case: &str, tenant: &str| {
        GraphClient::new(&organization(&base, case, tenant), &test_http()).unwrap()
    };
    let check = |e: &GraphError| {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(
                !text.contains(CLIENT_SECRET) && !text.contains("tok-"),
                "{text}"
            );
        }
    };
    for (case, want_field, want_problem) in [
        (
            "g-bad-compliance",
            "value[0].complianceState",
            "invalid type: integer `7`",
        ),
        ("g-missing-id", "value[0]", "missing field `id`"),
        ("g-truncated", "value[0].id", "EOF while parsing"),
    ] {
        let e = graph(case, "t").managed_devices().await.unwrap_err();
        check(&e);
        let GraphError::BadResponse {
            endpoint,
            field,
            problem,
        } = &e
        else {
            panic!("{case}: {e}")
        };
        assert!(
            endpoint.ends_with("/v1.0/deviceManagement/managedDevices"),
            "{endpoint}"
        );
        assert_eq!(field, want_field, "{case}: {problem}");
        assert!(problem.contains(want_problem), "{case}: {problem}");
    }

    // Token endpoint: a success without a token, and a refusal.
    let e = graph("g-any", "t-no-token")
        .managed_devices()
        .await
        .unwrap_err();
    check(&e);
    assert!(
        matches!(&e, GraphError::Token(TokenError::BadResponse { problem, .. }) if problem.contains("access_token")),
        "{e}"
    );
    let e = graph("g-any", "t-refused")
        .managed_devices()
        .await
        .unwrap_err();
    check(&e);
    let text = e.to_string();
    assert!(
        text.contains("invalid_client: AADSTS7000215: Invalid client secret provided."),
        "{text}"
    );
    assert!(!text.contains("Trace ID"), "only the first line: {text}");

    // A 401 renews the token once and resends (on a fake of its own, so that its first token
    // is `tok-1`); a fresh token refused again is an error.
    let (base, fake) = self::fake().await;
    let graph = |case: &str, tenant: &str| {
        GraphClient::new(&organization(&base, case, tenant), &test_http()).unwrap()
    };
    let devices = graph("g-401-once", "t").managed_devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        fake.tokens.load(Ordering::SeqCst),
        2,
        "tok-1 refused, tok-2 used"
    );
    let e = graph("g-401-always", "t")
        .managed_devices()
        .await
        .unwrap_err();
    check(&e);
    assert!(matches!(e, GraphError::Service { status: 401, .. }), "{e}");
}
