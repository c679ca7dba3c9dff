//! WS-Management (MS-WSMV) envelopes of the remote shell operations PSRP rides on, and the
//! parts of their answers the client reads.
//!
//! A runspace pool is a WinRS shell of resource `…/powershell/Microsoft.Exchange`: `Create`
//! opens it (carrying the first PSRP fragments as `creationXml`), `Command` starts a pipeline
//! in it, `Send` carries further fragments, `Receive` fetches output (pool-wide or of one
//! pipeline), `Signal` stops a pipeline and `Delete` closes the shell. Envelopes are written
//! by hand (a handful of fixed shapes); answers are read with quick-xml by local name, since
//! servers choose their own prefixes.

use std::fmt::Write as _;

use base64::Engine as _;
use quick_xml::events::Event;

/// The shell resource of Exchange's remote PowerShell (`-ConfigurationName Microsoft.Exchange`).
pub const RESOURCE_URI: &str = "http://schemas.microsoft.com/powershell/Microsoft.Exchange";
/// The PSRP protocol version the client asks for (`protocolversion` option).
pub const PROTOCOL_VERSION: &str = "2.3";
/// The largest envelope we accept and announce. 500 KiB is what Exchange 2016 and later
/// allow; a smaller value means more `Receive` round trips for a big listing.
pub const MAX_ENVELOPE: usize = 512_000;
/// The WS-Management fault of a `Receive` that waited `OperationTimeout` without output: not
/// an error, only a sign to ask again.
pub const FAULT_TIMED_OUT: &str = "2150858793";
/// The state of a pipeline that finished (its last output is in the same answer).
pub const STATE_DONE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";
/// Signal that stops a running pipeline.
pub const SIGNAL_TERMINATE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate";

/// The operations the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Command,
    Send,
    Receive,
    Signal,
    Delete,
}

impl Action {
    fn uri(self) -> &'static str {
        match self {
            Action::Create => "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
            Action::Delete => "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
            Action::Command => "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command",
            Action::Send => "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send",
            Action::Receive => "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive",
            Action::Signal => "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal",
        }
    }

    /// For logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "Create",
            Action::Delete => "Delete",
            Action::Command => "Command",
            Action::Send => "Send",
            Action::Receive => "Receive",
            Action::Signal => "Signal",
        }
    }
}

/// What every envelope of one shell has in common.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The endpoint URL (`wsa:To`).
    pub to: &'a str,
    /// `None` only for `Create`.
    pub shell_id: Option<&'a str>,
    /// `wsman:OperationTimeout`: how long the server may hold a `Receive`.
    pub timeout_secs: u32,
}

/// `data` in base64, appended to `out`.
fn b64_into(out: &mut String, data: &[u8]) {
    base64::engine::general_purpose::STANDARD.encode_string(data, out);
}

/// Room for `data` in base64 and the markup around it.
fn b64_room(data: &[u8]) -> usize {
    data.len().div_ceil(3) * 4 + 256
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// A random (version 4) UUID in upper case, as Windows writes them: a message's id only
/// needs to be unique.
pub fn new_uuid() -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut b: [u8; 16] = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // Written digit by digit: two envelopes a write make this a hot path.
    let mut out = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(x >> 4)]));
        out.push(char::from(HEX[usize::from(x & 0x0f)]));
    }
    out
}

/// One envelope: header with `options` (`Name`, value, `MustComply`), then the body `body`
/// writes (about `body_len` bytes) in place: a pipeline's fragments go from bytes to base64 in
/// the envelope itself, with no string of their own (two envelopes a write).
fn envelope(
    t: &Target<'_>,
    action: Action,
    options: &[(&str, &str, bool)],
    body_len: usize,
    body: impl FnOnce(&mut String),
) -> String {
    let mut out = String::with_capacity(1400 + body_len);
    out.push_str(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:wsmv="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header>"#,
    );
    let _ = write!(
        out,
        r#"<wsa:Action s:mustUnderstand="true">{}</wsa:Action><wsa:To>{}</wsa:To><wsman:ResourceURI s:mustUnderstand="true">{RESOURCE_URI}</wsman:ResourceURI><wsa:ReplyTo><wsa:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:Address></wsa:ReplyTo><wsa:MessageID>uuid:{}</wsa:MessageID><wsman:MaxEnvelopeSize s:mustUnderstand="true">{MAX_ENVELOPE}</wsman:MaxEnvelopeSize><wsman:Locale xml:lang="en-US" s:mustUnderstand="false"/><wsmv:DataLocale xml:lang="en-US" s:mustUnderstand="false"/><wsman:OperationTimeout>PT{}S</wsman:OperationTimeout>"#,
        action.uri(),
        esc(t.to),
        new_uuid(),
        t.timeout_secs,
    );
    if let Some(id) = t.shell_id {
        let _ = write!(
            out,
            r#"<wsman:SelectorSet><wsman:Selector Name="ShellId">{}</wsman:Selector></wsman:SelectorSet>"#,
            esc(id)
        );
    }
    if !options.is_empty() {
        out.push_str(r#"<wsman:OptionSet s:mustUnderstand="true">"#);
        for (name, value, comply) in options {
            let _ = write!(
                out,
                r#"<wsman:Option Name="{}"{}>{}</wsman:Option>"#,
                esc(name),
                if *comply { r#" MustComply="true""# } else { "" },
                esc(value)
            );
        }
        out.push_str("</wsman:OptionSet>");
    }
    out.push_str("</s:Header><s:Body>");
    body(&mut out);
    out.push_str("</s:Body></s:Envelope>");
    out
}

/// Opens a runspace pool: a shell whose `creationXml` is the first fragment(s) of
/// SESSION_CAPABILITY and INIT_RUNSPACEPOOL. `shell_id` is the pool's id (the server keeps it).
pub fn create(t: &Target<'_>, shell_id: &str, creation: &[u8]) -> String {
    envelope(
        t,
        Action::Create,
        &[("protocolversion", PROTOCOL_VERSION, true)],
        b64_room(creation),
        |out| {
            let _ = write!(
                out,
                r#"<rsp:Shell ShellId="{}"><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams><creationXml xmlns="http://schemas.microsoft.com/powershell">"#,
                esc(shell_id)
            );
            b64_into(out, creation);
            out.push_str("</creationXml></rsp:Shell>");
        },
    )
}

/// Starts a pipeline `command_id` whose first fragment(s) of CREATE_PIPELINE are `arguments`.
pub fn command(t: &Target<'_>, command_id: &str, arguments: &[u8]) -> String {
    envelope(
        t,
        Action::Command,
        &[("WINRS_SKIP_CMD_SHELL", "False", false)],
        b64_room(arguments),
        |out| {
            let _ = write!(
                out,
                r#"<rsp:CommandLine CommandId="{}"><rsp:Command></rsp:Command><rsp:Arguments>"#,
                esc(command_id)
            );
            b64_into(out, arguments);
            out.push_str("</rsp:Arguments></rsp:CommandLine>");
        },
    )
}

/// Further fragments for the pool (`command_id` `None`) or a pipeline.
pub fn send(t: &Target<'_>, command_id: Option<&str>, data: &[u8]) -> String {
    envelope(t, Action::Send, &[], b64_room(data), |out| {
        match command_id {
            Some(id) => {
                let _ = write!(
                    out,
                    r#"<rsp:Send><rsp:Stream Name="stdin" CommandId="{}">"#,
                    esc(id)
                );
            }
            None => out.push_str(r#"<rsp:Send><rsp:Stream Name="stdin">"#),
        }
        b64_into(out, data);
        out.push_str("</rsp:Stream></rsp:Send>");
    })
}

/// Asks for output of the pool (`command_id` `None`) or of a pipeline.
pub fn receive(t: &Target<'_>, command_id: Option<&str>) -> String {
    envelope(
        t,
        Action::Receive,
        &[("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True", false)],
        160,
        |out| match command_id {
            Some(id) => {
                let _ = write!(
                    out,
                    r#"<rsp:Receive><rsp:DesiredStream CommandId="{}">stdout</rsp:DesiredStream></rsp:Receive>"#,
                    esc(id)
                );
            }
            None => out.push_str(
                "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>",
            ),
        },
    )
}

/// Sends `code` to pipeline `command_id`.
pub fn signal(t: &Target<'_>, command_id: &str, code: &str) -> String {
    envelope(t, Action::Signal, &[], 200, |out| {
        let _ = write!(
            out,
            r#"<rsp:Signal CommandId="{}"><rsp:Code>{}</rsp:Code></rsp:Signal>"#,
            esc(command_id),
            esc(code)
        );
    })
}

/// Closes the shell (the runspace pool and everything running in it).
pub fn delete(t: &Target<'_>) -> String {
    envelope(t, Action::Delete, &[], 0, |_| {})
}

/// A SOAP fault, as WinRM and Exchange send them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// The `WSManFault` code (`2150858793`) when there is one, else the SOAP subcode
    /// (`w:TimedOut`) or code.
    pub code: String,
    /// The `WSManFault` message (with any provider fault text), else the SOAP reason.
    pub message: String,
}

impl Fault {
    /// A `Receive` that only timed out waiting for output.
    pub fn is_timeout(&self) -> bool {
        self.code == FAULT_TIMED_OUT || self.code.ends_with(":TimedOut")
    }
}

/// One base64 `rsp:Stream` of a `ReceiveResponse`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub command_id: Option<String>,
    pub data: Vec<u8>,
}

/// What the client reads from an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub fault: Option<Fault>,
    /// `rsp:ShellId` of a `CreateResponse` (or its `ShellId` selector).
    pub shell_id: Option<String>,
    /// `rsp:CommandId` of a `CommandResponse`.
    pub command_id: Option<String>,
    pub streams: Vec<Stream>,
    /// `rsp:CommandState`: (its `CommandId`, its `State` URI).
    pub command_state: Option<(Option<String>, String)>,
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadAnswer(pub String);

/// Reads an answer's envelope.
pub fn parse(text: &str) -> Result<Answer, BadAnswer> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut reading = Reading::default();
    // Element local names from the root down to the current one, as far as the answer's
    // reading cares (see `known`): no allocation per element.
    let mut path: Vec<&'static str> = Vec::new();
    // Text of the element being read (entity references resolved).
    let mut text_buf = String::new();
    let mut saw_envelope = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| BadAnswer(format!("not XML at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::Start(_) | Event::Empty(_) => {
                let (e, empty) = match event {
                    Event::Start(e) => (e, false),
                    Event::Empty(e) => (e, true),
                    _ => unreachable!("matched above"),
                };
                let qname = e.name();
                let local_name = local(qname.as_ref());
                let name = known(local_name);
                if path.is_empty() {
                    if name != "Envelope" {
                        return Err(BadAnswer(format!(
                            "the root element is `{local_name}`, not a SOAP Envelope"
                        )));
                    }
                    saw_envelope = true;
                }
                reading.open(name, &e);
                text_buf.clear();
                if !empty {
                    path.push(name);
                } else {
                    reading.close(name, &path, "")?;
                }
            }
            Event::Text(t) => text_buf.push_str(&t.xml10_content()),
            Event::CData(t) => text_buf.push_str(&t),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => text_buf.push(c),
                _ => text_buf.push_str(match &*r.xml10_content() {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                }),
            },
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                reading.close(name, &path, &text_buf)?;
                text_buf.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_envelope {
        return Err(BadAnswer("empty answer, no SOAP Envelope".into()));
    }
    Ok(reading.finish(&path))
}

/// The local part of a qualified name (`rsp:Stream` → `Stream`).
fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

/// The local names [`Reading`] looks at, as themselves; every other name as `""`.
fn known(name: &str) -> &'static str {
    match name {
        "Envelope" => "Envelope",
        "Stream" => "Stream",
        "Selector" => "Selector",
        "CommandState" => "CommandState",
        "WSManFault" => "WSManFault",
        "ShellId" => "ShellId",
        "Shell" => "Shell",
        "CommandId" => "CommandId",
        "CommandResponse" => "CommandResponse",
        "Value" => "Value",
        "Subcode" => "Subcode",
        "Text" => "Text",
        "Reason" => "Reason",
        "Fault" => "Fault",
        "Message" => "Message",
        "ProviderFault" => "ProviderFault",
        _ => "",
    }
}

/// What [`parse`] has read so far: the answer, and what an element's attributes said until the
/// element closes.
#[derive(Default)]
struct Reading {
    answer: Answer,
    // Attributes of interest of the open element: Name, CommandId, Code, State.
    stream_command: Option<String>,
    selector_name: Option<String>,
    soap_code: String,
    soap_reason: String,
    wsman_code: Option<String>,
    wsman_message: String,
}

impl Reading {
    /// Keeps the attributes of interest of an element that opens.
    fn open(&mut self, name: &str, e: &quick_xml::events::BytesStart<'_>) {
        let attr = |key: &str| -> Option<String> {
            e.attributes().flatten().find_map(|a| {
                (local(a.key.as_ref()) == key).then(|| {
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map(|v| v.into_owned())
                        .unwrap_or_default()
                })
            })
        };
        match name {
            "Stream" => self.stream_command = attr("CommandId"),
            "Selector" => self.selector_name = attr("Name"),
            "CommandState" => {
                self.answer.command_state =
                    Some((attr("CommandId"), attr("State").unwrap_or_default()));
            }
            "WSManFault" => self.wsman_code = attr("Code"),
            _ => {}
        }
    }

    /// Takes in an element that closes, with its text.
    fn close(&mut self, name: &str, parents: &[&str], text: &str) -> Result<(), BadAnswer> {
        let parent = parents.last().copied().unwrap_or("");
        let in_fault = parents.contains(&"Fault");
        let answer = &mut self.answer;
        match name {
            "Stream" => {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| BadAnswer(format!("rsp:Stream is not base64: {e}")))?;
                if !data.is_empty() {
                    answer.streams.push(Stream {
                        command_id: self.stream_command.take(),
                        data,
                    });
                }
                self.stream_command = None;
            }
            "ShellId" if parent == "Shell" => answer.shell_id = Some(text.trim().to_owned()),
            "Selector" => {
                let name = self.selector_name.take();
                if name.as_deref() == Some("ShellId") && answer.shell_id.is_none() {
                    answer.shell_id = Some(text.trim().to_owned());
                }
            }
            "CommandId" if parent == "CommandResponse" => {
                answer.command_id = Some(text.trim().to_owned());
            }
            // The innermost code wins: Code/Subcode/Value is more precise than Code/Value.
            "Value" if in_fault && (parent == "Subcode" || self.soap_code.is_empty()) => {
                self.soap_code = text.trim().to_owned();
            }
            "Text" if in_fault && parent == "Reason" => self.soap_reason.push_str(text),
            "Message" | "ProviderFault"
                if parents.contains(&"WSManFault") && !text.trim().is_empty() =>
            {
                if !self.wsman_message.is_empty() {
                    self.wsman_message.push(' ');
                }
                self.wsman_message.push_str(text.trim());
            }
            _ => {}
        }
        Ok(())
    }

    /// The answer, with its fault when the envelope held one (`path`: elements left open).
    fn finish(self, path: &[&str]) -> Answer {
        let mut answer = self.answer;
        if path.contains(&"Fault") || !self.soap_code.is_empty() || self.wsman_code.is_some() {
            answer.fault = Some(Fault {
                code: self.wsman_code.unwrap_or(self.soap_code),
                message: if self.wsman_message.trim().is_empty() {
                    self.soap_reason.trim().to_owned()
                } else {
                    self.wsman_message.trim().to_owned()
                },
            });
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHELL_NS: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";

    fn target() -> Target<'static> {
        Target {
            to: "http://127.0.0.1:5985/PowerShell/",
            shell_id: Some("2D6534D0-6B12-40E3-B773-CBA26459CFA8"),
            timeout_secs: 20,
        }
    }

    /// A message id is a version-4 UUID in Windows' upper-case form.
    #[test]
    fn message_ids_are_upper_case_version_4_uuids() {
        let a = new_uuid();
        assert_eq!(a.len(), 36, "{a}");
        for (i, c) in a.chars().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{a}");
            } else {
                assert!(matches!(c, '0'..='9' | 'A'..='F'), "{a}");
            }
        }
        assert_eq!(&a[14..15], "4", "{a}");
        assert!(matches!(&a[19..20], "8" | "9" | "A" | "B"), "{a}");
        assert_ne!(a, new_uuid());
    }

    /// Only the names the reader looks at are kept; a foreign root is still named in full.
    #[test]
    fn names_the_reader_ignores_do_not_count() {
        assert_eq!(known("CommandResponse"), "CommandResponse");
        assert_eq!(known("Body"), "");
        let e = parse(r#"<x:Root xmlns:x="urn:x"/>"#).unwrap_err();
        assert_eq!(e.0, "the root element is `Root`, not a SOAP Envelope");
    }

    /// The envelopes are XML this module's own reader (and so any reader) accepts, and carry
    /// the header WinRM insists on.
    #[test]
    fn envelopes_are_well_formed_and_carry_the_shell() {
        let t = target();
        for (action, text) in [
            (
                Action::Create,
                create(
                    &Target {
                        shell_id: None,
                        ..t.clone()
                    },
                    "ABC",
                    b"\x00\x01",
                ),
            ),
            (Action::Command, command(&t, "C1", b"frag")),
            (Action::Send, send(&t, Some("C1"), b"frag")),
            (Action::Receive, receive(&t, None)),
            (Action::Receive, receive(&t, Some("C1"))),
            (Action::Signal, signal(&t, "C1", SIGNAL_TERMINATE)),
            (Action::Delete, delete(&t)),
        ] {
            let answer = parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", action.name()));
            assert!(text.contains(action.uri()), "{}", action.name());
            assert!(text.contains(RESOURCE_URI));
            assert!(text.contains("<wsa:To>http://127.0.0.1:5985/PowerShell/</wsa:To>"));
            if action == Action::Create {
                assert!(text.contains(
                    r#"<wsman:Option Name="protocolversion" MustComply="true">2.3</wsman:Option>"#
                ));
                assert!(text.contains(">AAE=</creationXml>"), "{text}");
                assert_eq!(answer.shell_id, None);
            } else {
                // The selector names the shell, and reading it back finds it.
                assert_eq!(
                    answer.shell_id.as_deref(),
                    Some("2D6534D0-6B12-40E3-B773-CBA26459CFA8"),
                    "{}",
                    action.name()
                );
            }
        }
        assert!(receive(&t, Some("C1")).contains(r#"<rsp:DesiredStream CommandId="C1">stdout<"#));
    }

    #[test]
    fn reads_a_receive_response_with_streams_and_state() {
        let text = format!(
            r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:rsp="{SHELL_NS}"><s:Header/><s:Body><rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="C1">AAEC</rsp:Stream><rsp:Stream Name="stdout" CommandId="C1"></rsp:Stream><rsp:Stream Name="stdout" CommandId="C1">AwQ=</rsp:Stream><rsp:CommandState CommandId="C1" State="{STATE_DONE}"><rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse></s:Body></s:Envelope>"#
        );
        let a = parse(&text).unwrap();
        assert_eq!(a.fault, None);
        assert_eq!(
            a.streams,
            vec![
                Stream {
                    command_id: Some("C1".into()),
                    data: vec![0, 1, 2]
                },
                Stream {
                    command_id: Some("C1".into()),
                    data: vec![3, 4]
                },
            ]
        );
        assert_eq!(
            a.command_state,
            Some((Some("C1".into()), STATE_DONE.into()))
        );
    }

    #[test]
    fn reads_create_and_command_responses() {
        let create = format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="{SHELL_NS}"><s:Body><x:ResourceCreated xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer"><w:ReferenceParameters><w:SelectorSet><w:Selector Name="ShellId">S-1</w:Selector></w:SelectorSet></w:ReferenceParameters></x:ResourceCreated><rsp:Shell><rsp:ShellId>S-1</rsp:ShellId></rsp:Shell></s:Body></s:Envelope>"#
        );
        assert_eq!(parse(&create).unwrap().shell_id.as_deref(), Some("S-1"));
        let command = format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:rsp="{SHELL_NS}"><s:Body><rsp:CommandResponse><rsp:CommandId>C-9</rsp:CommandId></rsp:CommandResponse></s:Body></s:Envelope>"#
        );
        assert_eq!(parse(&command).unwrap().command_id.as_deref(), Some("C-9"));
    }

    #[test]
    fn reads_faults_wsman_code_first() {
        // (envelope body, code, message, a receive timeout)
        let cases = [
            (
                r#"<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot complete the operation within the time specified in OperationTimeout.</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858793" Machine="cas01"><f:Message>The WS-Management service cannot complete the operation.</f:Message></f:WSManFault></s:Detail></s:Fault>"#,
                "2150858793",
                "The WS-Management service cannot complete the operation.",
                true,
            ),
            (
                r#"<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:InternalError</s:Value></s:Subcode></s:Code><s:Reason><s:Text>Fail &amp; &quot;stop&quot;</s:Text></s:Reason></s:Fault>"#,
                "w:InternalError",
                "Fail & \"stop\"",
                false,
            ),
            (
                r#"<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2144108250"><f:Message><f:ProviderFault provider="microsoft.powershell">Fault of the shell limit</f:ProviderFault></f:Message></f:WSManFault></s:Detail></s:Fault>"#,
                "2144108250",
                "Fault of the shell limit",
                false,
            ),
        ];
        for (body, code, message, timeout) in cases {
            let text = format!(
                r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>{body}</s:Body></s:Envelope>"#
            );
            let f = parse(&text).unwrap().fault.expect("a fault");
            assert_eq!(f.code, code);
            assert_eq!(f.message, message);
            assert_eq!(f.is_timeout(), timeout);
        }
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        for text in [
            "",
            "<html><body>404</body></html>",
            "<s:Envelope><a></s:Envelope>",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
