//! The wire-specific part of the Exchange client, behind one enum: how one attempt of a
//! cmdlet reaches one CAS and what it came to ([`Attempt`]). Everything around an attempt —
//! the CAS pool, the bound of requests in flight, throttling waits, failover, the listing's
//! restarts, counters — is the transport-neutral [`super::ExchangeClient`]'s.
//!
//! A second transport adds a variant to [`Wire`], [`Prepared`], [`Credential`] and
//! [`Continuation`], and the arms of the `match`es below.

use std::time::Duration;

use super::ExchangeError;
use super::cas::CasPool;
use super::rest::{self, RestCredential, RestWire};
use crate::model::Parameters;

/// How the client reaches Exchange.
#[derive(Debug)]
pub(super) enum Wire {
    /// The admin API's `InvokeCommand`.
    Rest(RestWire),
}

/// A cmdlet ready to send, rendered once for all its attempts and pages.
#[derive(Debug)]
pub(super) enum Prepared {
    /// The `InvokeCommand` body.
    Rest(Vec<u8>),
}

/// What an attempt is sent with.
#[derive(Debug)]
pub(super) enum Credential {
    Rest(RestCredential),
}

/// Where a listing goes on after a page.
#[derive(Debug, Clone)]
pub(super) enum Continuation {
    /// REST: the path and query of `@odata.nextLink`. It names the listing, not the CAS: it is
    /// sent to whichever CAS serves, so a failover mid-listing goes on where it was.
    Link(String),
}

impl Continuation {
    /// The CAS the listing's remainder can only come from, if any. A transport that streams
    /// one pipeline's output (remote PowerShell) cannot move a listing: when that CAS fails,
    /// the client starts the listing over on another ([`super::Listed::Restarted`]).
    pub(super) fn bound_to(&self) -> Option<&str> {
        match self {
            Continuation::Link(_) => None,
        }
    }
}

/// The request an attempt makes: a cmdlet's first page, or the rest of its listing.
#[derive(Debug, Clone)]
pub(super) enum Step {
    First,
    Next(Continuation),
}

/// After a page, as the wire read it.
#[derive(Debug)]
pub(super) enum Next {
    /// The listing is complete.
    Last,
    /// More pages follow.
    More(Continuation),
    /// The page's frame (around its objects) cannot be read. The client decodes the objects
    /// first, so that a bad object is named rather than the frame it broke.
    Unreadable(ExchangeError),
    /// A continuation is there but must not be followed (e.g. a link to an unknown host).
    BadLink(ExchangeError),
}

/// What one attempt of a cmdlet on one CAS came to.
#[derive(Debug)]
pub(super) enum Attempt {
    /// An answer: the page's objects as JSON text `{"value":[…]}` (decoded by the client with
    /// `net::record`'s checks, on the blocking pool), and where the listing goes on.
    Page { objects: Vec<u8>, next: Next },
    /// Exchange is throttling: wait (`retry_after` if it said) and try again, with fewer
    /// requests in flight.
    Throttled {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The CAS failed; `sent`: the request may have reached it (a write may have been applied).
    CasFailed { reason: String, sent: bool },
    /// The credential was refused.
    Unauthorized(ExchangeError),
    /// Exchange refused the cmdlet, or its answer is not Exchange's.
    Error(ExchangeError),
}

impl Wire {
    pub(super) fn prepare(&self, cmdlet: &str, parameters: &Parameters) -> Prepared {
        match self {
            Wire::Rest(_) => Prepared::Rest(rest::invoke_body(cmdlet, parameters)),
        }
    }

    pub(super) async fn credential(&self, cmdlet: &str) -> Result<Credential, ExchangeError> {
        match self {
            Wire::Rest(w) => w.credential(cmdlet).await.map(Credential::Rest),
        }
    }

    /// After [`Attempt::Unauthorized`]: a renewed credential to try once more, or `None`.
    pub(super) async fn renew(
        &self,
        refused: &Credential,
        cmdlet: &str,
    ) -> Result<Option<Credential>, ExchangeError> {
        match (self, refused) {
            (Wire::Rest(w), Credential::Rest(c)) => {
                Ok(w.renew(c, cmdlet).await?.map(Credential::Rest))
            }
        }
    }

    /// One attempt of `step` of the prepared cmdlet on the CAS `base`.
    pub(super) async fn attempt(
        &self,
        credential: &Credential,
        cmdlet: &str,
        prepared: &Prepared,
        step: &Step,
        base: &str,
        pool: &CasPool,
    ) -> Attempt {
        match (self, credential, prepared) {
            (Wire::Rest(w), Credential::Rest(c), Prepared::Rest(body)) => {
                let path = match step {
                    Step::First => w.first_path(),
                    Step::Next(Continuation::Link(path)) => path.clone(),
                };
                w.attempt(c, cmdlet, base, &path, body, pool).await
            }
        }
    }

    /// The refusal of a continuation that may be cured by starting the listing over (REST:
    /// an expired or invalid skip token).
    pub(super) fn refused_continuation<'e>(
        &self,
        e: &'e ExchangeError,
    ) -> Option<&'e super::CmdletFailure> {
        match self {
            Wire::Rest(_) => rest::refused_page_link(e),
        }
    }
}
