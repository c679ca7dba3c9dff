//! The ground floor: the vocabulary every other module shares, importing nothing else of the
//! crate. What a plan holds and the journal stores is here, in terms of Exchange's cmdlets but
//! of no wire (REST JSON, PowerShell's CLIXML): each transport renders it its own way.
//!
//! * [`inventory`]: the devices, mailboxes, Intune records and users a sync reads, the verdict
//!   it gives, and the enums the services spell (`AccessState`, `ComplianceState`, …).
//! * [`settings`]: the sync's settings and their defaults.
//! * [`command`]: a cmdlet and its typed parameters; [`PlannedCommand`], one of a plan's.
//! * [`kind`]: which sync runs ([`SyncKind`]) and what a run record was ([`RunKind`]).
//! * [`progress`]: the counter a stage hands down to the clients it awaits.
//!
//! The plugin contract's form of these types (`From` into the WIT records) is in
//! `plugin::wit`, so this floor does not depend on the plugin bindings.

pub mod command;
pub mod inventory;
pub mod kind;
pub mod progress;
pub mod settings;

pub use command::{Command, ParamValue, Parameters, PlannedCommand};
pub use inventory::{
    AccessLevel, AccessState, ComplianceState, DeviceKey, DirectoryUser, ExchangeDevice, Inventory,
    Mailbox, MailboxLanguages, ManagedDevice, OwnerType, ShownState, Verdict,
};
pub use kind::{RunKind, SyncKind};
pub use settings::{
    DefaultAccess, DeviceAccessRule, RestrictionLimit, RuleCharacteristic, SyncSettings,
};
