//! Exchange: running cmdlets, whatever the wire.
//!
//! What the sync sees is one concrete type, [`ExchangeClient`], and only these of its methods:
//! [`run`](ExchangeClient::run) (a cmdlet's every object), [`run_paged`](ExchangeClient::run_paged)
//! (a listing page by page into a [`PageSink`], told [`Listed::Restarted`] when it starts
//! over), [`run_all`](ExchangeClient::run_all) (a batch of writes through the bounded,
//! throttling-adaptive pool), and its counters and CAS health (`requests_sent`, `observe`,
//! `cas_health`, `parallel_commands`, `effective_concurrency`). A cmdlet is a [`Cmdlet`]: a
//! name and typed [`Parameters`](crate::model::Parameters); a planned
//! [`Command`](crate::model::Command) is one, run as the journal holds it.
//!
//! Inside, the client is two layers:
//!
//! - transport-neutral (`client`, `cas`, `limit`): the pool of Client Access Servers with
//!   discovery, failover and return to the primary; the bound of requests in flight; the
//!   retry loop over throttling, failing CASes and refused credentials; a listing's pages and
//!   restarts; the counters and the observer.
//! - the wire (`wire`): one attempt of a cmdlet on one CAS, classified into an `Attempt`, as
//!   `[organization.exchange] transport` says: `rest` (`POST {cas}/adminapi/beta/{tenant}/
//!   InvokeCommand`, where typed parameters become `CmdletInput` JSON) or `powershell`
//!   ([`psrp`]: WS-Management + PSRP at `{cas}/PowerShell/`, a long-lived runspace pool per
//!   CAS, each cmdlet a pipeline whose output comes as pages of JSON `{"value":[…]}` with a
//!   `Continuation` bound to that CAS, so a failover starts the listing over). Nothing above
//!   the wire differs between the two.
//!
//! - `cmdlets` / `models`: the typed cmdlets and objects.
//!
//! It knows nothing of devices' fate: what to change is the `sync` stage's business.

pub mod cas;
mod client;
pub mod cmdlets;
mod limit;
pub mod models;
pub mod psrp;
pub mod rest;
mod wire;

use std::time::Duration;

pub use cas::CasHealth;
pub use client::{ExchangeClient, ExchangeClientBuilder, Listed, PageSink};
pub use cmdlets::Cmdlet;

use crate::net::SetupError;
use crate::net::token::TokenError;

/// Why a cmdlet did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Exchange ran the cmdlet and refused it (not found, bad parameter, denied, …).
    #[error(transparent)]
    Cmdlet(Box<CmdletFailure>),
    /// Still throttled after every retry.
    #[error("{cmdlet}: still throttled by Exchange after {attempts} attempts: {message}")]
    Throttled {
        cmdlet: String,
        attempts: u32,
        message: String,
    },
    /// No CAS answered for `unavailable_timeout`.
    #[error(
        "{cmdlet}: no Client Access Server answered for {waited:?} (tried {}); last failure: {last}{}",
        .tried.join(", "),
        if *.failover { "" } else { " (cas_failover is off: only the first of cas_urls is used)" }
    )]
    Unavailable {
        cmdlet: String,
        tried: Vec<String>,
        waited: Duration,
        last: String,
        failover: bool,
    },
    /// The answer does not have the shape of the admin API's.
    #[error("{cmdlet} on {endpoint}: bad response: {field}: {problem}")]
    BadResponse {
        cmdlet: String,
        endpoint: String,
        /// Path of the field in the JSON answer (`value[3].DeviceId`), or the header / part of
        /// the answer that was wrong (`Content-Type`, `.` for the whole body).
        field: String,
        problem: String,
    },
    /// A listing's next page link (its `$skiptoken`) was refused as expired or invalid again
    /// after the listing had been started over `restarts` times.
    #[error(
        "{cmdlet}: a page link was refused again after starting the listing over {restarts} times: {refusal}"
    )]
    PageLinkRefused {
        cmdlet: String,
        restarts: u32,
        #[source]
        refusal: Box<CmdletFailure>,
    },
    /// The remote PowerShell endpoint refused the session or is not one (a wrong password,
    /// path or role), named with the CAS and the fix.
    #[error("{cmdlet}: {problem}")]
    Endpoint {
        cmdlet: String,
        cas: String,
        problem: String,
    },
    #[error("{cmdlet}: no Exchange token: {source}")]
    Token {
        cmdlet: String,
        #[source]
        source: TokenError,
    },
}

/// Exchange's answer to a cmdlet it refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{cmdlet} on {cas}: HTTP {status} {exception}: {message}")]
pub struct CmdletFailure {
    pub cmdlet: String,
    pub cas: String,
    pub status: u16,
    /// `error.code`, e.g. `NotFound`.
    pub code: String,
    /// The .NET exception type, e.g. `…ManagementObjectNotFoundException` (empty when Exchange
    /// sent none): over REST the middle part of `details[0].message`
    /// (`Ex6F9304|<exception>|<text>`), over remote PowerShell the ErrorRecord's.
    pub exception: String,
    /// The PowerShell error category, e.g. `InvalidArgument`: remote PowerShell only (empty
    /// over REST, whose error body carries none).
    pub category: String,
    /// What Exchange says went wrong: over REST the text of `details[0].message` (a failed
    /// cmdlet's `error.message` is only "Error executing cmdlet"), else `error.message`.
    pub message: String,
}

impl ExchangeError {
    /// Exchange's "couldn't be found" (`ManagementObjectNotFoundException`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ExchangeError::Cmdlet(f)
            if f.exception.ends_with("ManagementObjectNotFoundException") || f.code == "NotFound")
    }

    /// Exchange's refusal to `Add` a value already in a list: what repeating an applied
    /// `@{Add=…}` gets. After an attempt that may have been applied without an answer, it
    /// means the change is in place.
    pub fn is_repeat_of_applied(&self) -> bool {
        matches!(self, ExchangeError::Cmdlet(f)
            if f.exception == "System.InvalidOperationException" && f.message.contains("already present"))
    }
}
