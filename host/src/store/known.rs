//! What the last syncs saw of each partnership's Intune record and of each user's in-scope
//! groups, in the few fields a quick sync compares with Graph's current answer to find what
//! Intune or the directory changed without the device checking in (see the sync's
//! `discover::quick`).

use std::collections::HashMap;

use super::{OrgId, Store, StoreError, decode};

/// A stored partnership, as a quick sync compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDevice {
    /// Exchange's `DeviceId`, as Exchange spells it.
    pub device_id: String,
    /// Lowercase UPN of the mailbox's user (its primary SMTP address when it has no UPN);
    /// `None` when the mailbox is not stored.
    pub user: Option<String>,
    /// Its Intune record when the last sync that saw it had one.
    pub record: Option<KnownRecord>,
}

/// The fields of a stored Intune record that Intune changes on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRecord {
    pub id: String,
    /// As stored (`compliant`, `inGracePeriod`, …: the names Graph uses).
    pub compliance_state: String,
    pub management_state: String,
}

/// What a quick sync compares with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub devices: Vec<KnownDevice>,
    /// Lowercase UPN → the in-scope group ids the user was in, sorted.
    pub groups: HashMap<String, Vec<String>>,
}

impl Store {
    /// Every stored partnership's `DeviceId`, user and Intune record fields, and every stored
    /// user's groups. One pass over the devices and one over the users; the stored views are
    /// not decoded, SQLite picks the four fields out of the record's JSON.
    pub fn known(&self, org: OrgId) -> Result<Known, StoreError> {
        const DOING: &str = "reading what the last sync saw";
        let conn = self.conn();
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = conn
            .prepare(
                "SELECT d.device_id,
                        lower(coalesce(m.user_principal_name, m.primary_smtp)),
                        json_extract(d.intune, '$.id'),
                        json_extract(d.intune, '$.compliance_state'),
                        json_extract(d.intune, '$.management_state')
                 FROM devices d
                 LEFT JOIN mailboxes m
                     ON m.org_id = d.org_id AND m.mailbox_key = lower(d.mailbox)
                 WHERE d.org_id = ?1",
            )
            .and_then(|mut stmt| stmt.query_map([org.0], |row| Row::try_from(row))?.collect())
            .map_err(self.sql(DOING))?;
        let devices = rows
            .into_iter()
            .map(
                |(device_id, user, id, compliance, management)| KnownDevice {
                    device_id,
                    user,
                    record: id.map(|id| KnownRecord {
                        id,
                        compliance_state: compliance.unwrap_or_default(),
                        management_state: management.unwrap_or_default(),
                    }),
                },
            )
            .collect();
        let users: Vec<(String, String)> = conn
            .prepare("SELECT user_key, groups FROM directory_users WHERE org_id = ?1")
            .and_then(|mut stmt| {
                stmt.query_map([org.0], |row| <(String, String)>::try_from(row))?
                    .collect()
            })
            .map_err(self.sql(DOING))?;
        let mut groups = HashMap::with_capacity(users.len());
        for (user, text) in users {
            let mut ids: Vec<String> = decode("a user's groups", &text)?;
            ids.sort();
            groups.insert(user, ids);
        }
        Ok(Known { devices, groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ComplianceState, DirectoryUser, ExchangeDevice, Mailbox, ManagedDevice, OwnerType,
    };
    use crate::store::DeviceView;

    #[test]
    fn known_reads_each_partnerships_record_fields_user_and_the_users_groups() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.organization("contoso", 1).unwrap();
        let device = |id: &str, mailbox: &str| ExchangeDevice {
            device_id: id.into(),
            identity: format!("{mailbox}\\ExchangeActiveSyncDevices\\{id}"),
            mailbox: Some(mailbox.into()),
            ..Default::default()
        };
        let (a, b) = (device("AAA", "Alice"), device("BBB", "Bob"));
        let record = ManagedDevice {
            id: "m1".into(),
            eas_device_id: "aaa".into(),
            compliance_state: ComplianceState::InGracePeriod,
            management_state: "managed".into(),
            owner_type: OwnerType::Company,
            ..Default::default()
        };
        store
            .save_listed(
                org,
                &[
                    DeviceView {
                        exchange: &a,
                        managed: Some(&record),
                    },
                    DeviceView {
                        exchange: &b,
                        managed: None,
                    },
                ],
                5,
            )
            .unwrap();
        let mailbox = |identity: &str, upn: Option<&str>| Mailbox {
            identity: identity.into(),
            primary_smtp: format!("{}@contoso.com", identity.to_lowercase()),
            user_principal_name: upn.map(Into::into),
            allowed: vec![],
            blocked: vec![],
        };
        store
            .save_directory(
                org,
                &[
                    mailbox("Alice", Some("Alice@Contoso.com")),
                    mailbox("Bob", None),
                ],
                &[DirectoryUser {
                    user_principal_name: "Alice@Contoso.com".into(),
                    groups: vec!["g2".into(), "g1".into()],
                    locale: String::new(),
                }],
                true,
                5,
            )
            .unwrap();

        let mut known = store.known(org).unwrap();
        known.devices.sort_by(|x, y| x.device_id.cmp(&y.device_id));
        assert_eq!(
            known.devices,
            [
                KnownDevice {
                    device_id: "AAA".into(),
                    user: Some("alice@contoso.com".into()),
                    record: Some(KnownRecord {
                        id: "m1".into(),
                        compliance_state: "inGracePeriod".into(),
                        management_state: "managed".into(),
                    }),
                },
                KnownDevice {
                    device_id: "BBB".into(),
                    user: Some("bob@contoso.com".into()),
                    record: None,
                },
            ]
        );
        assert_eq!(
            known.groups,
            HashMap::from([(
                "alice@contoso.com".to_owned(),
                vec!["g1".to_owned(), "g2".to_owned()]
            )])
        );
    }
}
