//! Notices: the mail a user gets when their device is quarantined or blocked, rendered by the
//! notice-template plugin and delivered through a channel.
//!
//! - [`message`] — a rendered notice, its recipients and its [`NoticeId`] become a MIME mail
//!   with a Message-ID derived from the id (stable across retries).
//! - [`recipients`] — who gets it: the device's mailbox, admins in Cc.
//! - [`remediation`] — which remediation link it carries (per platform when configured).
//! - [`channel`] — the [`NoticeChannel`] trait and its SMTP implementation; failures say
//!   whether they are permanent.
//! - [`retry`] — when a failed notice is tried again.
//! - [`compose`] — an organization's settings applied: the template's input, then the mail.
//!
//! Boundaries: the outbox (a notice recorded in the same transaction as its verdict, sent
//! later, never twice) is the store's; deduplication within `resend_interval` and the batch
//! cap belong to the sync's notify stage. This module delivers one notice when asked.

pub mod channel;
pub mod compose;
pub mod message;
pub mod recipients;
pub mod remediation;
pub mod retry;

/// A mail address with an optional display name (`Contoso IT <noreply@contoso.com>`); parse
/// one with `str::parse`.
pub use lettre::message::Mailbox;

pub use channel::{Delivered, NoticeChannel, SendError, SmtpChannel};
pub use compose::NoticeSettings;
pub use message::{NoticeId, OutgoingNotice, Recipients};
pub use retry::{Retry, RetryPolicy};
