//! Who gets a device's notice: the mailbox the device syncs (its primary SMTP address), with a
//! copy to the organization's admin recipients when configured.

use lettre::message::Mailbox;

use super::message::Recipients;
use crate::plugin::types;

/// Why a notice has nobody to go to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("device {device_id} has no mailbox address to notify")]
    NoMailbox { device_id: String },
    #[error("device {device_id}: `{address}` is not a mail address")]
    BadAddress { device_id: String, address: String },
}

/// The device's mailbox in `To` — Exchange's primary SMTP address of the mailbox it syncs,
/// else the resolved user's — and `admins` in `Cc` (minus the user, who needs no copy).
pub fn recipients(
    device: &types::DeviceContext,
    admins: &[Mailbox],
) -> Result<Recipients, RecipientError> {
    let device_id = &device.eas.device_id;
    let address = [
        device.eas.mailbox.as_str(),
        device.user.as_ref().map_or("", |u| u.primary_smtp.as_str()),
    ]
    .into_iter()
    .map(str::trim)
    .find(|a| !a.is_empty())
    .ok_or_else(|| RecipientError::NoMailbox {
        device_id: device_id.clone(),
    })?;
    let to = Mailbox::new(
        None,
        address.parse().map_err(|_| RecipientError::BadAddress {
            device_id: device_id.clone(),
            address: address.to_owned(),
        })?,
    );
    let mut cc: Vec<Mailbox> = Vec::new();
    for admin in admins {
        let same = |m: &Mailbox| {
            let (a, b): (&str, &str) = (m.email.as_ref(), admin.email.as_ref());
            a.eq_ignore_ascii_case(b)
        };
        if !same(&to) && !cc.iter().any(same) {
            cc.push(admin.clone());
        }
    }
    Ok(Recipients { to, cc })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(mailbox: &str, primary: Option<&str>) -> types::DeviceContext {
        let mut d = crate::plugin::loaded::sample_notice().device;
        d.eas.mailbox = mailbox.into();
        d.user = primary.map(|p| types::User {
            user_principal_name: "upn@contoso.com".into(),
            primary_smtp: p.into(),
            groups: Vec::new(),
        });
        d
    }

    #[test]
    fn picks_the_mailbox_then_the_user_and_copies_admins() {
        let admins: Vec<Mailbox> = [
            "MDM <mdm@contoso.com>",
            "alice@contoso.com",
            "mdm@contoso.com",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let r = recipients(&device("alice@contoso.com", None), &admins).unwrap();
        assert_eq!(r.to.email.to_string(), "alice@contoso.com");
        // The user is not copied to themselves, and each admin once.
        assert_eq!(r.cc.len(), 1);
        assert_eq!(r.cc[0].to_string(), "MDM <mdm@contoso.com>");

        let r = recipients(&device("", Some("bob@contoso.com")), &[]).unwrap();
        assert_eq!(r.to.email.to_string(), "bob@contoso.com");
        assert!(r.cc.is_empty());

        assert_eq!(
            recipients(&device(" ", None), &admins),
            Err(RecipientError::NoMailbox {
                device_id: "APPLF17ABCDE12345".into()
            })
        );
        assert!(matches!(
            recipients(&device("not an address", None), &[]),
            Err(RecipientError::BadAddress { .. })
        ));
    }
}
