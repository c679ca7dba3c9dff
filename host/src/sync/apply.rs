//! Apply: runs journaled commands through the Exchange client's parallel pool and records each
//! outcome in the journal.
//!
//! The commands are already in the journal (`planned`) when this runs: the run recorded them
//! with its decisions. Each batch is marked `sent` before it goes out, so a crash leaves
//! `planned` or `sent` entries that [`crate::store::Store::recover`] abandons and the next
//! sync re-plans from fresh Exchange state.
//!
//! Order: the mailbox edits and partnership removals first, the organization default last, so
//! that the devices a plan allows are on their allow lists before the default turns to
//! Quarantine.

use std::sync::Arc;

use super::plan::{
    Command, NEW_ACCESS_RULE, REMOVE_ACCESS_RULE, REMOVE_MOBILE_DEVICE, SET_CAS_MAILBOX,
    SET_ORG_SETTINGS,
};
use crate::exchange::cmdlets::{
    JournaledNewDeviceAccessRule, JournaledRemoveDeviceAccessRule, JournaledRemoveMobileDevice,
    JournaledSetCasMailbox, JournaledSetOrganizationSettings,
};
use crate::exchange::{Cmdlet, ExchangeClient, ExchangeError};
use crate::store::{CommandId, Store, StoreError};

/// What applying a plan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Commands sent to Exchange.
    pub sent: u64,
    /// Commands Exchange confirmed.
    pub done: u64,
    /// Commands that failed, with the error.
    pub failed: Vec<(CommandId, String)>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs the store call `f` on the blocking pool (the store's calls wait on SQLite).
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .expect("a store task does not panic")
}

async fn run_group<C>(
    exchange: &ExchangeClient,
    store: &Arc<Store>,
    group: Vec<(CommandId, Command)>,
    wrap: impl Fn(Command) -> C,
    applied: &mut Applied,
) -> Result<(), StoreError>
where
    C: Cmdlet + 'static,
{
    let mut group = group.into_iter().peekable();
    while group.peek().is_some() {
        let chunk: Vec<(CommandId, Command)> = group.by_ref().take(CHUNK).collect();
        run_chunk(exchange, store, chunk, &wrap, applied).await?;
    }
    Ok(())
}

/// Commands marked `sent` at once: one journal transaction per chunk instead of per command,
/// while a crash leaves at most this many commands of unknown outcome.
const CHUNK: usize = 500;

async fn run_chunk<C>(
    exchange: &ExchangeClient,
    store: &Arc<Store>,
    group: Vec<(CommandId, Command)>,
    wrap: &impl Fn(Command) -> C,
    applied: &mut Applied,
) -> Result<(), StoreError>
where
    C: Cmdlet + 'static,
{
    let ids: Vec<CommandId> = group.iter().map(|(id, _)| *id).collect();
    let sent_ids = ids.clone();
    blocking(store, move |s| s.mark_sent(&sent_ids, now())).await?;
    applied.sent += ids.len() as u64;
    let cmdlets: Vec<C> = group.into_iter().map(|(_, c)| wrap(c)).collect();
    let results = exchange.run_all(cmdlets).await;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(_) => done.push(id),
            // The list already holds what the command adds: a plan approved after Exchange
            // moved on, or a retry of an applied command. The state is the one wanted.
            Err(e) if e.is_repeat_of_applied() => done.push(id),
            Err(e) => failed.push((id, describe(&e))),
        }
    }
    applied.done += done.len() as u64;
    let failures = failed.clone();
    blocking(store, move |s| {
        s.mark_done(&done, now())?;
        for (id, error) in &failures {
            s.mark_failed(*id, error, now())?;
        }
        Ok(())
    })
    .await?;
    applied.failed.extend(failed);
    Ok(())
}

fn describe(e: &ExchangeError) -> String {
    e.to_string()
}

/// Runs `commands` (journal id and command, in plan order).
pub async fn apply(
    exchange: &ExchangeClient,
    store: &Arc<Store>,
    commands: Vec<(CommandId, Command)>,
) -> Result<Applied, StoreError> {
    let mut edits = Vec::new();
    let mut removals = Vec::new();
    let mut org = Vec::new();
    let mut rule_removals = Vec::new();
    let mut new_rules = Vec::new();
    let mut applied = Applied::default();
    for (id, command) in commands {
        match command.cmdlet.as_str() {
            SET_CAS_MAILBOX => edits.push((id, command)),
            REMOVE_MOBILE_DEVICE => removals.push((id, command)),
            SET_ORG_SETTINGS => org.push((id, command)),
            REMOVE_ACCESS_RULE => rule_removals.push((id, command)),
            NEW_ACCESS_RULE => new_rules.push((id, command)),
            other => {
                let error = format!("the sync does not run `{other}`");
                let s = store.clone();
                tokio::task::spawn_blocking(move || s.mark_failed(id, &error, now()))
                    .await
                    .expect("a store task does not panic")?;
                applied
                    .failed
                    .push((id, format!("unknown cmdlet `{}`", command.cmdlet)));
            }
        }
    }
    run_group(
        exchange,
        store,
        edits,
        |c| JournaledSetCasMailbox(c.parameters),
        &mut applied,
    )
    .await?;
    run_group(
        exchange,
        store,
        removals,
        |c| JournaledRemoveMobileDevice(c.parameters),
        &mut applied,
    )
    .await?;
    run_group(
        exchange,
        store,
        org,
        |c| JournaledSetOrganizationSettings(c.parameters),
        &mut applied,
    )
    .await?;
    // Removals first: a rule whose level changes is removed and created again under its name.
    run_group(
        exchange,
        store,
        rule_removals,
        |c| JournaledRemoveDeviceAccessRule(c.parameters),
        &mut applied,
    )
    .await?;
    run_group(
        exchange,
        store,
        new_rules,
        |c| JournaledNewDeviceAccessRule(c.parameters),
        &mut applied,
    )
    .await?;
    Ok(applied)
}
