//! Delivering a notice: the [`NoticeChannel`] trait every way of sending implements (SMTP now;
//! Graph `sendMail` and EWS are meant to follow), and [`SmtpChannel`], submission over SMTP
//! with STARTTLS or implicit TLS (certificates always verified) and optional AUTH.
//!
//! A failed send says whether trying again can help ([`SendError::is_permanent`]): a recipient
//! the server refuses with a 5xx stays refused, while a server that is down, slow, or answers
//! 4xx may take the notice later, and a failure of the channel itself (TLS, credentials, a
//! relay's policy refusing our sender) is fixed by its operator, after which the waiting
//! notices must still go out. That is all the outbox needs to choose between retrying
//! and giving up ([`super::retry`]).
//!
//! The SMTP password lives in a [`Secret`] inside lettre's transport; neither this module's
//! errors nor its `Debug` output carry it.

use std::future::Future;
use std::pin::Pin;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::message::{MessageError, OutgoingNotice};
use crate::config::{SecretError, Smtp, SmtpSecurity, is_loopback_host};

/// A notice the channel's server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The Message-ID the mail carried.
    pub message_id: String,
    /// The server's acceptance (e.g. `250 2.0.0 Ok: queued as 4F…`), for the audit trail.
    pub response: String,
}

/// Why a notice was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused the notice for good (5xx), e.g. the recipient does not exist.
    #[error("{server} refused the notice: {code} {detail}")]
    Rejected {
        server: String,
        code: u16,
        detail: String,
    },
    /// The server refused the notice for now (4xx): greylisting, a full mailbox, a busy server.
    #[error("{server} deferred the notice: {code} {detail}")]
    Deferred {
        server: String,
        code: u16,
        detail: String,
    },
    /// No conversation with the server: connection refused, reset, timed out, name unknown.
    #[error("cannot reach {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// TLS could not be set up: the server does not offer STARTTLS, or its certificate does
    /// not verify. Nothing was sent in clear.
    #[error("no secure connection to {server}: {detail}")]
    Tls { server: String, detail: String },
    /// The server refused by policy (5.7.x other than authentication), e.g. "relaying
    /// denied" or a sender it does not accept: as a rule the configuration's fault (`from`,
    /// the relay's rules), not this notice's, so it is retried like a transient failure and
    /// the notices wait for the fix instead of being given up one by one.
    #[error("{server} refused the notice by policy: {code} {detail}")]
    Policy {
        server: String,
        code: u16,
        detail: String,
    },
    /// The server refused the credentials (or offers no mechanism we accept).
    #[error("{server} refused to authenticate the connector: {detail}")]
    Auth { server: String, detail: String },
    /// The conversation went wrong otherwise (a malformed answer, an unexpected step).
    #[error("SMTP with {server} failed: {detail}")]
    Protocol { server: String, detail: String },
    /// The notice cannot become a mail at all.
    #[error(transparent)]
    Message(#[from] MessageError),
}

impl SendError {
    /// Whether sending this notice again cannot succeed. Failures of the channel itself (down,
    /// TLS, credentials) are not permanent: fixing the server or the configuration makes the
    /// waiting notices go out; a refusal of this notice (5xx) or an unbuildable one is.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Rejected { .. } | SendError::Message(_))
    }
}

/// A boxed send, so that channels can be used as `dyn NoticeChannel`.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Delivered, SendError>> + Send + 'a>>;

/// A way of delivering notices.
pub trait NoticeChannel: Send + Sync {
    /// Where notices go, for logs and status (`smtp+starttls://smtp.contoso.com:587`); never
    /// carries credentials.
    fn describe(&self) -> String;

    /// Delivers one notice. Sending the same notice again sends a mail with the same
    /// Message-ID.
    fn send<'a>(&'a self, notice: &'a OutgoingNotice) -> SendFuture<'a>;
}

/// Why an SMTP channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChannelSetupError {
    #[error("notify.smtp.password: {0}")]
    Secret(#[source] SecretError),
    #[error("notify.smtp: {0}")]
    Refused(String),
}

/// Notices submitted to an SMTP server.
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Bound of one whole delivery. lettre's own timeout only bounds connecting (its async
    /// transport sets none on reads), so a server that accepts and then stays silent would
    /// hold a send forever without this.
    timeout: std::time::Duration,
    /// `host:port`, named in errors.
    server: String,
    security: SmtpSecurity,
}

impl std::fmt::Debug for SmtpChannel {
    /// The transport holds the credentials; show only where it goes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("server", &self.server)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl SmtpChannel {
    /// A channel to `smtp`'s server, greeting it as `helo_name` or else `sender_domain` (the
    /// domain of the notices' `From`). Resolves the password now. Refuses what the
    /// configuration check refuses too (plain SMTP or AUTH in clear off loopback), in case the
    /// settings were built in code.
    ///
    /// Call (and drop) it inside a Tokio runtime: the connection pool, which keeps one
    /// connection for a run's batch of notices, runs a task of its own.
    pub fn new(smtp: &Smtp, sender_domain: &str) -> Result<Self, ChannelSetupError> {
        let host = smtp.host.trim().to_owned();
        let loopback = is_loopback_host(&host);
        if smtp.security == SmtpSecurity::None && !loopback && !smtp.allow_insecure {
            return Err(ChannelSetupError::Refused(format!(
                "security \"none\" to `{host}`, which is not loopback, needs allow_insecure = true"
            )));
        }
        let credentials = match (&smtp.username, &smtp.password) {
            (Some(user), Some(password)) => {
                if smtp.security == SmtpSecurity::None && !loopback {
                    return Err(ChannelSetupError::Refused(
                        "AUTH without TLS is only allowed to loopback".into(),
                    ));
                }
                let secret = password.resolve().map_err(ChannelSetupError::Secret)?;
                Some(Credentials::new(user.clone(), secret.expose().to_owned()))
            }
            (None, None) => None,
            _ => {
                return Err(ChannelSetupError::Refused(
                    "`username` and `password` go together".into(),
                ));
            }
        };
        let tls = match smtp.security {
            SmtpSecurity::None => Tls::None,
            security => {
                let params = TlsParameters::new(host.clone())
                    .map_err(|e| ChannelSetupError::Refused(format!("TLS for `{host}`: {e}")))?;
                if security == SmtpSecurity::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let helo = smtp
            .helo_name
            .clone()
            .unwrap_or_else(|| sender_domain.to_owned());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(smtp.port())
            .tls(tls)
            .timeout(Some(smtp.timeout))
            .hello_name(ClientId::Domain(helo));
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        let server = if host.contains(':') {
            format!("[{host}]:{}", smtp.port())
        } else {
            format!("{host}:{}", smtp.port())
        };
        Ok(SmtpChannel {
            transport: builder.build(),
            timeout: smtp.timeout,
            server,
            security: smtp.security,
        })
    }

    fn classify(&self, e: &lettre::transport::smtp::Error) -> SendError {
        let server = self.server.clone();
        let detail = chain(e);
        if let Some(code) = e.status() {
            let code: u16 = code.to_string().parse().unwrap_or(0);
            // The server's own words (`5.1.1 Recipient address rejected…`), without lettre's
            // `permanent error (550): ` before them.
            let detail = std::error::Error::source(e).map_or(detail, |s| s.to_string());
            // 530 auth required, 534 mechanism too weak, 535 bad credentials, 538 encryption
            // required for the mechanism: the channel's fault, not this notice's.
            if matches!(code, 530 | 534 | 535 | 538) {
                return SendError::Auth { server, detail };
            }
            if e.is_permanent() && detail.trim_start().starts_with("5.7.") {
                return SendError::Policy {
                    server,
                    code,
                    detail,
                };
            }
            return if e.is_permanent() {
                SendError::Rejected {
                    server,
                    code,
                    detail,
                }
            } else {
                SendError::Deferred {
                    server,
                    code,
                    detail,
                }
            };
        }
        // A failed handshake (a certificate that does not verify, a server that does not speak
        // TLS) comes back from lettre as a connection error around rustls' InvalidData.
        let handshake = self.security != SmtpSecurity::None
            && std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source()).any(|s| {
                s.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
            });
        if e.is_tls() || handshake || detail.contains("STARTTLS") {
            SendError::Tls { server, detail }
        } else if detail.contains("authentication mechanism") {
            SendError::Auth { server, detail }
        } else if e.is_client() || e.is_response() {
            SendError::Protocol { server, detail }
        } else {
            SendError::Unreachable { server, detail }
        }
    }
}

/// An error and its sources, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl NoticeChannel for SmtpChannel {
    fn describe(&self) -> String {
        let scheme = match self.security {
            SmtpSecurity::Starttls => "smtp+starttls",
            SmtpSecurity::Tls => "smtps",
            SmtpSecurity::None => "smtp",
        };
        format!("{scheme}://{}", self.server)
    }

    fn send<'a>(&'a self, notice: &'a OutgoingNotice) -> SendFuture<'a> {
        Box::pin(async move {
            let message = notice.to_mime()?;
            let message_id = notice.message_id();
            let sent = tokio::time::timeout(self.timeout, self.transport.send(message)).await;
            let Ok(sent) = sent else {
                // Timing out after the server took the data but before it said so can make
                // the retry a duplicate; it then carries the same Message-ID.
                let error = SendError::Unreachable {
                    server: self.server.clone(),
                    detail: format!("no answer within {:?}", self.timeout),
                };
                tracing::debug!(notice = %notice.id, "notice not delivered: {error}");
                return Err(error);
            };
            match sent {
                Ok(response) => Ok(Delivered {
                    message_id,
                    response: format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    ),
                }),
                Err(e) => {
                    let error = self.classify(&e);
                    tracing::debug!(notice = %notice.id, "notice not delivered: {error}");
                    Err(error)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Secret, SecretSource};

    fn smtp(host: &str, security: SmtpSecurity) -> Smtp {
        Smtp {
            host: host.into(),
            port: Some(2525),
            security,
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            helo_name: None,
            allow_insecure: false,
        }
    }

    #[tokio::test]
    async fn plain_smtp_and_clear_auth_only_to_loopback() {
        assert!(SmtpChannel::new(&smtp("127.0.0.1", SmtpSecurity::None), "c.com").is_ok());
        assert!(SmtpChannel::new(&smtp("localhost", SmtpSecurity::None), "c.com").is_ok());
        let remote = smtp("smtp.contoso.com", SmtpSecurity::None);
        assert!(matches!(
            SmtpChannel::new(&remote, "c.com"),
            Err(ChannelSetupError::Refused(_))
        ));
        let allowed = Smtp {
            allow_insecure: true,
            ..remote.clone()
        };
        assert!(SmtpChannel::new(&allowed, "c.com").is_ok());
        let with_auth = Smtp {
            username: Some("easgate".into()),
            password: Some(SecretSource::Inline(Secret::new("hunter2-smtp"))),
            ..allowed
        };
        assert!(matches!(
            SmtpChannel::new(&with_auth, "c.com"),
            Err(ChannelSetupError::Refused(_))
        ));
        let tls = Smtp {
            security: SmtpSecurity::Starttls,
            ..with_auth
        };
        let channel = SmtpChannel::new(&tls, "c.com").unwrap();
        assert_eq!(channel.describe(), "smtp+starttls://smtp.contoso.com:2525");
        assert!(!format!("{channel:?}").contains("hunter2"));
        let missing = Smtp {
            password: Some(SecretSource::Env("EASGATE_TEST_SURELY_UNSET_SMTP".into())),
            ..tls
        };
        let e = SmtpChannel::new(&missing, "c.com").unwrap_err().to_string();
        assert!(e.starts_with("notify.smtp.password:"), "{e}");
    }
}
