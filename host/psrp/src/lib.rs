//! easgate-psrp: the PowerShell Remoting Protocol (MS-PSRP) without I/O, for both roles — the
//! lab's Exchange CAS (server) and the connector's on-premises transport (client).
//!
//! Nothing here touches a socket or a clock: callers move bytes over WS-Management themselves
//! and use this crate to turn them into messages and back.
//!
//! # Layers, bottom up
//!
//! - [`fragment`]: a message is cut into fragments (`Fragmenter::fragment`, each at most the
//!   transport's unit) and a [`Reassembler`] fed with the bytes of WS-Management `Stream`
//!   elements (base64-decoded) yields each complete message; fragments out of order or
//!   garbage lengths are [`FragmentError`]s.
//! - [`message`]: a [`Message`] is the 40-byte header (destination, [`MessageType`], runspace
//!   pool id, pipeline id — GUIDs in .NET byte order) and the CLIXML data; `encode`/`decode`.
//! - [`clixml`]: the [`Value`] model, a streaming [`Writer`] (no tree; what makes a server emit
//!   tens of thousands of objects a second) and a streaming reader [`from_clixml`] (quick-xml
//!   events straight to values, no element tree) that resolves `RefId`/`TNRef`.
//! - [`messages`]: the bodies an Exchange session needs — [`SessionCapability`],
//!   [`InitRunspacePool`], `application_private_data`, `runspace_pool_state`,
//!   [`CreatePipeline`] (a client's cmdlet + named parameters, as pypsrp sends it), pipeline
//!   output (any [`Value`] or streamed [`Writer`] text), [`ErrorRecord`], `pipeline_state`,
//!   `warning_record` — each with a builder and a parser.
//! - [`xml`]: the small element tree callers' SOAP envelopes are read with.
//!
//! # A client, in short
//!
//! ```
//! use easgate_psrp::*;
//! let pool = Guid::new_v4();
//! let mut out = Fragmenter::new(150 * 1024);
//! let caps = Message::new(Destination::Server, MessageType::SESSION_CAPABILITY, pool, Guid::NIL,
//!     SessionCapability::windows_powershell().to_clixml());
//! let init = Message::new(Destination::Server, MessageType::INIT_RUNSPACEPOOL, pool, Guid::NIL,
//!     InitRunspacePool::default().to_clixml());
//! // creationXml's <creationXml> holds base64 of these fragments, concatenated:
//! let creation: Vec<u8> = [out.fragment(&caps.encode()), out.fragment(&init.encode())].concat().concat();
//! // … later, each Receive's stdout stream, base64-decoded, is fed to a Reassembler:
//! let mut inbox = Reassembler::default();
//! for bytes in inbox.feed(&creation).unwrap() {
//!     let m = Message::decode(&bytes).unwrap();
//!     assert_eq!(m.runspace_pool_id, pool);
//! }
//! let pipeline = CreatePipeline::single(Command::cmdlet("Get-CASMailbox").param("Identity", "u1"));
//! let _body = pipeline.to_clixml();
//! ```
//!
//! A server does the converse: `SessionCapability::parse`, `InitRunspacePool::parse`,
//! `CreatePipeline::parse`, and answers with `runspace_pool_state`, output objects written with a
//! [`Writer`], [`ErrorRecord::to_clixml`] and `pipeline_state`.

pub mod clixml;
pub mod fragment;
pub mod guid;
pub mod message;
pub mod messages;
pub mod xml;

pub use clixml::{ClixmlError, Container, ListKind, Object, Value, Writer, from_clixml};
pub use fragment::{FragmentError, Fragmenter, Reassembler};
pub use guid::Guid;
pub use message::{Destination, Message, MessageError, MessageType};
pub use messages::{
    BodyError, Command, CreatePipeline, ErrorRecord, InitRunspacePool, Parameter, PipelineState,
    RunspacePoolState, SessionCapability,
};
