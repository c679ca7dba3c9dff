//! The mail sink: an SMTP receiver on loopback that accepts every message and keeps it, raw
//! (RFC 5322 as received, dot-unstuffed), for tests and the `/_lab/mail` endpoint to read.
//!
//! It speaks the subset a submitting client needs on loopback — `EHLO`/`HELO`, `MAIL FROM`,
//! `RCPT TO`, `DATA`, `RSET`, `NOOP`, `QUIT` — enforces their order as a real server would
//! (so a client that skips a step fails here too), and refuses `STARTTLS` (not offered).
//!
//! Tests make it behave as real servers do: [`SmtpRules`] refuse chosen recipients at
//! `RCPT TO`, permanently (`550`, no such mailbox) or for now (`450`, mailbox busy), and can
//! demand `AUTH PLAIN` with given credentials before `MAIL`; the sink can be stopped (its port
//! then refuses connections) and started again on the same port.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::utc::Utc;

/// Longest command line accepted (RFC 5321 says 512; a little slack for long addresses).
const MAX_LINE: usize = 2048;
/// Largest message accepted, as advertised in `SIZE`.
const MAX_MESSAGE: usize = 25 * 1024 * 1024;

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedMail {
    /// Envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// Envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The message as received (headers and body, CRLF line ends), dot-unstuffed.
    pub raw: String,
    #[serde(with = "received_text")]
    pub received: Utc,
}

impl ReceivedMail {
    /// The first header `name` (unfolded), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }

    /// The body (everything after the blank line ending the headers).
    pub fn body(&self) -> &str {
        self.raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

mod received_text {
    use crate::utc::Utc;

    pub fn serialize<S: serde::Serializer>(t: &Utc, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(t, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Utc, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        Utc::parse_iso(&text).ok_or_else(|| serde::de::Error::custom("not an ISO 8601 timestamp"))
    }
}

/// Recipients the sink refuses at `RCPT TO` (compared without regard to case); everybody else
/// is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpRules {
    /// Refused for good: `550 5.1.1`, as for a mailbox that does not exist.
    pub reject: Vec<String>,
    /// Refused for now: `450 4.2.1`, as for a mailbox that is temporarily unavailable.
    pub defer: Vec<String>,
    /// Senders refused at `MAIL FROM` with `550 5.7.1`, as a relay answers a sender it does
    /// not accept mail from.
    pub refuse_senders: Vec<String>,
    /// When set, the sink offers `AUTH PLAIN` and takes mail only after these credentials
    /// (`530` before, `535` for others). The lab's own test credentials, not a secret.
    pub auth: Option<SmtpAuth>,
}

/// The one user the sink accepts when it demands authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpAuth {
    pub username: String,
    pub password: String,
}

impl SmtpRules {
    /// The refusal for `addr`, if it gets one.
    fn refusal(&self, addr: &str) -> Option<&'static str> {
        let listed = |list: &[String]| list.iter().any(|a| a.eq_ignore_ascii_case(addr));
        if listed(&self.reject) {
            Some("550 5.1.1 Recipient address rejected: no such mailbox\r\n")
        } else if listed(&self.defer) {
            Some("450 4.2.1 Mailbox temporarily unavailable, try again later\r\n")
        } else {
            None
        }
    }
}

/// Messages received so far, with a count to wait on, and the rules the sink answers by.
#[derive(Debug)]
pub(crate) struct MailStore {
    mails: Mutex<Vec<ReceivedMail>>,
    count: watch::Sender<usize>,
    rules: Mutex<SmtpRules>,
}

impl MailStore {
    pub fn new() -> Self {
        Self {
            mails: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            rules: Mutex::new(SmtpRules::default()),
        }
    }

    pub fn rules(&self) -> SmtpRules {
        self.rules.lock().expect("smtp rules").clone()
    }

    pub fn set_rules(&self, rules: SmtpRules) {
        *self.rules.lock().expect("smtp rules") = rules;
    }

    fn push(&self, mail: ReceivedMail) {
        let mut mails = self.mails.lock().expect("mail store");
        mails.push(mail);
        self.count.send_replace(mails.len());
    }

    pub fn all(&self) -> Vec<ReceivedMail> {
        self.mails.lock().expect("mail store").clone()
    }

    pub fn clear(&self) {
        self.mails.lock().expect("mail store").clear();
        self.count.send_replace(0);
    }

    /// Waits until at least `n` messages are stored; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<ReceivedMail> {
        let mut rx = self.count.subscribe();
        // The sender lives as long as the store, which outlives this borrow.
        let _ = rx.wait_for(|&c| c >= n).await;
        self.all()
    }
}

/// The sink's listener: its fixed address and, while it runs, its task.
#[derive(Debug)]
pub(crate) struct SmtpSlot {
    pub addr: std::net::SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Serializes start and stop.
    op: tokio::sync::Mutex<()>,
    /// Its port while it is stopped.
    held: crate::server::HeldPort,
}

impl SmtpSlot {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            addr,
            task: Mutex::new(None),
            op: tokio::sync::Mutex::new(()),
            held: Default::default(),
        }
    }

    pub fn running(&self) -> bool {
        self.task.lock().expect("smtp task").is_some()
    }

    /// Aborts the listener task without waiting (for `Drop`).
    pub fn abort(&self) {
        if let Some(t) = self.task.lock().expect("smtp task").take() {
            t.abort();
        }
    }
}

/// Starts the sink on `listener`, or (after a stop) on a socket bound anew to its address.
pub(crate) async fn start(
    shared: &std::sync::Arc<crate::server::Shared>,
    listener: Option<TcpListener>,
) -> Result<(), crate::server::LabError> {
    let slot = &shared.smtp;
    let _op = slot.op.lock().await;
    if slot.running() {
        return Ok(());
    }
    let listener = match listener {
        Some(l) => l,
        None => {
            slot.held.release();
            crate::server::bind_again("SMTP", slot.addr).await?
        }
    };
    let task = tokio::spawn(serve(listener, shared.clone()));
    *slot.task.lock().expect("smtp task") = Some(task);
    Ok(())
}

/// Stops the sink: when this returns its port refuses connections and its sessions are gone.
pub(crate) async fn stop(shared: &crate::server::Shared) {
    let slot = &shared.smtp;
    let _op = slot.op.lock().await;
    let task = slot.task.lock().expect("smtp task").take();
    if let Some(task) = task {
        task.abort();
        // Waiting for the cancelled task is what guarantees the socket is closed.
        let _ = task.await;
        slot.held.hold(slot.addr);
    }
}

/// Accepts connections until the task is aborted; each connection ends with the task.
async fn serve(listener: TcpListener, shared: std::sync::Arc<crate::server::Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => {
                        let shared = shared.clone();
                        connections.spawn(async move {
                            if let Err(e) = session(stream, &shared).await {
                                tracing::debug!("smtp session ended: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!("smtp sink cannot accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
            // Reap finished sessions so the set does not grow with every connection.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Strips `<…>` and any ESMTP parameters from a `MAIL FROM:`/`RCPT TO:` argument.
fn path_of(arg: &str) -> Option<String> {
    let arg = arg.trim();
    let addr = match arg.strip_prefix('<') {
        Some(rest) => rest.split_once('>')?.0,
        None => arg.split_whitespace().next()?,
    };
    Some(addr.to_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    Connected,
    Greeted,
    Mail,
    Rcpt,
}

async fn session(stream: TcpStream, shared: &crate::server::Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let host = "mail.contoso.lab";
    write
        .write_all(format!("220 {host} ESMTP easgate-lab ready\r\n").as_bytes())
        .await?;
    let mut stage = Stage::Connected;
    let mut authenticated = false;
    let mut from = String::new();
    let mut to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write.write_all(b"500 5.5.2 Line too long\r\n").await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let verb = verb.to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                stage = Stage::Greeted;
                (from, to) = (String::new(), Vec::new());
                let auth = if shared.mail.rules().auth.is_some() {
                    "250-AUTH PLAIN\r\n"
                } else {
                    ""
                };
                format!(
                    "250-{host} greets {arg}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n{auth}250 SIZE {MAX_MESSAGE}\r\n"
                )
            }
            "HELO" => {
                stage = Stage::Greeted;
                (from, to) = (String::new(), Vec::new());
                format!("250 {host}\r\n")
            }
            "MAIL" if stage == Stage::Connected => "503 5.5.1 Send HELO/EHLO first\r\n".into(),
            "MAIL" if !authenticated && shared.mail.rules().auth.is_some() => {
                "530 5.7.0 Authentication required\r\n".into()
            }
            "MAIL" => match arg
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("FROM:"))
                .and_then(|_| path_of(&arg[5..]))
            {
                Some(addr)
                    if shared
                        .mail
                        .rules()
                        .refuse_senders
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(&addr)) =>
                {
                    "550 5.7.1 Sender address rejected: not allowed to send through this relay\r\n"
                        .into()
                }
                Some(addr) => {
                    from = addr;
                    to.clear();
                    stage = Stage::Mail;
                    "250 2.1.0 Ok\r\n".into()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" if !matches!(stage, Stage::Mail | Stage::Rcpt) => {
                "503 5.5.1 Need MAIL command\r\n".into()
            }
            "RCPT" => match arg
                .get(..3)
                .filter(|p| p.eq_ignore_ascii_case("TO:"))
                .and_then(|_| path_of(&arg[3..]))
                .filter(|a| !a.is_empty())
            {
                Some(addr) => match shared.mail.rules().refusal(&addr) {
                    Some(refusal) => refusal.into(),
                    None => {
                        to.push(addr);
                        stage = Stage::Rcpt;
                        "250 2.1.5 Ok\r\n".into()
                    }
                },
                None => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into(),
            },
            "DATA" if stage != Stage::Rcpt => "503 5.5.1 Need RCPT command\r\n".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                match read_data(&mut reader).await? {
                    Some(raw) => {
                        shared.mail.push(ReceivedMail {
                            from: std::mem::take(&mut from),
                            to: std::mem::take(&mut to),
                            raw,
                            received: Utc::now(),
                        });
                        shared.counters.mail();
                        stage = Stage::Greeted;
                        "250 2.0.0 Ok: queued\r\n".into()
                    }
                    None => {
                        stage = Stage::Greeted;
                        format!("552 5.3.4 Message size exceeds fixed limit of {MAX_MESSAGE}\r\n")
                    }
                }
            }
            "RSET" => {
                if stage != Stage::Connected {
                    stage = Stage::Greeted;
                }
                (from, to) = (String::new(), Vec::new());
                "250 2.0.0 Ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            "AUTH" => match shared.mail.rules().auth {
                None => "502 5.5.1 Not offered on this loopback sink\r\n".into(),
                Some(_) if stage == Stage::Connected => "503 5.5.1 Send HELO/EHLO first\r\n".into(),
                Some(_) if authenticated => "503 5.5.1 Already authenticated\r\n".into(),
                Some(expected) => match plain_credentials(arg) {
                    None => {
                        "501 5.5.2 Syntax: AUTH PLAIN <base64 of \\0user\\0password>\r\n".into()
                    }
                    Some((user, password))
                        if user == expected.username && password == expected.password =>
                    {
                        authenticated = true;
                        "235 2.7.0 Authentication successful\r\n".into()
                    }
                    Some(_) => "535 5.7.8 Authentication credentials invalid\r\n".into(),
                },
            },
            "STARTTLS" => "502 5.5.1 Not offered on this loopback sink\r\n".into(),
            _ => "500 5.5.2 Command not recognized\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// The user and password of `PLAIN <base64>` (RFC 4616: authzid NUL authcid NUL passwd).
fn plain_credentials(arg: &str) -> Option<(String, String)> {
    let (mechanism, encoded) = arg.trim().split_once(' ')?;
    if !mechanism.eq_ignore_ascii_case("PLAIN") {
        return None;
    }
    let bytes = base64_decode(encoded.trim())?;
    let mut fields = bytes.split(|&b| b == 0);
    let (_authzid, user, password) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(password.to_vec()).ok()?,
    ))
}

/// Standard base64 with padding; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | u32::from(value(c)?);
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

/// Reads a message up to the lone `.` line; `None` when it exceeds `MAX_MESSAGE` (the rest is
/// still consumed, so the session can go on).
async fn read_data(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<String>> {
    let mut raw = Vec::new();
    let mut line = Vec::new();
    let mut too_big = false;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            break;
        }
        // Dot-unstuffing (RFC 5321 4.5.2).
        let content = line.strip_prefix(b".").unwrap_or(&line);
        if raw.len() + content.len() > MAX_MESSAGE {
            too_big = true;
        } else {
            raw.extend_from_slice(content);
        }
    }
    Ok((!too_big).then(|| String::from_utf8_lossy(&raw).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_headers() {
        assert_eq!(path_of(" <a@b.c> SIZE=100").as_deref(), Some("a@b.c"));
        assert_eq!(path_of("a@b.c").as_deref(), Some("a@b.c"));
        assert_eq!(path_of("<>").as_deref(), Some(""));
        let m = ReceivedMail {
            from: "a".into(),
            to: vec![],
            raw: "Subject: Your device\r\n  was blocked\r\nFrom: x\r\n\r\nBody".into(),
            received: Utc::from_unix(0),
        };
        assert_eq!(
            m.header("subject").as_deref(),
            Some("Your device was blocked")
        );
        assert_eq!(m.header("From").as_deref(), Some("x"));
        assert_eq!(m.header("To"), None);
        assert_eq!(m.body(), "Body");
    }

    #[test]
    fn decodes_auth_plain() {
        // "\0easgate\0s3cret", and with an authzid.
        assert_eq!(
            plain_credentials("PLAIN AGVhc2dhdGUAczNjcmV0"),
            Some(("easgate".into(), "s3cret".into()))
        );
        assert_eq!(
            plain_credentials("plain YWRtaW4AZWFzZ2F0ZQBzM2NyZXQ="),
            Some(("easgate".into(), "s3cret".into()))
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        for bad in [
            "PLAIN",
            "LOGIN AGVhc2dhdGUAczNjcmV0",
            "PLAIN AGVh!2dh",
            "PLAIN YQ==YQ==",
        ] {
            assert_eq!(plain_credentials(bad), None, "{bad}");
        }
    }
}
