//! The bodies of the PSRP messages an Exchange remote PowerShell session uses, built as CLIXML
//! text and parsed from [`Value`]s, for both roles: a client builds `SESSION_CAPABILITY`,
//! `INIT_RUNSPACEPOOL` and `CREATE_PIPELINE` and parses the rest; a server does the converse.

use crate::clixml::{self, ClixmlError, Value, Writer};

/// A message body that parsed as CLIXML but lacks what its message type requires.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Clixml(#[from] ClixmlError),
    #[error("{message} lacks the property '{property}' or it has the wrong type")]
    Missing {
        message: &'static str,
        property: &'static str,
    },
}

fn missing(message: &'static str, property: &'static str) -> BodyError {
    BodyError::Missing { message, property }
}

// ---------------------------------------------------------------------------------------------
// SESSION_CAPABILITY (MS-PSRP 2.2.2.1)

/// Versions each side announces; a server answers with its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCapability {
    pub protocol_version: String,
    pub ps_version: String,
    pub serialization_version: String,
    /// A client's serialized `TimeZone` (opaque bytes), if sent.
    pub time_zone: Option<Vec<u8>>,
}

impl SessionCapability {
    /// What Windows PowerShell 5.1 announces, as an Exchange 2016/2019 CAS does.
    pub fn windows_powershell() -> Self {
        SessionCapability {
            protocol_version: "2.3".into(),
            ps_version: "2.0".into(),
            serialization_version: "1.1.0.1".into(),
            time_zone: None,
        }
    }

    pub fn to_clixml(&self) -> String {
        let mut w = Writer::with_capacity(256);
        w.begin_object(None, &[], None);
        w.begin_ms();
        w.version(Some("protocolversion"), &self.protocol_version);
        w.version(Some("PSVersion"), &self.ps_version);
        w.version(Some("SerializationVersion"), &self.serialization_version);
        if let Some(tz) = &self.time_zone {
            w.bytes(Some("TimeZone"), tz);
        }
        w.end_ms();
        w.end_object();
        w.finish()
    }

    pub fn parse(text: &str) -> Result<Self, BodyError> {
        let v = clixml::from_clixml(text)?;
        let get = |p: &'static str| {
            v.prop(p)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| missing("SESSION_CAPABILITY", p))
        };
        Ok(SessionCapability {
            protocol_version: get("protocolversion")?,
            ps_version: get("PSVersion")?,
            serialization_version: get("SerializationVersion")?,
            time_zone: match v.prop("TimeZone") {
                Some(Value::Bytes(b)) => Some(b.clone()),
                _ => None,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// INIT_RUNSPACEPOOL (MS-PSRP 2.2.2.2)

#[derive(Debug, Clone, PartialEq)]
pub struct InitRunspacePool {
    pub min_runspaces: i32,
    pub max_runspaces: i32,
    /// `ApplicationArguments` (a `PSPrimitiveDictionary`), `Null` when none.
    pub application_arguments: Value,
}

impl Default for InitRunspacePool {
    fn default() -> Self {
        InitRunspacePool {
            min_runspaces: 1,
            max_runspaces: 1,
            application_arguments: Value::Null,
        }
    }
}

fn write_host_info(w: &mut Writer) {
    // No host: the server must not call back into the client's UI.
    w.begin_object(Some("HostInfo"), &[], None);
    w.begin_ms();
    w.bool(Some("_isHostNull"), true);
    w.bool(Some("_isHostUINull"), true);
    w.bool(Some("_isHostRawUINull"), true);
    w.bool(Some("_useRunspaceHost"), true);
    w.end_ms();
    w.end_object();
}

impl InitRunspacePool {
    pub fn to_clixml(&self) -> String {
        let mut w = Writer::with_capacity(1024);
        w.begin_object(None, &[], None);
        w.begin_ms();
        w.i32(Some("MinRunspaces"), self.min_runspaces);
        w.i32(Some("MaxRunspaces"), self.max_runspaces);
        w.enumeration(
            Some("PSThreadOptions"),
            "System.Management.Automation.Runspaces.PSThreadOptions",
            "Default",
            0,
        );
        w.enumeration(
            Some("ApartmentState"),
            "System.Threading.ApartmentState",
            "Unknown",
            2,
        );
        write_host_info(&mut w);
        w.value(Some("ApplicationArguments"), &self.application_arguments);
        w.end_ms();
        w.end_object();
        w.finish()
    }

    pub fn parse(text: &str) -> Result<Self, BodyError> {
        let v = clixml::from_clixml(text)?;
        let int = |p: &'static str| {
            v.prop(p)
                .and_then(Value::as_i64)
                .map(|n| n as i32)
                .ok_or_else(|| missing("INIT_RUNSPACEPOOL", p))
        };
        Ok(InitRunspacePool {
            min_runspaces: int("MinRunspaces")?,
            max_runspaces: int("MaxRunspaces")?,
            application_arguments: v
                .prop("ApplicationArguments")
                .cloned()
                .unwrap_or(Value::Null),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// APPLICATION_PRIVATE_DATA (MS-PSRP 2.2.2.13)

const PRIMITIVE_DICTIONARY: &[&str] = &[
    "System.Management.Automation.PSPrimitiveDictionary",
    "System.Collections.Hashtable",
    "System.Object",
];

/// The server's application private data: a dictionary (empty for Exchange's sessions).
pub fn application_private_data(entries: &[(Value, Value)]) -> String {
    let mut w = Writer::with_capacity(512);
    w.begin_object(None, &[], None);
    w.begin_ms();
    w.begin_object(Some("ApplicationPrivateData"), PRIMITIVE_DICTIONARY, None);
    w.begin_dict();
    for (k, v) in entries {
        w.begin_entry();
        w.value(Some("Key"), k);
        w.value(Some("Value"), v);
        w.end_entry();
    }
    w.end_dict();
    w.end_object();
    w.end_ms();
    w.end_object();
    w.finish()
}

pub fn parse_application_private_data(text: &str) -> Result<Vec<(Value, Value)>, BodyError> {
    let v = clixml::from_clixml(text)?;
    match v.prop("ApplicationPrivateData") {
        Some(Value::Null) => Ok(Vec::new()),
        Some(d) => d
            .as_dict()
            .map(<[_]>::to_vec)
            .ok_or_else(|| missing("APPLICATION_PRIVATE_DATA", "ApplicationPrivateData")),
        None => Err(missing(
            "APPLICATION_PRIVATE_DATA",
            "ApplicationPrivateData",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// RUNSPACEPOOL_STATE (2.2.2.9) and PIPELINE_STATE (2.2.2.21)

/// `RunspacePoolState` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunspacePoolState {
    BeforeOpen = 0,
    Opening = 1,
    Opened = 2,
    Closed = 3,
    Closing = 4,
    Broken = 5,
    NegotiationSent = 6,
    NegotiationSucceeded = 7,
    Connecting = 8,
    Disconnected = 9,
}

impl RunspacePoolState {
    pub fn from_i32(n: i32) -> Option<Self> {
        use RunspacePoolState::*;
        [
            BeforeOpen,
            Opening,
            Opened,
            Closed,
            Closing,
            Broken,
            NegotiationSent,
            NegotiationSucceeded,
            Connecting,
            Disconnected,
        ]
        .into_iter()
        .find(|s| *s as i32 == n)
    }
}

/// `PSInvocationState` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineState {
    NotStarted = 0,
    Running = 1,
    Stopping = 2,
    Stopped = 3,
    Completed = 4,
    Failed = 5,
    Disconnected = 6,
}

impl PipelineState {
    pub fn from_i32(n: i32) -> Option<Self> {
        use PipelineState::*;
        [
            NotStarted,
            Running,
            Stopping,
            Stopped,
            Completed,
            Failed,
            Disconnected,
        ]
        .into_iter()
        .find(|s| *s as i32 == n)
    }
}

fn state_body(property: &str, state: i32, error: Option<&ErrorRecord>) -> String {
    let mut w = Writer::with_capacity(256);
    w.begin_object(None, &[], None);
    w.begin_ms();
    w.i32(Some(property), state);
    if let Some(e) = error {
        e.write(&mut w, Some("ExceptionAsErrorRecord"));
    }
    w.end_ms();
    w.end_object();
    w.finish()
}

pub fn runspace_pool_state(state: RunspacePoolState, error: Option<&ErrorRecord>) -> String {
    state_body("RunspaceState", state as i32, error)
}

/// The state and, when broken, the reason.
pub fn parse_runspace_pool_state(
    text: &str,
) -> Result<(RunspacePoolState, Option<ErrorRecord>), BodyError> {
    let v = clixml::from_clixml(text)?;
    let n = v
        .prop("RunspaceState")
        .and_then(Value::as_i64)
        .ok_or_else(|| missing("RUNSPACEPOOL_STATE", "RunspaceState"))?;
    let state = RunspacePoolState::from_i32(n as i32)
        .ok_or_else(|| missing("RUNSPACEPOOL_STATE", "RunspaceState"))?;
    let error = v
        .prop("ExceptionAsErrorRecord")
        .filter(|e| !e.is_null())
        .map(ErrorRecord::from_value);
    Ok((state, error))
}

/// `Completed`, or `Failed` with the error that stopped the pipeline.
pub fn pipeline_state(state: PipelineState, error: Option<&ErrorRecord>) -> String {
    state_body("PipelineState", state as i32, error)
}

pub fn parse_pipeline_state(text: &str) -> Result<(PipelineState, Option<ErrorRecord>), BodyError> {
    let v = clixml::from_clixml(text)?;
    let n = v
        .prop("PipelineState")
        .and_then(Value::as_i64)
        .ok_or_else(|| missing("PIPELINE_STATE", "PipelineState"))?;
    let state = PipelineState::from_i32(n as i32)
        .ok_or_else(|| missing("PIPELINE_STATE", "PipelineState"))?;
    let error = v
        .prop("ExceptionAsErrorRecord")
        .filter(|e| !e.is_null())
        .map(ErrorRecord::from_value);
    Ok((state, error))
}

// ---------------------------------------------------------------------------------------------
// CREATE_PIPELINE (2.2.2.10)

/// A parameter or argument of a command: `name` is `None` for a positional argument; a switch
/// is a name with `Value::Null` or `Value::Bool(true)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: Option<String>,
    pub value: Value,
}

/// One command of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The cmdlet name, or the script text when `is_script`.
    pub name: String,
    pub is_script: bool,
    pub use_local_scope: Option<bool>,
    pub parameters: Vec<Parameter>,
}

impl Command {
    pub fn cmdlet(name: impl Into<String>) -> Self {
        Command {
            name: name.into(),
            is_script: false,
            use_local_scope: None,
            parameters: Vec::new(),
        }
    }

    pub fn script(text: impl Into<String>) -> Self {
        Command {
            name: text.into(),
            is_script: true,
            use_local_scope: None,
            parameters: Vec::new(),
        }
    }

    /// Adds a named parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.parameters.push(Parameter {
            name: Some(name.into()),
            value: value.into(),
        });
        self
    }

    /// Adds a switch parameter (sent as `true`).
    pub fn switch(mut self, name: impl Into<String>) -> Self {
        self.parameters.push(Parameter {
            name: Some(name.into()),
            value: Value::Bool(true),
        });
        self
    }

    /// A named parameter's value (name compared ignoring case).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.parameters
            .iter()
            .find(|p| {
                p.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .map(|p| &p.value)
    }
}

/// The pipeline a client asks to run: its statements (usually one), each a sequence of commands.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatePipeline {
    pub statements: Vec<Vec<Command>>,
    pub no_input: bool,
    pub add_to_history: bool,
    pub is_nested: bool,
}

impl CreatePipeline {
    /// One cmdlet, no input, as pypsrp's `PowerShell(pool).add_cmdlet(..).add_parameter(..)`.
    pub fn single(command: Command) -> Self {
        CreatePipeline {
            statements: vec![vec![command]],
            no_input: true,
            add_to_history: false,
            is_nested: false,
        }
    }

    /// All commands of all statements.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.statements.iter().flatten()
    }

    pub fn to_clixml(&self) -> String {
        const LIST: &[&str] = &[
            "System.Collections.Generic.List`1[[System.Management.Automation.PSObject, System.Management.Automation, Version=3.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
            "System.Object",
        ];
        const RESULT: &str = "System.Management.Automation.Runspaces.PipelineResultTypes";
        // A one-cmdlet pipeline with a few parameters is 2.5–3 KB: one allocation, no regrowth.
        let mut w = Writer::with_capacity(4096);
        w.begin_object(None, &[], None);
        w.begin_ms();
        w.bool(Some("NoInput"), self.no_input);
        w.enumeration(
            Some("ApartmentState"),
            "System.Threading.ApartmentState",
            "Unknown",
            2,
        );
        w.enumeration(
            Some("RemoteStreamOptions"),
            "System.Management.Automation.RemoteStreamOptions",
            "None",
            0,
        );
        w.bool(Some("AddToHistory"), self.add_to_history);
        write_host_info(&mut w);
        let write_cmds = |w: &mut Writer, name: &str, cmds: &[Command]| {
            w.begin_object(Some(name), LIST, None);
            w.begin_list();
            for c in cmds {
                w.begin_object(None, &[], None);
                w.begin_ms();
                w.string(Some("Cmd"), &c.name);
                w.bool(Some("IsScript"), c.is_script);
                match c.use_local_scope {
                    Some(b) => w.bool(Some("UseLocalScope"), b),
                    None => w.nil(Some("UseLocalScope")),
                }
                w.enumeration(Some("MergeMyResult"), RESULT, "None", 0);
                w.enumeration(Some("MergeToResult"), RESULT, "None", 0);
                w.enumeration(Some("MergePreviousResults"), RESULT, "None", 0);
                for m in [
                    "MergeError",
                    "MergeWarning",
                    "MergeVerbose",
                    "MergeDebug",
                    "MergeInformation",
                ] {
                    w.enumeration(Some(m), RESULT, "None", 0);
                }
                w.begin_object(Some("Args"), LIST, None);
                w.begin_list();
                for p in &c.parameters {
                    w.begin_object(None, &[], None);
                    w.begin_ms();
                    w.opt_string(Some("N"), p.name.as_deref());
                    w.value(Some("V"), &p.value);
                    w.end_ms();
                    w.end_object();
                }
                w.end_list();
                w.end_object();
                w.end_ms();
                w.end_object();
            }
            w.end_list();
            w.end_object();
        };
        w.begin_object(Some("PowerShell"), &[], None);
        w.begin_ms();
        w.bool(Some("IsNested"), self.is_nested);
        let first: &[Command] = self.statements.first().map_or(&[], Vec::as_slice);
        if self.statements.len() > 1 {
            w.begin_object(Some("ExtraCmds"), LIST, None);
            w.begin_list();
            for s in &self.statements {
                w.begin_object(None, &[], None);
                w.begin_ms();
                write_cmds(&mut w, "Cmds", s);
                w.end_ms();
                w.end_object();
            }
            w.end_list();
            w.end_object();
        }
        write_cmds(&mut w, "Cmds", first);
        w.nil(Some("History"));
        w.bool(Some("RedirectShellErrorOutputPipe"), false);
        w.end_ms();
        w.end_object();
        w.bool(Some("IsNested"), self.is_nested);
        w.end_ms();
        w.end_object();
        w.finish()
    }

    pub fn parse(text: &str) -> Result<Self, BodyError> {
        const M: &str = "CREATE_PIPELINE";
        let v = clixml::from_clixml(text)?;
        let ps = v
            .prop("PowerShell")
            .ok_or_else(|| missing(M, "PowerShell"))?;
        let read_cmds = |holder: &Value| -> Result<Vec<Command>, BodyError> {
            let cmds = holder
                .prop("Cmds")
                .and_then(Value::as_list)
                .ok_or_else(|| missing(M, "Cmds"))?;
            cmds.iter()
                .map(|c| {
                    let name = c
                        .prop("Cmd")
                        .and_then(Value::as_str)
                        .ok_or_else(|| missing(M, "Cmd"))?;
                    let is_script = c.prop("IsScript").and_then(Value::as_bool).unwrap_or(false);
                    let parameters = match c.prop("Args") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(a) => a
                            .as_list()
                            .ok_or_else(|| missing(M, "Args"))?
                            .iter()
                            .map(|p| Parameter {
                                name: p.prop("N").and_then(Value::as_str).map(str::to_owned),
                                value: p.prop("V").cloned().unwrap_or(Value::Null),
                            })
                            .collect(),
                    };
                    Ok(Command {
                        name: name.to_owned(),
                        is_script,
                        use_local_scope: c.prop("UseLocalScope").and_then(Value::as_bool),
                        parameters,
                    })
                })
                .collect()
        };
        let statements = match ps.prop("ExtraCmds").and_then(Value::as_list) {
            Some(extra) if !extra.is_empty() => {
                extra.iter().map(read_cmds).collect::<Result<_, _>>()?
            }
            _ => vec![read_cmds(ps)?],
        };
        Ok(CreatePipeline {
            statements,
            no_input: v.prop("NoInput").and_then(Value::as_bool).unwrap_or(true),
            add_to_history: v
                .prop("AddToHistory")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            is_nested: ps
                .prop("IsNested")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// ERROR_RECORD (2.2.2.20, 2.2.3.15) and WARNING_RECORD (2.2.2.22)

/// `ErrorCategory` values PowerShell defines (the ones Exchange uses are named).
pub mod category {
    pub const NOT_SPECIFIED: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 5;
    pub const INVALID_DATA: i32 = 6;
    pub const INVALID_OPERATION: i32 = 7;
    pub const OBJECT_NOT_FOUND: i32 = 13;
    pub const PARSER_ERROR: i32 = 17;
    pub const PERMISSION_DENIED: i32 = 18;
    pub const RESOURCE_EXISTS: i32 = 20;
    pub const LIMITS_EXCEEDED: i32 = 29;
    pub const QUOTA_EXCEEDED: i32 = 30;
    pub const NOT_ENABLED: i32 = 31;

    const NAMES: &[&str] = &[
        "NotSpecified",
        "OpenError",
        "CloseError",
        "DeviceError",
        "DeadlockDetected",
        "InvalidArgument",
        "InvalidData",
        "InvalidOperation",
        "InvalidResult",
        "InvalidType",
        "MetadataError",
        "NotImplemented",
        "NotInstalled",
        "ObjectNotFound",
        "OperationStopped",
        "OperationTimeout",
        "SyntaxError",
        "ParserError",
        "PermissionDenied",
        "ResourceBusy",
        "ResourceExists",
        "ResourceUnavailable",
        "ReadError",
        "WriteError",
        "FromStdErr",
        "SecurityError",
        "ProtocolError",
        "ConnectionError",
        "AuthenticationError",
        "LimitsExceeded",
        "QuotaExceeded",
        "NotEnabled",
    ];

    /// The category's name, as `CategoryInfo` prints it.
    pub fn name(n: i32) -> &'static str {
        usize::try_from(n)
            .ok()
            .and_then(|i| NAMES.get(i))
            .copied()
            .unwrap_or("NotSpecified")
    }
}

/// An error record: the exception's type names and message, the fully qualified error id and
/// the category info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRecord {
    /// Most derived first, e.g. `Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException`,
    /// …, `System.Exception`, `System.Object`.
    pub exception_types: Vec<String>,
    pub message: String,
    pub fully_qualified_error_id: String,
    pub category: i32,
    pub activity: String,
    pub reason: String,
    pub target_name: String,
    pub target_type: String,
}

impl ErrorRecord {
    /// The text PowerShell shows as `CategoryInfo`: `Category: (Target:Type) [Activity], Reason`.
    pub fn category_message(&self) -> String {
        format!(
            "{}: ({}:{}) [{}], {}",
            category::name(self.category),
            self.target_name,
            self.target_type,
            self.activity,
            self.reason
        )
    }

    /// The ERROR_RECORD message body.
    pub fn to_clixml(&self) -> String {
        let mut w = Writer::with_capacity(2048);
        self.write(&mut w, None);
        w.finish()
    }

    /// Writes the record as a (possibly named) object.
    pub fn write(&self, w: &mut Writer, name: Option<&str>) {
        w.begin_object(
            name,
            &["System.Management.Automation.ErrorRecord", "System.Object"],
            Some(&self.message),
        );
        w.begin_ms();
        let types: Vec<&str> = self.exception_types.iter().map(String::as_str).collect();
        w.begin_object(Some("Exception"), &types, Some(&self.message));
        w.begin_props();
        w.string(Some("Message"), &self.message);
        w.nil(Some("Data"));
        w.nil(Some("InnerException"));
        w.nil(Some("TargetSite"));
        w.nil(Some("StackTrace"));
        w.nil(Some("HelpLink"));
        w.nil(Some("Source"));
        w.i32(Some("HResult"), -2146233088);
        w.end_props();
        w.end_object();
        w.nil(Some("TargetObject"));
        w.string(
            Some("FullyQualifiedErrorId"),
            &self.fully_qualified_error_id,
        );
        w.nil(Some("InvocationInfo"));
        w.i32(Some("ErrorCategory_Category"), self.category);
        w.string(Some("ErrorCategory_Activity"), &self.activity);
        w.string(Some("ErrorCategory_Reason"), &self.reason);
        w.string(Some("ErrorCategory_TargetName"), &self.target_name);
        w.string(Some("ErrorCategory_TargetType"), &self.target_type);
        w.string(Some("ErrorCategory_Message"), &self.category_message());
        w.bool(Some("SerializeExtendedInfo"), false);
        w.end_ms();
        w.end_object();
    }

    pub fn parse(text: &str) -> Result<Self, BodyError> {
        Ok(Self::from_value(&clixml::from_clixml(text)?))
    }

    /// Reads what is there; absent fields are empty.
    pub fn from_value(v: &Value) -> Self {
        let s = |p: &str| {
            v.prop(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let exception = v.prop("Exception");
        let message = exception
            .and_then(|e| e.prop("Message"))
            .and_then(Value::as_str)
            .or_else(|| exception.and_then(Value::as_str))
            .or_else(|| v.as_str())
            .unwrap_or_default()
            .to_owned();
        ErrorRecord {
            exception_types: exception
                .and_then(Value::as_object)
                .map(|o| o.type_names.clone())
                .unwrap_or_default(),
            message,
            fully_qualified_error_id: s("FullyQualifiedErrorId"),
            category: v
                .prop("ErrorCategory_Category")
                .and_then(Value::as_i64)
                .unwrap_or(0) as i32,
            activity: s("ErrorCategory_Activity"),
            reason: s("ErrorCategory_Reason"),
            target_name: s("ErrorCategory_TargetName"),
            target_type: s("ErrorCategory_TargetType"),
        }
    }
}

/// A WARNING_RECORD body.
pub fn warning_record(message: &str) -> String {
    let mut w = Writer::with_capacity(256 + message.len());
    w.begin_object(
        None,
        &[
            "System.Management.Automation.WarningRecord",
            "System.Management.Automation.InformationalRecord",
            "System.Object",
        ],
        Some(message),
    );
    w.begin_ms();
    w.string(Some("InformationalRecord_Message"), message);
    w.bool(Some("InformationalRecord_SerializeInvocationInfo"), false);
    w.end_ms();
    w.end_object();
    w.finish()
}

/// The message of a WARNING_RECORD (or VERBOSE/DEBUG) body.
pub fn parse_informational_record(text: &str) -> Result<String, BodyError> {
    let v = clixml::from_clixml(text)?;
    v.prop("InformationalRecord_Message")
        .and_then(Value::as_str)
        .or_else(|| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| missing("WARNING_RECORD", "InformationalRecord_Message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_capability_matches_the_spec_example_and_round_trips() {
        let c = SessionCapability::windows_powershell();
        let text = c.to_clixml();
        assert_eq!(
            text,
            r#"<Obj RefId="0"><MS><Version N="protocolversion">2.3</Version><Version N="PSVersion">2.0</Version><Version N="SerializationVersion">1.1.0.1</Version></MS></Obj>"#
        );
        assert_eq!(SessionCapability::parse(&text).unwrap(), c);
        // As the spec's example (2.2.2.1) sends it, with a TimeZone.
        let spec = r#"<Obj RefId="0"><MS><Version N="protocolversion">2.2</Version><Version N="PSVersion">2.0</Version><Version N="SerializationVersion">1.1.0.1</Version><BA N="TimeZone">AAEAAAD/////AQAAAAAAAAAEAQAAABxTeXN0ZW0uQ3VycmVudFN5c3RlbVRpbWVab25lBAAAABdtX0NhY2hlZERheWxpZ2h0Q2hhbmdlcw1tX3RpY2tzT2Zmc2V0Dm1fc3RhbmRhcmROYW1lDm1fZGF5bGlnaHROYW1lAwABARxTeXN0ZW0uQ29sbGVjdGlvbnMuSGFzaHRhYmxlCQkCAAAAAPgpFz/////+BgMAAAAVUGFjaWZpYyBTdGFuZGFyZCBUaW1lBgQAAAAVUGFjaWZpYyBEYXlsaWdodCBUaW1lBAIAAAAcU3lzdGVtLkNvbGxlY3Rpb25zLkhhc2h0YWJsZQcAAAAKTG9hZEZhY3RvcgdWZXJzaW9uCENvbXBhcmVyEEhhc2hDb2RlUHJvdmlkZXIISGFzaFNpemUES2V5cwZWYWx1ZXMAAAMDAAUFCwgcU3lzdGVtLkNvbGxlY3Rpb25zLklDb21wYXJlciRTeXN0ZW0uQ29sbGVjdGlvbnMuSUhhc2hDb2RlUHJvdmlkZXII7FE4PwAAAAAKCgMAAAAJBQAAAAkGAAAAEAUAAAAAAAAAEAYAAAAAAAAACw==</BA></MS></Obj>"#;
        let parsed = SessionCapability::parse(spec).unwrap();
        assert_eq!(parsed.protocol_version, "2.2");
        assert!(parsed.time_zone.unwrap().len() > 100);
    }

    #[test]
    fn init_runspace_pool_round_trips() {
        let i = InitRunspacePool::default();
        let text = i.to_clixml();
        assert!(text.contains(r#"<Obj N="PSThreadOptions" RefId="1"><TN RefId="0"><T>System.Management.Automation.Runspaces.PSThreadOptions</T>"#), "{text}");
        assert_eq!(InitRunspacePool::parse(&text).unwrap(), i);
    }

    #[test]
    fn application_private_data_round_trips() {
        let entries = vec![(
            Value::string("PSVersionTable"),
            Value::hashtable(vec![(
                Value::string("PSVersion"),
                Value::Version("5.1".into()),
            )]),
        )];
        let text = application_private_data(&entries);
        assert_eq!(parse_application_private_data(&text).unwrap(), entries);
        assert_eq!(
            parse_application_private_data(&application_private_data(&[])).unwrap(),
            vec![]
        );
    }

    #[test]
    fn states_round_trip_with_their_error() {
        let e = ErrorRecord {
            exception_types: vec![
                "System.Management.Automation.CommandNotFoundException".into(),
                "System.Exception".into(),
                "System.Object".into(),
            ],
            message: "The term 'x' is not recognized".into(),
            fully_qualified_error_id: "CommandNotFoundException".into(),
            category: category::OBJECT_NOT_FOUND,
            activity: "".into(),
            reason: "CommandNotFoundException".into(),
            target_name: "x".into(),
            target_type: "String".into(),
        };
        let text = pipeline_state(PipelineState::Failed, Some(&e));
        assert_eq!(
            parse_pipeline_state(&text).unwrap(),
            (PipelineState::Failed, Some(e.clone()))
        );
        assert_eq!(
            parse_pipeline_state(&pipeline_state(PipelineState::Completed, None)).unwrap(),
            (PipelineState::Completed, None)
        );
        assert_eq!(
            runspace_pool_state(RunspacePoolState::Opened, None),
            r#"<Obj RefId="0"><MS><I32 N="RunspaceState">2</I32></MS></Obj>"#
        );
        assert_eq!(
            parse_runspace_pool_state(&runspace_pool_state(RunspacePoolState::Broken, Some(&e)))
                .unwrap()
                .0,
            RunspacePoolState::Broken
        );
        assert_eq!(
            e.category_message(),
            "ObjectNotFound: (x:String) [], CommandNotFoundException"
        );
        assert_eq!(ErrorRecord::parse(&e.to_clixml()).unwrap(), e);
    }

    #[test]
    fn create_pipeline_round_trips_a_cmdlet_with_named_parameters() {
        let p = CreatePipeline::single(
            Command::cmdlet("Set-CASMailbox")
                .param("Identity", "user1@contoso.com")
                .param(
                    "ActiveSyncAllowedDeviceIDs",
                    Value::hashtable(vec![(
                        Value::string("Add"),
                        Value::array(vec![Value::string("dev1")]),
                    )]),
                )
                .switch("Confirm"),
        );
        let text = p.to_clixml();
        let back = CreatePipeline::parse(&text).unwrap();
        assert_eq!(back, p);
        let cmd = back.commands().next().unwrap();
        assert_eq!(
            cmd.get("identity").unwrap().as_str(),
            Some("user1@contoso.com")
        );
        assert!(!cmd.is_script);
        let two = CreatePipeline {
            statements: vec![
                vec![Command::script("1")],
                vec![Command::cmdlet("Get-Date")],
            ],
            ..p
        };
        assert_eq!(CreatePipeline::parse(&two.to_clixml()).unwrap(), two);
        assert!(matches!(
            CreatePipeline::parse("<Obj RefId=\"0\"><MS /></Obj>"),
            Err(BodyError::Missing {
                property: "PowerShell",
                ..
            })
        ));
    }

    #[test]
    fn parses_create_pipeline_as_pypsrp_writes_it() {
        // The shape pypsrp 0.8 sends for `PowerShell(pool).add_cmdlet("Get-CASMailbox").add_parameter("Identity", "u1")`.
        let text = r#"<Obj RefId="0"><MS><Obj N="PowerShell" RefId="1"><MS><Obj N="Cmds" RefId="2"><TN RefId="0"><T>System.Collections.Generic.List`1[[System.Management.Automation.PSObject, System.Management.Automation, Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]</T><T>System.Object</T></TN><LST><Obj RefId="3"><MS><S N="Cmd">Get-CASMailbox</S><B N="IsScript">false</B><Nil N="UseLocalScope" /><Obj N="MergeMyResult" RefId="4"><TN RefId="1"><T>System.Management.Automation.Runspaces.PipelineResultTypes</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>None</ToString><I32>0</I32></Obj><Obj N="Args" RefId="5"><TNRef RefId="0" /><LST><Obj RefId="6"><MS><S N="N">Identity</S><S N="V">u1</S></MS></Obj></LST></Obj></MS></Obj></LST></Obj><B N="IsNested">false</B><Nil N="History" /><B N="RedirectShellErrorOutputPipe">true</B></MS></Obj><B N="NoInput">true</B><Obj N="ApartmentState" RefId="7"><TN RefId="2"><T>System.Threading.ApartmentState</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>Unknown</ToString><I32>2</I32></Obj><Obj N="RemoteStreamOptions" RefId="8"><TN RefId="3"><T>System.Management.Automation.RemoteStreamOptions</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>None</ToString><I32>0</I32></Obj><B N="AddToHistory">false</B><Obj N="HostInfo" RefId="9"><MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B><B N="_isHostRawUINull">true</B><B N="_useRunspaceHost">true</B></MS></Obj><B N="IsNested">false</B></MS></Obj>"#;
        let p = CreatePipeline::parse(text).unwrap();
        let cmd = p.commands().next().unwrap();
        assert_eq!(cmd.name, "Get-CASMailbox");
        assert_eq!(
            cmd.parameters,
            vec![Parameter {
                name: Some("Identity".into()),
                value: Value::string("u1")
            }]
        );
    }

    #[test]
    fn warning_record_round_trips() {
        assert_eq!(
            parse_informational_record(&warning_record("Only the first 1000 items")).unwrap(),
            "Only the first 1000 items"
        );
    }
}
