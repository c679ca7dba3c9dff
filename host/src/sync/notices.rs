//! Notify, the last stage of a sync: which decided devices get a notice (recorded in the
//! outbox together with their verdicts, see [`crate::store::NoticeRequest`]), then the delivery
//! of the outbox's due notices — this run's and the earlier runs' retries — through the
//! template version pinned at the run's start and the organization's [`NoticeChannel`].
//!
//! Crash safety comes from the order: a notice is in the store before anything is sent, and
//! is marked only after the server answered. A process killed in between leaves it pending;
//! the next run sends it again under the same Message-ID (the id is the outbox key), so the
//! user gets one mail, or at worst, when the kill falls between the server's acceptance and
//! the store's update, two with one Message-ID that mail clients show as one.
//!
//! Nothing here fails a sync: a template that traps or answers badly marks its notice failed
//! with the reason; a server that is down leaves the notices pending with a next attempt time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::blocking;
use crate::config::{Notify, Organization};
use crate::graph::GraphClient;
use crate::model::{DirectoryUser, Mailbox, MailboxLanguages, ManagedDevice};
use crate::notify::channel::ChannelSetupError;
use crate::notify::compose::BadAddress;
use crate::notify::{NoticeChannel, NoticeSettings, Retry, RetryPolicy, SendError, SmtpChannel};
use crate::plugin::{NoticeTemplatePlugin, PluginErrorKind, types};
use crate::store::{NoticeAttempt, NoticeRequest, OrgId, OutboxNotice, Store, StoreError};
use crate::timestamp::unix_now;

/// Gives the active notice template; called once per run, which then keeps that version.
pub type TemplateSource = Arc<dyn Fn() -> Arc<NoticeTemplatePlugin> + Send + Sync>;

/// How an organization's notices are rendered and sent. A sync without one enqueues nothing.
#[derive(Clone)]
pub struct NoticeStage {
    pub settings: NoticeSettings,
    pub channel: Arc<dyn NoticeChannel>,
    pub template: TemplateSource,
    /// No second notice about the same device and state within this time.
    pub resend_interval: Duration,
    /// Notices attempted per run at most; the rest stay pending for the next run.
    pub max_per_run: usize,
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for NoticeStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeStage")
            .field("settings", &self.settings)
            .field("channel", &self.channel.describe())
            .field("resend_interval", &self.resend_interval)
            .field("max_per_run", &self.max_per_run)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Why an organization's notices cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum NoticeSetupError {
    #[error("organization `{org}`: {source}")]
    Address {
        org: String,
        #[source]
        source: BadAddress,
    },
    #[error(transparent)]
    Channel(#[from] ChannelSetupError),
}

impl NoticeStage {
    /// `org`'s notices as `notify` configures them, over SMTP, with the default retries. Call
    /// it inside a Tokio runtime (the SMTP channel's pool runs a task).
    pub fn from_config(
        org: &Organization,
        notify: &Notify,
        template: TemplateSource,
    ) -> Result<Self, NoticeSetupError> {
        let settings =
            NoticeSettings::new(&org.name, &notify.for_organization(org)).map_err(|source| {
                NoticeSetupError::Address {
                    org: org.name.clone(),
                    source,
                }
            })?;
        let channel = SmtpChannel::new(&notify.smtp, settings.from.email.domain())?;
        Ok(NoticeStage {
            settings,
            channel: Arc::new(channel),
            template,
            resend_interval: notify.resend_interval,
            max_per_run: notify.max_per_run,
            retry: RetryPolicy::default(),
        })
    }
}

/// What the notify stage did in one run: part of the sync's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NoticeReport {
    /// Notices recorded with this run's verdicts.
    pub queued: u64,
    /// Notices not recorded: a notice about the same device and state is recent.
    pub deduplicated: u64,
    /// Accepted by the server in this run (this run's and earlier runs' notices).
    pub sent: u64,
    /// Failed for now; they stay pending with a next attempt time.
    pub retrying: u64,
    /// Refused for good or out of attempts.
    pub given_up: u64,
    /// Not renderable or addressable (template error, bad address).
    pub failed: u64,
    /// Still pending after this run (retries not yet due, or over the per-run cap).
    pub pending: u64,
    /// The template version this run rendered with.
    pub template_digest: String,
    /// The kind of each render the template failed, for the plugin-error metrics (the
    /// messages are in `errors`).
    #[serde(skip)]
    pub template_errors: Vec<PluginErrorKind>,
    /// One line per notice that failed or will be retried.
    pub errors: Vec<String>,
}

/// Per-notice error lines kept in a report; the store has every reason.
const ERRORS_SHOWN: usize = 20;

/// Whether `error` is the channel's rather than this notice's (server down, TLS, credentials,
/// a policy refusing our sender): every further notice of the run would fail alike, each after
/// up to `smtp.timeout`, so the run stops sending and leaves them pending for the next one.
fn channel_down(error: &SendError) -> bool {
    matches!(
        error,
        SendError::Unreachable { .. }
            | SendError::Tls { .. }
            | SendError::Auth { .. }
            | SendError::Policy { .. }
    )
}

fn unix(at: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(at.max(0) as u64)
}

/// Where a notice's language comes from, in this order: the user's Graph `preferredLanguage`,
/// then the most preferred of the mailbox's Exchange `Languages`; with neither, none (the
/// template's own default). The scope groups' listing already carries `preferredLanguage` for
/// the users it shows; only the other users about to be notified are looked up
/// ([`resolve_locales`]), so the lookups follow the number of notices, not the org's size.
#[derive(Debug, Default)]
pub struct Locales {
    /// UPN (lowercase) → `preferredLanguage` of each user the scope groups' listing showed,
    /// empty where Graph has none (such a user is not looked up again).
    listed: HashMap<String, String>,
    /// The mailboxes' languages, by the mailbox's position in the inventory.
    mailboxes: MailboxLanguages,
}

/// A notice's language, or the user Graph must be asked about first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locale {
    /// The language (a BCP 47 tag; empty: none known).
    Known(String),
    /// The directory's language of `user` (a UPN, lowercase) is not known yet; `fallback` is
    /// the mailbox's, for when Graph has none.
    Ask { user: String, fallback: String },
}

impl Locales {
    /// `users`: the inventory's directory users (those with in-scope groups were listed with
    /// their language); `mailboxes`: the mailboxes' languages.
    pub fn new(users: &[DirectoryUser], mailboxes: MailboxLanguages) -> Self {
        let listed = users
            .iter()
            .filter(|u| !u.groups.is_empty() || !u.locale.is_empty())
            .map(|u| (u.user_principal_name.to_lowercase(), u.locale.clone()))
            .collect();
        Locales { listed, mailboxes }
    }

    /// The language of a notice to `mailbox`'s user; `position`: the mailbox's in the
    /// inventory. Users are keyed as discovery keys them: the UPN, else the primary address.
    pub fn of(&self, mailbox: &Mailbox, position: usize) -> Locale {
        let user = mailbox
            .user_principal_name
            .as_deref()
            .unwrap_or(&mailbox.primary_smtp)
            .trim()
            .to_lowercase();
        let fallback = self.mailboxes.get(position).to_owned();
        match self.listed.get(&user) {
            Some(listed) if !listed.is_empty() => Locale::Known(listed.clone()),
            Some(_) => Locale::Known(fallback),
            None if user.is_empty() => Locale::Known(fallback),
            None => Locale::Ask { user, fallback },
        }
    }
}

/// A notice whose user's Graph `preferredLanguage` is still to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The notice's index in the run's notices.
    pub notice: usize,
    /// UPN, lowercase.
    pub user: String,
    /// The mailbox's language, for when Graph has none.
    pub fallback: String,
}

/// User lookups in flight at once: each waits on one Graph round trip, and the client's own
/// budget paces them against Intune's limits.
const LOOKUP_LANES: usize = 4;

/// How long a run spends on lookups at most. A first sync without scope groups may notify
/// thousands of users, and a throttled Graph answers slowly: the users not looked up by then
/// get their mailbox's language rather than holding up the run's enforcement.
const LOOKUP_TIME: Duration = Duration::from_secs(30);

/// What [`resolve_locales`] asked and found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocaleLookups {
    /// Distinct users looked up.
    pub users: usize,
    /// Lookups that failed (other than "no such user"); their notices took the mailbox's
    /// language.
    pub failed: usize,
    /// Users not looked up within [`LOOKUP_TIME`]; their notices took the mailbox's language.
    pub late: usize,
}

/// Sets the language of the `unresolved` notices: the user's Graph `preferredLanguage`, read
/// with one lookup per distinct user, else the mailbox's language. A lookup that fails costs
/// only that user's directory language, never the notice or the sync.
pub async fn resolve_locales(
    graph: &GraphClient,
    notices: &mut [NoticeRequest],
    unresolved: Vec<Unresolved>,
) -> LocaleLookups {
    let users: Vec<&str> = unresolved
        .iter()
        .map(|u| u.user.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let deadline = tokio::time::Instant::now() + LOOKUP_TIME;
    let lane = |k: usize| {
        let users = &users;
        async move {
            let mut found = Vec::new();
            for &user in users.iter().skip(k).step_by(LOOKUP_LANES) {
                match tokio::time::timeout_at(deadline, graph.user(user)).await {
                    Ok(answer) => found.push((user, answer)),
                    Err(_) => break,
                }
            }
            found
        }
    };
    let (a, b, c, d) = tokio::join!(lane(0), lane(1), lane(2), lane(3));
    let answered = a.len() + b.len() + c.len() + d.len();
    let mut lookups = LocaleLookups {
        users: users.len(),
        failed: 0,
        late: users.len() - answered,
    };
    if lookups.late > 0 {
        tracing::warn!(
            late = lookups.late,
            "users' languages not looked up within {LOOKUP_TIME:?}; their notices take their mailbox's language"
        );
    }
    let mut languages: HashMap<&str, String> = HashMap::new();
    for (user, found) in a.into_iter().chain(b).chain(c).chain(d) {
        match found {
            Ok(u) => {
                if let Some(language) = u.preferred_language.filter(|l| !l.trim().is_empty()) {
                    languages.insert(user, language.trim().to_owned());
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                lookups.failed += 1;
                tracing::warn!(%user, "the user's language could not be read; the notice takes the mailbox's: {e}");
            }
        }
    }
    for u in &unresolved {
        if let Some(notice) = notices.get_mut(u.notice) {
            notice.locale = languages
                .get(u.user.as_str())
                .cloned()
                .unwrap_or_else(|| u.fallback.clone());
        }
    }
    lookups
}

/// The template's input for a notice in the outbox: the device as it was when decided.
pub fn template_input(settings: &NoticeSettings, notice: &OutboxNotice) -> types::Notice {
    let device = types::DeviceContext {
        eas: notice.exchange.to_wit(&notice.recipient),
        managed: notice.managed.as_ref().map(ManagedDevice::to_wit),
        user: notice.user_principal_name.as_ref().map(|upn| types::User {
            user_principal_name: upn.clone(),
            primary_smtp: notice.recipient.clone(),
            groups: Vec::new(),
        }),
    };
    let decision = types::Decision {
        verdict: notice.state.into(),
        reason: notice.reason.clone(),
        notify: true,
    };
    settings.notice(&device, &decision, &notice.locale)
}

/// Renders and sends `org`'s due notices (at most `stage.max_per_run`) with `template`.
pub async fn deliver(
    stage: &NoticeStage,
    template: Arc<NoticeTemplatePlugin>,
    store: &Arc<Store>,
    org: OrgId,
    report: &mut NoticeReport,
) -> Result<(), StoreError> {
    let digest = template.meta.digest.hex();
    report.template_digest = digest.clone();
    let limit = stage.max_per_run;
    let due = blocking(store, move |s| s.due_notices(org, unix_now(), limit)).await?;
    let rendered = render_all(&stage.settings, template, &due).await;
    let mut down = false;
    for (notice, rendered) in due.into_iter().zip(rendered) {
        if down {
            break;
        }
        let attempt = match rendered {
            Err((kind, error)) => {
                report.failed += 1;
                report.template_errors.push(kind);
                NoticeAttempt::Failed {
                    error: format!("template {}: {error}", &digest[..12.min(digest.len())]),
                }
            }
            Ok(message) => send(stage, &notice, message, report, &mut down).await,
        };
        note_unsent(&attempt, &notice, report);
        let (id, digest) = (notice.id.clone(), digest.clone());
        blocking(store, move |s| {
            s.notice_attempted(&id, Some(&digest), &attempt, unix_now())
        })
        .await?;
    }
    if down {
        report.errors.push(
            "the mail channel is failing: the remaining notices wait for the next sync".into(),
        );
    }
    report.pending = blocking(store, move |s| s.notice_counts(org))
        .await?
        .pending;
    Ok(())
}

/// Renders every notice of `due`. The template is synchronous Wasm: all of this run's renders
/// go to the blocking pool in one task, with a fresh instance per notice (the plugin host's
/// own isolation).
async fn render_all(
    settings: &NoticeSettings,
    template: Arc<NoticeTemplatePlugin>,
    due: &[OutboxNotice],
) -> Vec<Result<types::Message, (PluginErrorKind, String)>> {
    let inputs: Vec<types::Notice> = due.iter().map(|n| template_input(settings, n)).collect();
    tokio::task::spawn_blocking(move || {
        inputs
            .iter()
            .map(|input| {
                template
                    .render(input)
                    .map_err(|e| (e.kind(), e.to_string()))
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("the render task does not panic")
}

/// Sends one rendered notice, counting what became of it in `report`; sets `down` when the
/// channel failed in a way the next notices would too.
async fn send(
    stage: &NoticeStage,
    notice: &OutboxNotice,
    message: types::Message,
    report: &mut NoticeReport,
    down: &mut bool,
) -> NoticeAttempt {
    let device = template_input(&stage.settings, notice).device;
    let outgoing =
        match stage
            .settings
            .outgoing(notice.id.clone(), &device, message, unix(notice.created_at))
        {
            Ok(outgoing) => outgoing,
            Err(error) => {
                report.failed += 1;
                return NoticeAttempt::Failed {
                    error: error.to_string(),
                };
            }
        };
    let error = match stage.channel.send(&outgoing).await {
        Ok(delivered) => {
            report.sent += 1;
            return NoticeAttempt::Sent {
                response: delivered.response,
            };
        }
        Err(error) => error,
    };
    *down = channel_down(&error);
    match stage.retry.after_failure(notice.attempts + 1, &error) {
        Retry::After(wait) => {
            report.retrying += 1;
            NoticeAttempt::Retry {
                error: error.to_string(),
                at: unix_now() + wait.as_secs() as i64,
            }
        }
        Retry::GiveUp => {
            report.given_up += 1;
            NoticeAttempt::GiveUp {
                error: error.to_string(),
            }
        }
    }
}

/// Logs a notice that was not sent, and says why in the report (the first
/// [`ERRORS_SHOWN`]).
fn note_unsent(attempt: &NoticeAttempt, notice: &OutboxNotice, report: &mut NoticeReport) {
    match attempt {
        NoticeAttempt::Sent { .. } => {}
        NoticeAttempt::Retry { error, .. }
        | NoticeAttempt::GiveUp { error }
        | NoticeAttempt::Failed { error } => {
            tracing::warn!(notice = %notice.id, device = %notice.key, "notice not sent: {error}");
            if report.errors.len() < ERRORS_SHOWN {
                report.errors.push(format!(
                    "notice {} ({}): {error}",
                    notice.id, notice.recipient
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(identity: &str, upn: Option<&str>, smtp: &str) -> Mailbox {
        Mailbox {
            identity: identity.into(),
            primary_smtp: smtp.into(),
            user_principal_name: upn.map(Into::into),
            ..Mailbox::default()
        }
    }

    fn user(upn: &str, groups: &[&str], locale: &str) -> DirectoryUser {
        DirectoryUser {
            user_principal_name: upn.into(),
            groups: groups.iter().map(|g| (*g).into()).collect(),
            locale: locale.into(),
        }
    }

    #[test]
    fn graph_first_then_the_mailbox_and_only_unlisted_users_are_asked() {
        let users = [
            // Listed with a scope group, with a language and without.
            user("Anna@contoso.com", &["g1"], "de-AT"),
            user("bob@contoso.com", &["g1"], ""),
            // A mailbox's user no scope group lists (or an org without scope groups).
            user("carol@contoso.com", &[], ""),
        ];
        let mut mailbox_languages = MailboxLanguages::default();
        for tag in ["fr-FR", "fr-CA", "es-ES", "it-IT", "", ""] {
            mailbox_languages.push(Some(tag));
        }
        let locales = Locales::new(&users, mailbox_languages);
        let known = |l: &str| Locale::Known(l.into());
        let cases = [
            // Graph's language wins over the mailbox's.
            (
                mailbox("Anna", Some("anna@CONTOSO.com"), "a@x"),
                known("de-AT"),
            ),
            // Graph has none for a listed user: the mailbox's, no lookup.
            (
                mailbox("bob", Some("bob@contoso.com"), "b@x"),
                known("fr-CA"),
            ),
            // Not listed: ask Graph, with the mailbox's as the fallback.
            (
                mailbox("carol", Some("Carol@contoso.com"), "c@x"),
                Locale::Ask {
                    user: "carol@contoso.com".into(),
                    fallback: "es-ES".into(),
                },
            ),
            // No UPN from Exchange: the primary address names the user, as in discovery.
            (
                mailbox("dave", None, "Dave@contoso.com"),
                Locale::Ask {
                    user: "dave@contoso.com".into(),
                    fallback: "it-IT".into(),
                },
            ),
            // Neither: asked with no fallback.
            (
                mailbox("erin", None, "erin@contoso.com"),
                Locale::Ask {
                    user: "erin@contoso.com".into(),
                    fallback: String::new(),
                },
            ),
            // Nobody to ask.
            (mailbox("ghost", None, " "), known("")),
        ];
        for (position, (mailbox, want)) in cases.into_iter().enumerate() {
            assert_eq!(locales.of(&mailbox, position), want, "{}", mailbox.identity);
        }
    }
}
