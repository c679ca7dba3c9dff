//! Both clients through a proxy with credentials, and the rule that no credential — client
//! secret, bearer token, proxy password — ever shows in an error or a log line.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use easgate::config::{Network, Proxy, SecretSource};
use easgate::exchange::ExchangeClient;
use easgate::exchange::cmdlets::GetCasMailbox;
use easgate::graph::GraphClient;
use easgate::net::HttpSettings;

use crate::support::{client_lab, lab_organization, within};

const PROXY_PASSWORD: &str = "proxy-password-31337";

/// What the fake forward proxy saw.
#[derive(Default)]
struct Seen {
    requests: usize,
    authorized: usize,
}

/// A forward proxy for plain HTTP: checks `Proxy-Authorization`, forwards the absolute-form
/// request and returns the answer.
async fn forward(
    State(seen): State<Arc<Mutex<Seen>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let want = format!("Basic {}", base64("easgate", PROXY_PASSWORD));
    let ok = headers
        .get("proxy-authorization")
        .is_some_and(|v| v.as_bytes() == want.as_bytes());
    {
        let mut s = seen.lock().unwrap();
        s.requests += 1;
        s.authorized += usize::from(ok);
    }
    if !ok {
        return (StatusCode::PROXY_AUTHENTICATION_REQUIRED, "proxy auth").into_response();
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.request(method, uri.to_string()).body(body);
    for (name, value) in &headers {
        if name != "proxy-authorization" && name != "host" {
            req = req.header(name, value);
        }
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let mut out_headers = HeaderMap::new();
    for (name, value) in r.headers() {
        if name == "content-type" || name == "retry-after" {
            out_headers.insert(name, value.clone());
        }
    }
    (status, out_headers, r.bytes().await.unwrap()).into_response()
}

fn base64(user: &str, password: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn proxy() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new().fallback(forward).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn through(proxy_url: &str, password: &str) -> HttpSettings {
    let net = Network {
        proxy: Some(Proxy {
            url: proxy_url.to_owned(),
            username: Some("easgate".into()),
            password: Some(SecretSource::Inline(easgate::config::Secret::new(password))),
        }),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        ..Network::default()
    };
    HttpSettings::from_config(&net).unwrap()
}

/// A `Write` into a shared buffer, for a tracing subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn both_clients_work_through_an_authenticating_proxy() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let lab = client_lab(100, 1).await;
            let (proxy_url, seen) = proxy().await;
            let org = lab_organization(&lab);
            let http = through(&proxy_url, PROXY_PASSWORD);
            let x = ExchangeClient::builder(&org, &http).build().unwrap();
            let boxes = within(Duration::from_secs(20), x.run(&GetCasMailbox::default()))
                .await
                .unwrap();
            assert!(!boxes.is_empty());
            let g = GraphClient::new(&org, &http).unwrap();
            let devices = within(Duration::from_secs(20), g.managed_devices())
                .await
                .unwrap();
            assert!(!devices.is_empty());
            let s = seen.lock().unwrap();
            // Tokens (2), discovery (2), the listing, the managed devices: all via the proxy.
            assert!(s.requests >= 6, "{}", s.requests);
            assert_eq!(s.authorized, s.requests);
        });
}

#[test]
fn no_credential_in_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Current-thread runtime: everything runs on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let lab = client_lab(100, 2).await;
            let secrets = [
                lab.client_secret().to_owned(),
                lab.exchange_token().to_owned(),
                PROXY_PASSWORD.to_owned(),
                // As it travels in Proxy-Authorization.
                base64("easgate", PROXY_PASSWORD),
            ];
            let mut org = lab_organization(&lab);
            org.exchange.unavailable_timeout = Duration::from_millis(400);
            org.exchange.probe_interval = Duration::from_millis(100);
            let mut errors = Vec::new();

            // Wrong proxy password: 407 from the proxy.
            let (proxy_url, _) = proxy().await;
            let wrong = through(&proxy_url, "not-the-password");
            let x = ExchangeClient::builder(&org, &wrong).build().unwrap();
            errors.push(format!(
                "{:?}",
                x.run(&GetCasMailbox::default()).await.unwrap_err()
            ));
            // A proxy that is not there.
            let dead = through("http://127.0.0.1:9", PROXY_PASSWORD);
            let x = ExchangeClient::builder(&org, &dead).build().unwrap();
            let e = x.run(&GetCasMailbox::default()).await.unwrap_err();
            errors.push(format!("{e} {e:?}"));
            let g = GraphClient::new(&org, &dead).unwrap();
            let e = g.managed_devices().await.unwrap_err();
            errors.push(format!("{e} {e:?} {g:?}"));

            // Direct: a working run with failover (logs at every level), then all CAS down.
            let direct = crate::support::test_http();
            let x = ExchangeClient::builder(&org, &direct).build().unwrap();
            x.run(&GetCasMailbox::default()).await.unwrap();
            lab.control().stop_cas(0).await.unwrap();
            x.run(&GetCasMailbox::default()).await.unwrap();
            lab.control().stop_cas(1).await.unwrap();
            let e = x.run(&GetCasMailbox::default()).await.unwrap_err();
            errors.push(format!("{e} {e:?} {x:?}"));
            // A wrong client secret.
            let mut bad = org.clone();
            bad.graph.client_secret =
                SecretSource::Inline(easgate::config::Secret::new("wrong-secret-value-42"));
            let e = GraphClient::new(&bad, &direct)
                .unwrap()
                .managed_devices()
                .await
                .unwrap_err();
            errors.push(format!("{e} {e:?}"));
            assert!(errors.last().unwrap().contains("invalid_client"));

            let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert!(logs.contains("CAS failed"), "the run was logged");
            let issued_tokens = logs.matches("lab-").count();
            assert_eq!(issued_tokens, 0, "no lab token in the logs");
            for text in errors.iter().chain(std::iter::once(&logs)) {
                for s in &secrets {
                    assert!(!text.contains(s.as_str()), "a secret leaked: {text}");
                }
                assert!(!text.contains("wrong-secret-value-42"));
                assert!(!text.contains("not-the-password"));
            }
        });
}
