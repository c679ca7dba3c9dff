//! Save: what Exchange and Intune said about each partnership goes into the store page by page,
//! on the blocking pool, while the device listing goes on; the directory (mailboxes and users),
//! the forgetting of partnerships Exchange no longer has and of Intune records gone come once
//! the listing is complete.
//!
//! Nothing here is a decision. A sync whose discovery fails halfway has refreshed the stored
//! views of the partnerships it listed (and added those the store did not know); it forgets
//! no partnership and no Intune record, records no verdict and sends nothing, and the next
//! sync saves every view again.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::blocking;
use crate::model::inventory::{DeviceKey, DirectoryUser, ExchangeDevice, Inventory, ManagedDevice};
use crate::store::{DeviceView, OrgId, Store, StoreError};

/// One page of partnerships, each with the Intune record matched to it.
pub type SavedPage = Vec<(ExchangeDevice, Option<ManagedDevice>)>;

/// Pages waiting for SQLite; a slow disk holds up the listing's consumer beyond this. Each
/// queued page is a copy of its views: at 100 000 devices, 8 raised the peak by about 8 MB
/// and saved nothing over 2.
const QUEUED_PAGES: usize = 2;

/// Saves an organization's partnerships page by page: a transaction for the pages queued
/// when it starts, so that a saver that falls behind catches up (one transaction of several
/// pages writes far fewer pages of SQLite's than as many of one page).
pub struct InventorySaver {
    store: Arc<Store>,
    org: OrgId,
    pages: mpsc::Sender<SavedPage>,
    task: tokio::task::JoinHandle<Result<Vec<DeviceKey>, StoreError>>,
}

impl InventorySaver {
    /// Starts saving `org`'s partnerships, each as seen at `now`.
    pub fn start(store: Arc<Store>, org: OrgId, now: i64) -> Self {
        let (pages, mut queue) = mpsc::channel::<SavedPage>(QUEUED_PAGES);
        let task = tokio::task::spawn_blocking({
            let store = store.clone();
            move || {
                // Listed without an Intune record: dropped from the store once the listing is
                // complete.
                let mut unenrolled = Vec::new();
                while let Some(first) = queue.blocking_recv() {
                    let mut pages = vec![first];
                    while let Ok(more) = queue.try_recv() {
                        pages.push(more);
                    }
                    let views: Vec<DeviceView<'_>> = pages
                        .iter()
                        .flatten()
                        .map(|(exchange, managed)| DeviceView {
                            exchange,
                            managed: managed.as_ref(),
                        })
                        .collect();
                    store.save_listed(org, &views, now)?;
                    unenrolled.extend(
                        views
                            .iter()
                            .filter(|v| v.managed.is_none())
                            .map(|v| v.exchange.key()),
                    );
                }
                Ok(unenrolled)
            }
        });
        InventorySaver {
            store,
            org,
            pages,
            task,
        }
    }

    /// Queues a page. A failed save stops the saver; [`finish`](Self::finish) reports it.
    pub async fn save(&self, page: SavedPage) {
        if !page.is_empty() {
            let _ = self.pages.send(page).await;
        }
    }

    /// Waits for every queued page, then drops the Intune records of the partnerships listed
    /// without one, saves the directory (the mailboxes of `inventory` and `users`) and, when
    /// `forget_absent` (listings known to be complete), forgets the partnerships, mailboxes
    /// and users they do not have.
    pub async fn finish(
        self,
        inventory: Arc<Inventory>,
        users: Vec<DirectoryUser>,
        forget_absent: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        drop(self.pages);
        let unenrolled = self.task.await.expect("the save task does not panic")?;
        let org = self.org;
        blocking(&self.store, move |s| {
            s.forget_records(org, &unenrolled)?;
            // What `easgate policy diff` decides with; a quick sync, or a full one that could
            // not read every record, saves what it read and forgets nothing.
            s.save_directory(org, &inventory.mailboxes, &users, forget_absent, now)?;
            if forget_absent {
                let gone = absent(s.device_keys(org)?, &inventory.devices);
                s.forget_devices(org, &gone)?;
            }
            Ok(())
        })
        .await
    }
}

/// The `stored` keys of no partnership in `devices`, in the stored order. The present keys are
/// looked up one at a time, not gathered into a second set as large as the organization.
fn absent(stored: Vec<DeviceKey>, devices: &[ExchangeDevice]) -> Vec<DeviceKey> {
    let mut absent: HashSet<&DeviceKey> = stored.iter().collect();
    for device in devices {
        absent.remove(&device.key());
    }
    stored
        .iter()
        .filter(|k| absent.contains(k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keeps_the_stored_keys_no_partnership_has() {
        let device = |identity: &str| ExchangeDevice {
            identity: identity.into(),
            ..ExchangeDevice::default()
        };
        let stored = [
            "alice\\eas\\a1",
            "bob\\eas\\b1",
            "carol\\eas\\c1",
            "dave\\eas\\d1",
        ]
        .map(DeviceKey::new)
        .to_vec();
        // Keys ignore case and surrounding spaces, as Exchange's identities do.
        let present = [
            device(" Alice\\EAS\\A1"),
            device("carol\\eas\\c1"),
            device("erin\\eas\\e1"),
        ];
        assert_eq!(
            absent(stored, &present),
            ["bob\\eas\\b1", "dave\\eas\\d1"].map(DeviceKey::new)
        );
    }
}
