//! A rendered notice becomes a mail: the template's subject, HTML and text wrapped into an
//! RFC 5322 `multipart/alternative` message (text first, HTML second, as RFC 2046 orders them:
//! the last part a reader understands is the one shown), UTF-8, with a Message-ID that depends
//! only on the notice id — so every retry of one notice carries the same Message-ID and the
//! receiving side can tell a duplicate.
//!
//! The MIME encoding itself (RFC 2047 subjects, quoted-printable or base64 bodies, header
//! folding) is lettre's.

use std::fmt;
use std::time::SystemTime;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use sha2::{Digest as _, Sha256};

use crate::plugin::types;

/// Identifies one notice for as long as it lives (outbox row, retries, the Message-ID).
///
/// Either derived from what makes a notice ([`NoticeId::derive`]: organization, device, the
/// state it is about and the sync that decided it) or given by the caller ([`NoticeId::new`],
/// e.g. an outbox key). The text is restricted to `A-Z a-z 0-9 - _ .` so it fits a Message-ID
/// as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoticeId(String);

/// Why a text is not a [`NoticeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a notice id: 1 to 64 characters out of A-Z, a-z, 0-9, `-`, `_`, `.`, not starting or ending with `.`"
)]
pub struct BadNoticeId(pub String);

impl NoticeId {
    /// The longest id accepted (a Message-ID's left part should stay well below a line).
    pub const MAX_LEN: usize = 64;

    pub fn new(id: impl Into<String>) -> Result<Self, BadNoticeId> {
        let id = id.into();
        let valid = (1..=Self::MAX_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !id.starts_with('.')
            && !id.ends_with('.')
            && !id.contains("..");
        if valid {
            Ok(NoticeId(id))
        } else {
            Err(BadNoticeId(id))
        }
    }

    /// The id of the notice about `device_id` of `organization` entering `state` (e.g.
    /// `quarantine`), decided by sync `sync_id`: the same inputs always give the same id, so a
    /// notice recreated after a crash is recognized as the one already recorded or sent.
    pub fn derive(organization: &str, device_id: &str, state: &str, sync_id: &str) -> Self {
        let mut hash = Sha256::new();
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        for part in [organization, device_id, state, sync_id] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        NoticeId(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<notice.{id}@{domain}>`: the Message-ID of this notice's mail from `domain` (the
    /// sender's domain, which makes it globally unique as RFC 5322 asks).
    pub fn message_id(&self, domain: &str) -> String {
        format!("<notice.{}@{}>", self.0, domain)
    }
}

impl fmt::Display for NoticeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who gets a notice: the user in `To`, admins in `Cc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients {
    pub to: Mailbox,
    pub cc: Vec<Mailbox>,
}

/// A notice ready to go: everything any channel needs to deliver it.
#[derive(Debug, Clone)]
pub struct OutgoingNotice {
    pub id: NoticeId,
    pub from: Mailbox,
    pub recipients: Recipients,
    /// What the template rendered.
    pub rendered: types::Message,
    /// The `Date` header: when the notice was recorded, so retries don't change it.
    pub date: SystemTime,
}

/// Why a notice cannot become a mail.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("notice {id}: cannot build the mail: {source}")]
    Build {
        id: NoticeId,
        #[source]
        source: lettre::error::Error,
    },
}

impl OutgoingNotice {
    /// The Message-ID this notice's mail carries (always the same for one notice and sender).
    pub fn message_id(&self) -> String {
        self.id.message_id(self.from.email.domain())
    }

    /// The MIME message. The subject is made one line first: the template host already
    /// refuses line breaks, but a header written from a plugin's output must not be able to
    /// add headers whoever called this.
    pub fn to_mime(&self) -> Result<Message, MessageError> {
        let mut builder = Message::builder()
            .message_id(Some(self.message_id()))
            .date(self.date)
            .from(self.from.clone())
            .to(self.recipients.to.clone())
            .subject(one_line(&self.rendered.subject));
        for cc in &self.recipients.cc {
            builder = builder.cc(cc.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                self.rendered.text.clone(),
                self.rendered.html.clone(),
            ))
            .map_err(|source| MessageError::Build {
                id: self.id.clone(),
                source,
            })
    }
}

/// `text` with every control character (CR, LF, tab, …) replaced by a space, and runs of
/// whitespace collapsed, trimmed.
pub fn one_line(text: &str) -> String {
    let replaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    replaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    use mail_parser::{MessageParser, MimeHeaders};

    fn notice(subject: &str) -> OutgoingNotice {
        OutgoingNotice {
            id: NoticeId::derive("contoso", "APPL123", "quarantine", "sync-1"),
            from: "IT Helpdesk <noreply@contoso.com>".parse().unwrap(),
            recipients: Recipients {
                to: "alice@contoso.com".parse().unwrap(),
                cc: vec!["mdm-admins@contoso.com".parse().unwrap()],
            },
            rendered: types::Message {
                subject: subject.to_owned(),
                html: "<p>Your <b>iPhone</b> was quarantined.</p>".into(),
                text: "Your iPhone was quarantined.\nEnroll: https://portal.example/".into(),
            },
            date: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600),
        }
    }

    #[test]
    fn notice_ids_are_stable_and_distinct() {
        let a = NoticeId::derive("contoso", "DEV1", "quarantine", "7");
        assert_eq!(a, NoticeId::derive("contoso", "DEV1", "quarantine", "7"));
        assert_eq!(a.as_str().len(), 32);
        for other in [
            NoticeId::derive("contoso", "DEV1", "block", "7"),
            NoticeId::derive("contoso", "DEV1", "quarantine", "8"),
            NoticeId::derive("contoso", "DEV", "1quarantine", "7"),
            NoticeId::derive("fabrikam", "DEV1", "quarantine", "7"),
        ] {
            assert_ne!(a, other);
        }
        assert_eq!(
            a.message_id("contoso.com"),
            format!("<notice.{a}@contoso.com>")
        );
        assert!(NoticeId::new("outbox-42").is_ok());
        for bad in ["", "a b", "x@y", "<x>", ".x", "x.", "a..b", &"x".repeat(65)] {
            assert!(NoticeId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builds_multipart_alternative_with_the_headers() {
        let n = notice("Ihr Gerät wurde gesperrt – ✓");
        let raw = n.to_mime().unwrap().formatted();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains("MIME-Version: 1.0\r\n"), "{text}");
        // Non-ASCII subjects are RFC 2047 encoded; the raw header is ASCII.
        let subject_line = text.lines().find(|l| l.starts_with("Subject:")).unwrap();
        assert!(subject_line.is_ascii() && subject_line.contains("=?utf-8?"));
        let m = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(m.subject(), Some("Ihr Gerät wurde gesperrt – ✓"));
        assert_eq!(
            m.message_id(),
            Some(format!("notice.{}@contoso.com", n.id).as_str())
        );
        assert_eq!(m.date().unwrap().to_timestamp(), 1_735_689_600);
        assert_eq!(
            m.from().unwrap().first().unwrap().address(),
            Some("noreply@contoso.com")
        );
        assert_eq!(
            m.to().unwrap().first().unwrap().address(),
            Some("alice@contoso.com")
        );
        assert_eq!(
            m.cc().unwrap().first().unwrap().address(),
            Some("mdm-admins@contoso.com")
        );
        let ct = m.content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("alternative"))
        );
        assert_eq!(m.text_body.len(), 1);
        assert_eq!(m.html_body.len(), 1);
        assert_eq!(
            m.body_text(0).unwrap().trim_end(),
            n.rendered.text.replace('\n', "\r\n")
        );
        assert!(m.body_html(0).unwrap().contains("<b>iPhone</b>"));
        // The parts are in the order text, HTML.
        let parts: Vec<_> = m
            .parts
            .iter()
            .filter_map(|p| p.content_type())
            .map(|c| c.subtype().unwrap_or("").to_owned())
            .collect();
        assert_eq!(parts, ["alternative", "plain", "html"]);
        // Retrying builds the same Message-ID.
        let again = notice("other subject").to_mime().unwrap().formatted();
        let again = MessageParser::default().parse(&again).unwrap();
        assert_eq!(again.message_id(), m.message_id());
    }

    #[test]
    fn a_subject_cannot_inject_headers() {
        for evil in [
            "Hi\r\nBcc: attacker@evil.example",
            "Hi\nBcc: attacker@evil.example",
            "Hi\rBcc: attacker@evil.example",
            "Hi\r\n\r\n<html>smuggled body",
            "Hi\u{0}\u{b}Bcc: attacker@evil.example",
        ] {
            let raw = notice(evil).to_mime().unwrap().formatted();
            let text = String::from_utf8(raw.clone()).unwrap();
            let head = text.split("\r\n\r\n").next().unwrap();
            assert!(
                !head
                    .lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
                "{head}"
            );
            assert_eq!(head.matches("Subject:").count(), 1, "{head}");
            let m = MessageParser::default().parse(&raw).unwrap();
            assert!(m.bcc().is_none());
            let subject = m.subject().unwrap();
            assert!(subject.starts_with("Hi "), "{subject:?}");
            assert!(!subject.contains(['\r', '\n']), "{subject:?}");
            // The envelope is From/To/Cc only.
            let envelope = notice(evil).to_mime().unwrap();
            let to: Vec<String> = envelope
                .envelope()
                .to()
                .iter()
                .map(|a| a.to_string())
                .collect();
            assert_eq!(to, ["alice@contoso.com", "mdm-admins@contoso.com"]);
        }
        assert_eq!(one_line("  a\r\n\tb  c "), "a b c");
    }
}
