//! Putting a notice together from an organization's settings: what the template plugin is
//! asked to render (with the right remediation link), and, from its answer, the mail to send
//! (sender, recipients, Message-ID). The notify stage of a sync goes device → [`notice`] →
//! template → [`outgoing`] → channel.
//!
//! [`notice`]: NoticeSettings::notice
//! [`outgoing`]: NoticeSettings::outgoing

use std::collections::BTreeMap;
use std::time::SystemTime;

use lettre::message::Mailbox;

use super::message::{NoticeId, OutgoingNotice};
use super::recipients::{RecipientError, recipients};
use super::remediation::remediation_url;
use crate::config::OrgNotify;
use crate::plugin::types;

/// One organization's notice settings, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeSettings {
    pub organization: String,
    pub from: Mailbox,
    pub admin_recipients: Vec<Mailbox>,
    pub remediation_url: String,
    pub remediation_urls: BTreeMap<String, String>,
}

/// An address in the settings that does not parse (the configuration check prevents it for
/// settings loaded from a file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: `{value}` is not a mail address")]
pub struct BadAddress {
    pub field: &'static str,
    pub value: String,
}

impl NoticeSettings {
    /// `organization`'s settings from the configuration (`Notify::for_organization`).
    pub fn new(organization: &str, config: &OrgNotify) -> Result<Self, BadAddress> {
        let parse = |field: &'static str, value: &str| {
            value.parse::<Mailbox>().map_err(|_| BadAddress {
                field,
                value: value.to_owned(),
            })
        };
        Ok(NoticeSettings {
            organization: organization.to_owned(),
            from: parse("from", &config.from)?,
            admin_recipients: config
                .admin_recipients
                .iter()
                .map(|a| parse("admin_recipients", a))
                .collect::<Result<_, _>>()?,
            remediation_url: config.remediation_url.clone(),
            remediation_urls: config.remediation_urls.clone(),
        })
    }

    /// What the template renders for `device` and `decision`: the remediation link is the
    /// device platform's when one is configured. `locale` is the user's BCP 47 tag (empty:
    /// the template's default).
    pub fn notice(
        &self,
        device: &types::DeviceContext,
        decision: &types::Decision,
        locale: &str,
    ) -> types::Notice {
        types::Notice {
            organization: self.organization.clone(),
            device: device.clone(),
            decision: decision.clone(),
            remediation_url: remediation_url(&self.remediation_url, &self.remediation_urls, device)
                .to_owned(),
            locale: locale.to_owned(),
        }
    }

    /// The mail of notice `id` about `device`, as the template `rendered` it, dated `date` (when
    /// the notice was recorded, so that a retry carries the same date).
    pub fn outgoing(
        &self,
        id: NoticeId,
        device: &types::DeviceContext,
        rendered: types::Message,
        date: SystemTime,
    ) -> Result<OutgoingNotice, RecipientError> {
        Ok(OutgoingNotice {
            id,
            from: self.from.clone(),
            recipients: recipients(device, &self.admin_recipients)?,
            rendered,
            date,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::loaded::sample_notice;

    #[test]
    fn composes_the_template_input_and_the_mail() {
        let config = OrgNotify {
            from: "Contoso IT <noreply@contoso.com>".into(),
            admin_recipients: vec!["mdm@contoso.com".into()],
            remediation_url: "https://general.example/".into(),
            remediation_urls: BTreeMap::from([("ios".into(), "https://ios.example/".into())]),
        };
        let settings = NoticeSettings::new("Contoso", &config).unwrap();
        let sample = sample_notice();
        let notice = settings.notice(&sample.device, &sample.decision, "de-DE");
        assert_eq!(notice.remediation_url, "https://ios.example/");
        assert_eq!(notice.organization, "Contoso");
        assert_eq!(notice.locale, "de-DE");

        let rendered = types::Message {
            subject: "s".into(),
            html: "<p>h</p>".into(),
            text: "t".into(),
        };
        let id = NoticeId::new("outbox-1").unwrap();
        let out = settings
            .outgoing(id, &sample.device, rendered, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(out.recipients.to.email.to_string(), "alice@contoso.com");
        assert_eq!(out.recipients.cc.len(), 1);
        assert_eq!(out.message_id(), "<notice.outbox-1@contoso.com>");

        let bad = OrgNotify {
            admin_recipients: vec!["nobody".into()],
            ..config
        };
        assert_eq!(
            NoticeSettings::new("Contoso", &bad).unwrap_err().field,
            "admin_recipients"
        );
    }
}
