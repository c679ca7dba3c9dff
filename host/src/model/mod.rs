//! The ground floor: the vocabulary every other module shares, importing nothing else of the
//! crate. What a plan holds and the journal stores is here, in terms of Exchange's cmdlets but
//! of no wire (REST JSON, PowerShell's CLIXML): each transport renders it its own way.

pub mod command;
pub mod progress;

pub use command::{Command, ParamValue, Parameters};
