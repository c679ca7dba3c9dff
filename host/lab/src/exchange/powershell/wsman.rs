//! WS-Management over SOAP 1.2 as the remote PowerShell endpoint speaks it (MS-WSMV): reading a
//! request's addressing headers and body, writing responses and faults.

use easgate_psrp::xml::{self, Element, XmlError, escape_into};

pub(super) const RESOURCE_URI: &str = "http://schemas.microsoft.com/powershell/Microsoft.Exchange";

const TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/";
const SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/";

/// The operations of the PowerShell shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Create,
    Delete,
    Command,
    Receive,
    Send,
    Signal,
    Other,
}

impl Action {
    fn from_uri(uri: &str) -> Self {
        match (uri.strip_prefix(TRANSFER), uri.strip_prefix(SHELL)) {
            (Some("Create"), _) => Action::Create,
            (Some("Delete"), _) => Action::Delete,
            (_, Some("Command")) => Action::Command,
            (_, Some("Receive")) => Action::Receive,
            (_, Some("Send")) => Action::Send,
            (_, Some("Signal")) => Action::Signal,
            _ => Action::Other,
        }
    }

    /// The response's `a:Action`.
    pub fn response_uri(self) -> String {
        match self {
            Action::Create => format!("{TRANSFER}CreateResponse"),
            Action::Delete => format!("{TRANSFER}DeleteResponse"),
            Action::Command => format!("{SHELL}CommandResponse"),
            Action::Receive => format!("{SHELL}ReceiveResponse"),
            Action::Send => format!("{SHELL}SendResponse"),
            Action::Signal => format!("{SHELL}SignalResponse"),
            Action::Other => "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault".to_owned(),
        }
    }
}

/// A parsed request.
#[derive(Debug)]
pub(super) struct Request {
    pub action: Action,
    pub action_uri: String,
    pub message_id: String,
    pub resource_uri: String,
    pub shell_id: Option<String>,
    pub max_envelope: usize,
    pub operation_timeout: std::time::Duration,
    pub body: Element,
}

/// What WS-Management answers when the client does not say (`MaxEnvelopeSize` 150 KiB,
/// `OperationTimeout` 60 s).
pub(super) const DEFAULT_ENVELOPE: usize = 153_600;
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads `PT20S`, `PT20.500S`, `PT1M`, `P0DT0H0M5S` (`xs:duration`, days and smaller).
pub(super) fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim().strip_prefix('P')?;
    let (days, time) = match s.split_once('T') {
        Some((d, t)) => (d, t),
        None => (s, ""),
    };
    let mut secs = 0f64;
    if let Some(d) = days.strip_suffix('D') {
        secs += d.parse::<f64>().ok()? * 86_400.0;
    } else if !days.is_empty() {
        return None;
    }
    let mut num = String::new();
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' | 'M' | 'S' => {
                let n: f64 = num.parse().ok()?;
                num.clear();
                secs += n * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
            }
            _ => return None,
        }
    }
    (num.is_empty() && secs.is_finite() && secs >= 0.0)
        .then(|| std::time::Duration::from_secs_f64(secs))
}

pub(super) fn parse_request(text: &str) -> Result<Request, XmlError> {
    let mut env = xml::parse(text)?;
    // Moved out, not cloned: a `Send` or `Command` body carries a whole base64 fragment.
    let mut take = |name: &str| {
        env.children
            .iter()
            .position(|c| c.name == name)
            .map(|i| env.children.swap_remove(i))
            .unwrap_or_default()
    };
    let header = take("Header");
    let body = take("Body");
    let text_of = |name: &str| header.child(name).map(|e| e.text.trim().to_owned());
    let action_uri = text_of("Action").unwrap_or_default();
    let shell_id = header
        .child("SelectorSet")
        .and_then(|s| {
            s.children_named("Selector")
                .find(|e| e.attr("Name") == Some("ShellId"))
        })
        .map(|e| e.text.trim().to_owned());
    Ok(Request {
        action: Action::from_uri(&action_uri),
        action_uri,
        message_id: text_of("MessageID").unwrap_or_default(),
        resource_uri: text_of("ResourceURI").unwrap_or_default(),
        shell_id,
        max_envelope: text_of("MaxEnvelopeSize")
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_ENVELOPE),
        operation_timeout: text_of("OperationTimeout")
            .and_then(|s| parse_duration(&s))
            .unwrap_or(DEFAULT_TIMEOUT),
        body,
    })
}

const NAMESPACES: &str = concat!(
    r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" "#,
    r#"xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" "#,
    r#"xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" "#,
    r#"xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" "#,
    r#"xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd""#,
);

/// Bytes of a response envelope around its streams (headers, `ReceiveResponse`, `CommandState`),
/// with room to spare: what `MaxEnvelopeSize` must leave for the base64 of the fragments.
pub(super) const ENVELOPE_OVERHEAD: usize = 2048;

/// A response envelope with `body` (already XML).
pub(super) fn envelope(action: &str, relates_to: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    out.push_str("<s:Envelope xml:lang=\"en-US\" ");
    out.push_str(NAMESPACES);
    out.push_str("><s:Header><a:Action>");
    escape_into(&mut out, action);
    out.push_str("</a:Action><a:MessageID>uuid:");
    out.push_str(&easgate_psrp::Guid::new_v4().to_string().to_uppercase());
    out.push_str("</a:MessageID><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><a:RelatesTo>");
    escape_into(&mut out, relates_to);
    out.push_str("</a:RelatesTo></s:Header><s:Body>");
    out.push_str(body);
    out.push_str("</s:Body></s:Envelope>");
    out
}

/// A WS-Management fault: SOAP code, WS-Management subcode, the Windows error code and message.
#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub code: &'static str,
    pub subcode: &'static str,
    pub wsman_code: u32,
    pub message: String,
}

impl Fault {
    /// `Receive` found nothing to send within `OperationTimeout`.
    pub fn timed_out() -> Self {
        Fault {
            code: "s:Receiver",
            subcode: "w:TimedOut",
            wsman_code: 2_150_858_793,
            message: "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.".into(),
        }
    }

    pub fn unknown_resource(uri: &str) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "w:DestinationUnreachable",
            wsman_code: 2_150_858_770,
            message: format!(
                "The WS-Management service cannot process the request. The resource URI ({uri}) was not found in the WS-Management catalog. The catalog contains the metadata that describes resources, or logical endpoints."
            ),
        }
    }

    pub fn shell_not_found(id: &str) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "w:InvalidSelectors",
            wsman_code: 2_150_858_843,
            message: format!(
                "The request for the Windows Remote Shell with ShellId {id} failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation."
            ),
        }
    }

    pub fn action_not_supported(action: &str) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "a:ActionNotSupported",
            wsman_code: 2_150_858_757,
            message: format!(
                "The WS-Management service cannot process the request. The action {action} is not supported by the service."
            ),
        }
    }

    pub fn bad_request(detail: impl std::fmt::Display) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "w:SchemaValidationError",
            wsman_code: 2_150_858_817,
            message: format!(
                "The WS-Management service cannot process the request because the XML is invalid: {detail}"
            ),
        }
    }

    /// `PowerShellMaxConcurrency` shells of this user are open.
    pub fn max_shells(limit: usize) -> Self {
        Fault {
            code: "s:Receiver",
            subcode: "w:QuotaLimit",
            // ERROR_WSMAN_QUOTA_MAX_SHELLS_PPQ, as WinRM reports it.
            wsman_code: 2_150_859_173,
            message: format!(
                "The WS-Management service cannot process the request. This user is allowed a maximum number of {limit} concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user."
            ),
        }
    }

    /// `PowerShellMaxCmdlets` per `PowerShellMaxCmdletsTimePeriod` exceeded.
    pub fn user_load_quota(requests: u32, seconds: u32, wait_ms: u64) -> Self {
        Fault {
            code: "s:Receiver",
            subcode: "w:QuotaLimit",
            // Not confirmed against a real server; clients match the message and subcode.
            wsman_code: 2_150_859_172,
            message: format!(
                "The WS-Management service cannot process the request. The user load quota of {requests} requests per {seconds} seconds has been exceeded. Send future requests at a slower rate or raise the quota for this user. The next request from this user will not be approved for at least {wait_ms} milliseconds."
            ),
        }
    }

    pub fn to_envelope(&self, relates_to: &str, machine: &str) -> String {
        let mut body = String::with_capacity(1024);
        body.push_str("<s:Fault><s:Code><s:Value>");
        body.push_str(self.code);
        body.push_str("</s:Value><s:Subcode><s:Value>");
        body.push_str(self.subcode);
        body.push_str("</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang=\"en-US\">");
        escape_into(&mut body, &self.message);
        body.push_str("</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f=\"http://schemas.microsoft.com/wbem/wsman/1/wsmanfault\" Code=\"");
        body.push_str(&self.wsman_code.to_string());
        body.push_str("\" Machine=\"");
        escape_into(&mut body, machine);
        body.push_str("\"><f:Message>");
        escape_into(&mut body, &self.message);
        body.push_str(" </f:Message></f:WSManFault></s:Detail></s:Fault>");
        envelope(
            "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
            relates_to,
            &body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_clients_send_them() {
        use std::time::Duration;
        assert_eq!(parse_duration("PT20S"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("PT0.500S"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("PT1M5S"), Some(Duration::from_secs(65)));
        assert_eq!(parse_duration("P1DT1H"), Some(Duration::from_secs(90_000)));
        assert_eq!(parse_duration("20"), None);
        assert_eq!(parse_duration("PT5"), None);
    }

    #[test]
    fn reads_a_pypsrp_receive() {
        let text = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><wsa:Action s:mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive</wsa:Action><wsman:MaxEnvelopeSize s:mustUnderstand="true">153600</wsman:MaxEnvelopeSize><wsa:MessageID>uuid:1A2B</wsa:MessageID><wsman:OperationTimeout>PT20S</wsman:OperationTimeout><wsman:ResourceURI s:mustUnderstand="true">http://schemas.microsoft.com/powershell/Microsoft.Exchange</wsman:ResourceURI><wsman:SelectorSet><wsman:Selector Name="ShellId">0E2A</wsman:Selector></wsman:SelectorSet></s:Header><s:Body><rsp:Receive><rsp:DesiredStream CommandId="C1">stdout</rsp:DesiredStream></rsp:Receive></s:Body></s:Envelope>"#;
        let r = parse_request(text).unwrap();
        assert_eq!(r.action, Action::Receive);
        assert_eq!(r.message_id, "uuid:1A2B");
        assert_eq!(r.resource_uri, RESOURCE_URI);
        assert_eq!(r.shell_id.as_deref(), Some("0E2A"));
        assert_eq!(r.max_envelope, 153_600);
        assert_eq!(r.operation_timeout, std::time::Duration::from_secs(20));
        assert_eq!(
            r.body.find("DesiredStream").unwrap().attr("CommandId"),
            Some("C1")
        );
    }

    #[test]
    fn faults_carry_the_code_clients_retry_on() {
        let f = Fault::timed_out().to_envelope("uuid:1", "CAS01");
        let e = xml::parse(&f).unwrap();
        let fault = e.path(&["Body", "Fault"]).unwrap();
        assert_eq!(
            fault.path(&["Code", "Subcode", "Value"]).unwrap().text,
            "w:TimedOut"
        );
        assert_eq!(
            fault.path(&["Detail", "WSManFault"]).unwrap().attr("Code"),
            Some("2150858793")
        );
    }
}
