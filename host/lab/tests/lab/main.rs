//! End-to-end tests of the lab through its real HTTP APIs, as a connector would call them.
//! One module per area; `Client` holds the shared client-side helpers.

mod cas;
mod control;
mod exchange;
mod faults;
mod graph;
mod graph_sdk;
#[cfg(feature = "kerberos")]
mod kerberos;
mod ntlm;
mod paging;
mod powershell;
mod schema;
mod smtp;
mod throttling;

use std::time::Duration;

use easgate_lab::{Lab, LabOptions, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Options for a test lab: fixed anchor so that times don't depend on the day the test runs.
pub fn options(devices: usize) -> LabOptions {
    LabOptions {
        devices,
        seed: 7,
        anchor: Some(Utc::from_ymd_hms(2025, 1, 15, 0, 0, 0).unwrap()),
        ..LabOptions::default()
    }
}

pub async fn lab(devices: usize) -> Lab {
    Lab::start(options(devices)).await.expect("lab starts")
}

/// An HTTP error answer: status, `Retry-After` and JSON body.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub retry_after: Option<u64>,
    pub body: Value,
}

/// A client of the lab's Exchange and Graph, with tokens from the lab's login endpoint.
pub struct Client {
    pub http: reqwest::Client,
    pub cas: Vec<String>,
    pub graph: String,
    pub tenant: String,
    pub exchange_token: String,
    pub graph_token: String,
}

/// `POST {login}/{tenant}/oauth2/v2.0/token` with the given form.
pub async fn token_request(
    http: &reqwest::Client,
    lab: &Lab,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            lab.login_url(),
            lab.tenant_id()
        ))
        .form(form)
        .send()
        .await
        .expect("token endpoint answers");
    (r.status(), r.json().await.expect("json"))
}

async fn token(http: &reqwest::Client, lab: &Lab, scope: &str) -> String {
    let (status, body) = token_request(
        http,
        lab,
        &[
            ("client_id", &lab.client_id()),
            ("client_secret", lab.client_secret()),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn failure(r: reqwest::Response) -> Failure {
    Failure {
        status: r.status(),
        retry_after: r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        body: r.json().await.unwrap_or(Value::Null),
    }
}

impl Client {
    pub async fn new(lab: &Lab) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Client {
            exchange_token: token(&http, lab, "https://outlook.office365.com/.default").await,
            graph_token: token(&http, lab, "https://graph.microsoft.com/.default").await,
            cas: lab.cas_urls(),
            graph: lab.graph_url().to_owned(),
            tenant: lab.tenant_domain().to_owned(),
            http,
        }
    }

    fn body(cmdlet: &str, params: &Value) -> Value {
        json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}})
    }

    /// One `InvokeCommand` request to `url` (the first page, or a nextLink).
    pub async fn invoke_page(
        &self,
        url: &str,
        cmdlet: &str,
        params: &Value,
        page_size: Option<usize>,
    ) -> Result<Value, Failure> {
        let mut req = self
            .http
            .post(url)
            .bearer_auth(&self.exchange_token)
            .json(&Self::body(cmdlet, params));
        if let Some(n) = page_size {
            req = req.header("Prefer", format!("odata.maxpagesize={n}"));
        }
        let r = req.send().await.expect("CAS answers");
        if r.status().is_success() {
            Ok(r.json().await.unwrap())
        } else {
            Err(failure(r).await)
        }
    }

    pub fn invoke_url(&self, cas: usize) -> String {
        format!(
            "{}/adminapi/beta/{}/InvokeCommand",
            self.cas[cas], self.tenant
        )
    }

    /// Runs a cmdlet on CAS `cas`, following `@odata.nextLink` to the end.
    pub async fn invoke_on(
        &self,
        cas: usize,
        cmdlet: &str,
        params: Value,
        page_size: Option<usize>,
    ) -> Result<Vec<Value>, Failure> {
        let mut url = self.invoke_url(cas);
        let mut out = Vec::new();
        loop {
            let page = self.invoke_page(&url, cmdlet, &params, page_size).await?;
            out.extend(page["value"].as_array().unwrap().iter().cloned());
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_owned(),
                None => return Ok(out),
            }
        }
    }

    pub async fn invoke(&self, cmdlet: &str, params: Value) -> Result<Vec<Value>, Failure> {
        self.invoke_on(0, cmdlet, params, None).await
    }

    /// One Graph GET of a full URL.
    pub async fn graph_get(&self, url: &str) -> Result<Value, Failure> {
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.graph_token)
            .send()
            .await
            .expect("graph answers");
        if r.status().is_success() {
            Ok(r.json().await.unwrap())
        } else {
            Err(failure(r).await)
        }
    }

    /// A Graph list (path and query below `/v1.0/`), following `@odata.nextLink`.
    pub async fn graph_list(&self, path_and_query: &str) -> Result<Vec<Value>, Failure> {
        let mut url = format!("{}/v1.0/{path_and_query}", self.graph);
        let mut out = Vec::new();
        loop {
            let page = self.graph_get(&url).await?;
            out.extend(page["value"].as_array().unwrap().iter().cloned());
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_owned(),
                None => return Ok(out),
            }
        }
    }
}

/// The `Exception|Text` of an Exchange error's `Id|Exception|Text` detail.
pub fn exchange_detail(f: &Failure) -> String {
    let detail = f.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or_default();
    let (_id, rest) = detail
        .split_once('|')
        .unwrap_or_else(|| panic!("no error id before the exception: {detail}"));
    rest.to_owned()
}
