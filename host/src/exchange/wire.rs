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
use super::psrp::{self, PsrpWire, Running};
use super::rest::{self, RestCredential, RestWire};
use crate::model::{Command, Parameters};

/// How the client reaches Exchange.
#[derive(Debug)]
// One per client, built once: the REST wire's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Wire {
    /// The admin API's `InvokeCommand`. Boxed: one wire per client, so its size is no matter,
    /// and the enum stays small.
    Rest(Box<RestWire>),
    /// Remote PowerShell (on-premises): pipelines in a runspace pool per CAS.
    PowerShell(PsrpWire),
}

/// A cmdlet ready to send, rendered once for all its attempts and pages.
#[derive(Debug)]
pub(super) enum Prepared {
    /// The `InvokeCommand` body.
    Rest(Vec<u8>),
    /// The command itself (each attempt renders it as CREATE_PIPELINE for its pool), and the
    /// properties to keep of its objects.
    PowerShell(Command, Option<&'static [&'static str]>),
}

/// What an attempt is sent with.
#[derive(Debug)]
pub(super) enum Credential {
    Rest(RestCredential),
    /// Basic: the user name and password live in the wire, for every request.
    PowerShell,
}

/// Where a listing goes on after a page.
#[derive(Debug, Clone)]
pub(super) enum Continuation {
    /// REST: the path and query of `@odata.nextLink`. It names the listing, not the CAS: it is
    /// sent to whichever CAS serves, so a failover mid-listing goes on where it was.
    Link(String),
    /// PowerShell: the pipeline whose output is being read, on the CAS that runs it.
    Pipeline(Running),
}

impl Continuation {
    /// The CAS the listing's remainder can only come from, if any. A transport that streams
    /// one pipeline's output (remote PowerShell) cannot move a listing: when that CAS fails,
    /// the client starts the listing over on another ([`super::Listed::Restarted`]).
    pub(super) fn bound_to(&self) -> Option<&str> {
        match self {
            Continuation::Link(_) => None,
            Continuation::Pipeline(r) => Some(r.cas()),
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
    /// `properties`: the ones the connector reads of each object, where the wire can ask for
    /// just those (remote PowerShell can; the admin API's `InvokeCommand` answers them all).
    pub(super) fn prepare(
        &self,
        cmdlet: &str,
        parameters: &Parameters,
        properties: Option<&'static [&'static str]>,
    ) -> Prepared {
        match self {
            Wire::Rest(_) => Prepared::Rest(rest::invoke_body(cmdlet, parameters)),
            Wire::PowerShell(_) => {
                Prepared::PowerShell(Command::new(cmdlet, parameters.clone()), properties)
            }
        }
    }

    pub(super) async fn credential(&self, cmdlet: &str) -> Result<Credential, ExchangeError> {
        match self {
            Wire::Rest(w) => w.credential(cmdlet).await.map(Credential::Rest),
            Wire::PowerShell(_) => Ok(Credential::PowerShell),
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
            // A password is not renewed: refused, it is wrong.
            _ => Ok(None),
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
                    Step::Next(Continuation::Pipeline(_)) => {
                        unreachable!("the REST wire makes no pipelines")
                    }
                };
                w.attempt(c, cmdlet, base, &path, body, pool).await
            }
            (
                Wire::PowerShell(w),
                Credential::PowerShell,
                Prepared::PowerShell(command, properties),
            ) => {
                let attempt = match step {
                    Step::First => w.start(base, command, *properties).await,
                    Step::Next(Continuation::Pipeline(running)) => w.next(running).await,
                    Step::Next(Continuation::Link(_)) => {
                        unreachable!("the PowerShell wire makes no page links")
                    }
                };
                match attempt {
                    psrp::Attempt::Page { objects, next } => Attempt::Page {
                        objects,
                        next: match next {
                            Some(running) => Next::More(Continuation::Pipeline(running)),
                            None => Next::Last,
                        },
                    },
                    psrp::Attempt::Throttled {
                        retry_after,
                        message,
                    } => Attempt::Throttled {
                        retry_after,
                        message,
                    },
                    psrp::Attempt::CasFailed { reason, sent } => {
                        Attempt::CasFailed { reason, sent }
                    }
                    psrp::Attempt::Unauthorized(e) => Attempt::Unauthorized(e),
                    psrp::Attempt::Error(e) => Attempt::Error(e),
                }
            }
            _ => unreachable!("a wire's credential and prepared command are its own"),
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
            // A pipeline that ended before its listing did starts the listing over.
            Wire::PowerShell(_) => psrp::interrupted_listing(e),
        }
    }

    /// Whether an attempt of `step` counts in [`super::ExchangeClient::requests_sent`]: every
    /// REST page is a request Exchange serves; a PowerShell pipeline is one command however
    /// many `Receive`s read its output, and Exchange counts it once.
    pub(super) fn counts_as_request(&self, step: &Step) -> bool {
        match self {
            Wire::Rest(_) => true,
            Wire::PowerShell(_) => matches!(step, Step::First),
        }
    }

    /// The URL to use for a CAS discovered at `base` (`https://host[:port]`), or why not.
    pub(super) fn discovered(&self, base: &str) -> Result<String, String> {
        match self {
            Wire::Rest(_) => Ok(base.to_owned()),
            Wire::PowerShell(_) => {
                if base.starts_with("http://") && !crate::config::is_loopback_url(base) {
                    return Err(format!(
                        "`{base}` is plain HTTP: Basic authentication would send the password \
                         in clear"
                    ));
                }
                Ok(format!("{base}/PowerShell/"))
            }
        }
    }

    /// Ends what the wire keeps open on the servers (PowerShell: deletes every shell).
    pub(super) async fn close(&self) -> usize {
        match self {
            Wire::Rest(_) => 0,
            Wire::PowerShell(w) => w.close().await,
        }
    }
}
