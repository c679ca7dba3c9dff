//! A minimal remote PowerShell client over WS-Management, built on `easgate_psrp`, for the lab's
//! own tests and its listing benchmark (the independent client is pypsrp, in
//! `pypsrp_client.py`). Shared by `tests/lab/powershell.rs` and `examples/powershell_listing.rs`.

#![allow(dead_code)]

use std::time::Duration;

use easgate_psrp::clixml::{base64_decode, base64_encode};
use easgate_psrp::messages::{self, PipelineState, RunspacePoolState};
use easgate_psrp::xml;
use easgate_psrp::{
    CreatePipeline, Destination, ErrorRecord, Fragmenter, Guid, InitRunspacePool, Message,
    MessageType, Reassembler, SessionCapability,
};

pub const RESOURCE: &str = "http://schemas.microsoft.com/powershell/Microsoft.Exchange";
const SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";

/// A fault or an HTTP failure.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    /// `w:TimedOut`, …; empty when the answer was no SOAP fault.
    pub subcode: String,
    pub code: String,
    pub message: String,
    pub body: String,
}

/// What a pipeline produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// PIPELINE_OUTPUT bodies (CLIXML), unless only counted.
    pub outputs: Vec<String>,
    pub count: usize,
    /// Bytes of CLIXML in the PIPELINE_OUTPUT bodies.
    pub bytes: usize,
    pub errors: Vec<ErrorRecord>,
    pub warnings: Vec<String>,
    pub state: Option<(PipelineState, Option<ErrorRecord>)>,
    /// Largest response body seen, in bytes.
    pub largest_response: usize,
}

pub struct Client {
    http: reqwest::Client,
    pub url: String,
    user: String,
    password: String,
    pub resource: String,
    pub max_envelope: usize,
    pub pool: Guid,
    pub shell_id: String,
    fragmenter: Fragmenter,
    inbox: Reassembler,
    pub largest_response: usize,
    /// Makes the `Authorization` header of each request instead of Basic (Kerberos tests).
    pub authorization: Option<Box<dyn FnMut() -> String + Send>>,
    /// The last `WWW-Authenticate` header of a response (Kerberos's mutual authentication).
    pub last_www_authenticate: Option<String>,
}

fn envelope(
    action: &str,
    resource: &str,
    shell: Option<&str>,
    max_envelope: usize,
    timeout: &str,
    body: &str,
) -> String {
    let selector = shell
        .map(|s| {
            format!(r#"<w:SelectorSet><w:Selector Name="ShellId">{s}</w:Selector></w:SelectorSet>"#)
        })
        .unwrap_or_default();
    format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="{SHELL}"><s:Header><a:To>http://localhost/PowerShell</a:To><a:ReplyTo><a:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><a:Action s:mustUnderstand="true">{action}</a:Action><w:MaxEnvelopeSize s:mustUnderstand="true">{max_envelope}</w:MaxEnvelopeSize><a:MessageID>uuid:{id}</a:MessageID><w:OperationTimeout>{timeout}</w:OperationTimeout><w:ResourceURI s:mustUnderstand="true">{resource}</w:ResourceURI>{selector}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
        id = Guid::new_v4()
    )
}

impl Client {
    pub fn new(url: &str, user: &str, password: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            resource: RESOURCE.to_owned(),
            max_envelope: 512 * 1024,
            pool: Guid::new_v4(),
            shell_id: String::new(),
            fragmenter: Fragmenter::new(100 * 1024),
            inbox: Reassembler::default(),
            largest_response: 0,
            authorization: None,
            last_www_authenticate: None,
        }
    }

    /// Posts one request; the body of a 200 answer, or the failure.
    pub async fn post(
        &mut self,
        action: &str,
        shell: bool,
        timeout: &str,
        body: &str,
    ) -> Result<String, Failure> {
        let shell_id = shell.then(|| self.shell_id.clone());
        let text = envelope(
            action,
            &self.resource,
            shell_id.as_deref(),
            self.max_envelope,
            timeout,
            body,
        );
        let request = self.http.post(&self.url);
        let request = match self.authorization.as_mut() {
            Some(make) => request.header("authorization", make()),
            None => request.basic_auth(&self.user, Some(&self.password)),
        };
        let r = request
            .header("content-type", "application/soap+xml;charset=UTF-8")
            .body(text)
            .send()
            .await
            .map_err(|e| Failure {
                status: 0,
                subcode: String::new(),
                code: String::new(),
                message: e.to_string(),
                body: String::new(),
            })?;
        let status = r.status().as_u16();
        self.last_www_authenticate = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .reduce(|a, b| format!("{a}, {b}"));
        let body = r.text().await.unwrap_or_default();
        self.largest_response = self.largest_response.max(body.len());
        if status == 200 {
            return Ok(body);
        }
        let mut f = Failure {
            status,
            subcode: String::new(),
            code: String::new(),
            message: String::new(),
            body: body.clone(),
        };
        if let Ok(doc) = xml::parse(&body)
            && let Some(fault) = doc.find("Fault")
        {
            f.subcode = fault
                .path(&["Code", "Subcode", "Value"])
                .map(|v| v.text.clone())
                .unwrap_or_default();
            let detail = fault.find("WSManFault");
            f.code = detail
                .and_then(|d| d.attr("Code"))
                .unwrap_or_default()
                .to_owned();
            f.message = detail
                .and_then(|d| d.child("Message"))
                .map(|m| m.text.trim().to_owned())
                .unwrap_or_default();
        }
        Err(f)
    }

    /// Creates the shell and receives until the pool is opened.
    pub async fn open(&mut self) -> Result<(), Failure> {
        let caps = Message::new(
            Destination::Server,
            MessageType::SESSION_CAPABILITY,
            self.pool,
            Guid::NIL,
            SessionCapability::windows_powershell().to_clixml(),
        );
        let init = Message::new(
            Destination::Server,
            MessageType::INIT_RUNSPACEPOOL,
            self.pool,
            Guid::NIL,
            InitRunspacePool::default().to_clixml(),
        );
        let frags = [
            self.fragmenter.fragment(&caps.encode()),
            self.fragmenter.fragment(&init.encode()),
        ]
        .concat()
        .concat();
        self.shell_id = self.pool.to_string().to_uppercase();
        let body = format!(
            r#"<rsp:Shell ShellId="{}"><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams><creationXml xmlns="http://schemas.microsoft.com/powershell">{}</creationXml></rsp:Shell>"#,
            self.shell_id,
            base64_encode(&frags)
        );
        self.post(
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
            false,
            "PT20S",
            &body,
        )
        .await?;
        loop {
            for m in self.receive(None, "PT20S").await?.0 {
                if m.message_type == MessageType::RUNSPACEPOOL_STATE {
                    let (state, _) = messages::parse_runspace_pool_state(&m.text()).expect("state");
                    if state == RunspacePoolState::Opened {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One Receive: the messages it completed and whether the command is done.
    pub async fn receive(
        &mut self,
        command: Option<&str>,
        timeout: &str,
    ) -> Result<(Vec<Message>, bool), Failure> {
        let attr = command
            .map(|c| format!(r#" CommandId="{c}""#))
            .unwrap_or_default();
        let body = format!(
            r#"<rsp:Receive><rsp:DesiredStream{attr}>stdout</rsp:DesiredStream></rsp:Receive>"#
        );
        let text = self
            .post(&format!("{SHELL}/Receive"), true, timeout, &body)
            .await?;
        let doc = xml::parse(&text).expect("a SOAP answer");
        let resp = doc.find("ReceiveResponse").expect("a ReceiveResponse");
        let mut out = Vec::new();
        for s in resp.children_named("Stream") {
            let bytes = base64_decode(&s.text).expect("base64");
            for m in self.inbox.feed(&bytes).expect("fragments") {
                out.push(Message::decode(&m).expect("message"));
            }
        }
        let done = resp
            .child("CommandState")
            .and_then(|c| c.attr("State"))
            .is_some_and(|s| s.ends_with("/Done"));
        Ok((out, done))
    }

    /// Sends CREATE_PIPELINE; returns the command id.
    pub async fn start(&mut self, pipeline: &CreatePipeline) -> Result<String, Failure> {
        let pid = Guid::new_v4();
        let msg = Message::new(
            Destination::Server,
            MessageType::CREATE_PIPELINE,
            self.pool,
            pid,
            pipeline.to_clixml(),
        );
        let frags = self.fragmenter.fragment(&msg.encode());
        let id = pid.to_string().to_uppercase();
        let body = format!(
            r#"<rsp:CommandLine CommandId="{id}"><rsp:Command></rsp:Command><rsp:Arguments>{}</rsp:Arguments></rsp:CommandLine>"#,
            base64_encode(&frags[0])
        );
        self.post(&format!("{SHELL}/Command"), true, "PT20S", &body)
            .await?;
        for f in &frags[1..] {
            let body = format!(
                r#"<rsp:Send><rsp:Stream Name="stdin" CommandId="{id}">{}</rsp:Stream></rsp:Send>"#,
                base64_encode(f)
            );
            self.post(&format!("{SHELL}/Send"), true, "PT20S", &body)
                .await?;
        }
        Ok(id)
    }

    /// Receives a started pipeline to its end; `keep` keeps output bodies (else only counts).
    pub async fn finish(&mut self, id: &str, keep: bool) -> Result<Outcome, Failure> {
        let mut o = Outcome::default();
        loop {
            let (msgs, done) = match self.receive(Some(id), "PT20S").await {
                Err(f) if f.subcode == "w:TimedOut" => continue,
                other => other?,
            };
            for m in msgs {
                match m.message_type {
                    MessageType::PIPELINE_OUTPUT => {
                        o.count += 1;
                        o.bytes += m.data.len();
                        if keep {
                            o.outputs.push(m.text().into_owned());
                        }
                    }
                    MessageType::ERROR_RECORD => o
                        .errors
                        .push(ErrorRecord::parse(&m.text()).expect("error record")),
                    MessageType::WARNING_RECORD => o
                        .warnings
                        .push(messages::parse_informational_record(&m.text()).expect("warning")),
                    MessageType::PIPELINE_STATE => {
                        o.state = Some(messages::parse_pipeline_state(&m.text()).expect("state"))
                    }
                    _ => {}
                }
            }
            if done || o.state.is_some() {
                o.largest_response = self.largest_response;
                return Ok(o);
            }
        }
    }

    pub async fn run(&mut self, pipeline: &CreatePipeline, keep: bool) -> Result<Outcome, Failure> {
        let id = self.start(pipeline).await?;
        self.finish(&id, keep).await
    }

    pub async fn signal(&mut self, id: &str, code: &str) -> Result<String, Failure> {
        let body =
            format!(r#"<rsp:Signal CommandId="{id}"><rsp:Code>{code}</rsp:Code></rsp:Signal>"#);
        self.post(&format!("{SHELL}/Signal"), true, "PT20S", &body)
            .await
    }

    pub async fn close(&mut self) -> Result<(), Failure> {
        self.post(
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
            true,
            "PT20S",
            "",
        )
        .await
        .map(|_| ())
    }
}

/// How long a Receive may wait, as `OperationTimeout` text.
pub fn timeout(d: Duration) -> String {
    format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
}
