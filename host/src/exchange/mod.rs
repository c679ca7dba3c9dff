//! Exchange: running cmdlets through the admin API's `InvokeCommand` endpoint.
//!
//! The sync stages see one thing, the [`CmdletTransport`] trait: run a typed cmdlet, get its typed
//! objects (all pages) or a typed [`ExchangeError`]. [`ExchangeClient`] is the REST transport
//! (`POST {cas}/adminapi/beta/{tenant}/InvokeCommand`), and does the rest behind that one method:
//!
//! - `cmdlets` / `models`: the typed parameters and objects.
//! - `cas`: the pool of Client Access Servers, failover and return to the primary.
//! - `limit`: the bounded, throttling-adaptive pool of requests in flight.
//! - `client`: paging, retries, tokens, error classification.
//!
//! It knows nothing of devices' fate: what to change is the `sync` stage's business.

pub mod cas;
mod client;
pub mod cmdlets;
mod limit;
pub mod models;
pub mod psrp;

use std::future::Future;
use std::time::Duration;

pub use cas::CasHealth;
pub use client::{ExchangeClient, ExchangeClientBuilder, Listed, PageSink};
pub use cmdlets::Cmdlet;

use crate::net::SetupError;
use crate::net::token::TokenError;

/// Runs cmdlets. Implemented by [`ExchangeClient`]; tests of later stages may put the lab's or
/// another transport behind it.
pub trait CmdletTransport: Send + Sync {
    /// Runs `cmdlet` to completion: every page of its result, in order.
    fn run<C: Cmdlet>(
        &self,
        cmdlet: &C,
    ) -> impl Future<Output = Result<Vec<C::Output>, ExchangeError>> + Send;
}

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
    /// The .NET exception type from `details[0]`, e.g. `…ManagementObjectNotFoundException`
    /// (empty when Exchange sent none).
    pub exception: String,
    /// The PowerShell error category, e.g. `InvalidArgument`.
    pub category: String,
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
