//! Between the connector's own shapes and PSRP's: a planned [`Command`] becomes a pipeline of
//! one cmdlet; Exchange's deserialized objects become the JSON the REST admin API would have
//! sent for them (so the serde models in `exchange::models` read both); an `ErrorRecord`
//! becomes a [`CmdletFailure`] the error classes (`is_not_found`, …) understand.

use easgate_psrp::messages::category;
use easgate_psrp::{ErrorRecord, Value};
#[cfg(test)]
use {
    easgate_psrp::Container,
    serde_json::{Map, Number, Value as Json},
};

use crate::exchange::CmdletFailure;
use crate::model::{Command, ParamValue};

/// The pipeline that runs `command`: the cmdlet with its parameters, as PowerShell would
/// bind them from `Set-CASMailbox -Identity 'alice' -ActiveSyncAllowedDeviceIDs @{Add='X'}`,
/// then `| Select-Object -Property <selection>` when given.
pub fn pipeline(command: &Command, selection: Option<&[&str]>) -> easgate_psrp::CreatePipeline {
    let mut c = easgate_psrp::Command::cmdlet(command.cmdlet.clone());
    for (name, value) in command.parameters.iter() {
        c = match value {
            ParamValue::Switch => c.switch(name),
            other => c.param(name, param(other)),
        };
    }
    let mut pipeline = easgate_psrp::CreatePipeline::single(c);
    if let Some(names) = selection {
        let names = Value::array(names.iter().map(|n| Value::string(*n)).collect());
        pipeline.statements[0]
            .push(easgate_psrp::Command::cmdlet("Select-Object").param("Property", names));
    }
    pipeline
}

fn param(v: &ParamValue) -> Value {
    let texts = |items: &[String]| Value::array(items.iter().map(Value::string).collect());
    match v {
        ParamValue::Text(s) => Value::string(s),
        ParamValue::Texts(items) => texts(items),
        ParamValue::Int(n) => match i32::try_from(*n) {
            Ok(n) => Value::I32(n),
            Err(_) => Value::I64(*n),
        },
        // Exchange's `Unlimited<T>` parameters bind from the string.
        ParamValue::Unlimited => Value::string("Unlimited"),
        ParamValue::Switch | ParamValue::Bool(true) => Value::Bool(true),
        ParamValue::Bool(false) => Value::Bool(false),
        ParamValue::HashEdit { add, remove } => {
            let mut entries = Vec::new();
            if !add.is_empty() {
                entries.push((Value::string("Add"), texts(add)));
            }
            if !remove.is_empty() {
                entries.push((Value::string("Remove"), texts(remove)));
            }
            Value::hashtable(entries)
        }
    }
}

/// One output object as the admin API's JSON would have it: properties by their Exchange
/// names, enums as their names, multi-valued properties as arrays, dates as ISO 8601 text.
///
/// The definition of the mapping, on decoded values: the transport writes the same JSON
/// straight from the CLIXML ([`super::objects::write_json`]), whose tests compare the two.
#[cfg(test)]
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::String(s) => Json::String(s.clone()),
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::Double(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::DateTime(text) => Json::String(utc_text(text)),
        Value::Guid(g) => Json::String(g.to_string()),
        Value::Version(s) => Json::String(s.clone()),
        Value::Char(c) => {
            Json::String(char::from_u32(u32::from(*c)).map_or_else(String::new, String::from))
        }
        Value::Bytes(b) => {
            use base64::Engine as _;
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Value::Other { text, .. } => Json::String(text.clone()),
        Value::Object(o) => {
            match &o.container {
                Container::List(_, items) => {
                    return Json::Array(items.iter().map(to_json).collect());
                }
                Container::Dict(entries) => {
                    let mut m = Map::new();
                    for (k, v) in entries {
                        let key = match to_json(k) {
                            Json::String(s) => s,
                            other => other.to_string(),
                        };
                        m.insert(key, to_json(v));
                    }
                    return Json::Object(m);
                }
                Container::None => {}
            }
            if !o.adapted.is_empty() || !o.extended.is_empty() {
                let mut m = Map::new();
                for (k, v) in o.adapted.iter().chain(&o.extended) {
                    m.entry(k.clone()).or_insert_with(|| to_json(v));
                }
                return Json::Object(m);
            }
            // An enum is its name; another object with nothing but a text is that text.
            if let Some(text) = &o.to_string
                && (o.base.is_none() || o.type_names.iter().any(|t| t.ends_with("System.Enum")))
            {
                return Json::String(text.clone());
            }
            match &o.base {
                Some(base) => to_json(base),
                None => Json::Null,
            }
        }
    }
}

/// A CLIXML `DateTime` as UTC text the connector's timestamps read: .NET writes a local or
/// unspecified time without a zone, which on a server is taken as UTC.
pub(super) fn utc_text(text: &str) -> String {
    let t = text.trim();
    let has_zone = t.ends_with('Z')
        || t.ends_with('z')
        || t.get(19..).is_some_and(|tail| tail.contains(['+', '-']));
    if has_zone || t.len() < 19 {
        t.to_owned()
    } else {
        format!("{t}Z")
    }
}

/// What an `ErrorRecord` says, for the connector's error classes. `cas` is the endpoint.
pub fn failure(cmdlet: &str, cas: &str, e: &ErrorRecord) -> CmdletFailure {
    let exception = e
        .exception_types
        .first()
        .map(|t| t.strip_prefix("Deserialized.").unwrap_or(t).to_owned())
        .filter(|t| !t.is_empty())
        .or_else(|| exception_from_id(&e.fully_qualified_error_id))
        .unwrap_or_default();
    let (status, code) = match e.category {
        // A cmdlet missing from the session is PowerShell's ObjectNotFound too, but it must
        // never read as "the object is gone" (a removal would count as done): it is a denial.
        _ if is_missing_cmdlet(e) => (403, "Forbidden"),
        category::OBJECT_NOT_FOUND => (404, "NotFound"),
        category::PERMISSION_DENIED => (403, "Forbidden"),
        category::LIMITS_EXCEEDED | category::QUOTA_EXCEEDED => (429, "TooManyRequests"),
        _ => (400, "BadRequest"),
    };
    let mut message = crate::net::first_line(&e.message);
    if is_missing_cmdlet(e) {
        message = format!(
            "{message} — the service account's management roles do not include {cmdlet}: add \
             it to the role assigned to the account (New-ManagementRoleEntry \
             \"<role>\\{cmdlet}\"), then reconnect"
        );
    }
    CmdletFailure {
        cmdlet: cmdlet.to_owned(),
        cas: cas.to_owned(),
        status,
        code: code.to_owned(),
        exception,
        category: category::name(e.category).to_owned(),
        message,
    }
}

/// Exchange writes `[FailureCategory=Cmdlet-ManagementObjectNotFoundException] …` into the
/// error id; when the record's exception carries no type names, that names it.
fn exception_from_id(id: &str) -> Option<String> {
    let start = id.find("FailureCategory=")? + "FailureCategory=".len();
    let rest = &id[start..];
    let end = rest.find(']').unwrap_or(rest.len());
    let name = rest[..end].rsplit('-').next()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// A cmdlet that is not in the session: not in the account's roles (or not a cmdlet at all).
pub fn is_missing_cmdlet(e: &ErrorRecord) -> bool {
    e.fully_qualified_error_id
        .starts_with("CommandNotFoundException")
        || e.exception_types
            .iter()
            .any(|t| t.ends_with("CommandNotFoundException"))
}

/// The session refuses the `Select-Object -Property` stage a listing ends in: the command is
/// not there (a configuration offering the role's cmdlets alone), or it is a proxy that takes
/// other properties only (as a `RestrictedRemoteServer` endpoint's takes `Get-Command`'s).
pub fn refuses_select_object(e: &ErrorRecord) -> bool {
    let names_it = |s: &str| s.trim().eq_ignore_ascii_case("Select-Object");
    let missing =
        is_missing_cmdlet(e) && (names_it(&e.target_name) || e.message.contains("'Select-Object'"));
    // A restricted endpoint's proxy of it fails its ValidateSet on other properties: the error
    // is raised by the command itself (its activity, and the id's last part).
    let raised = names_it(&e.activity)
        || e.fully_qualified_error_id
            .rsplit_once(',')
            .is_some_and(|(_, command)| names_it(command));
    missing || (raised && !record_is_throttling(e))
}

/// Exchange's remote PowerShell throttling, in an error record or a fault's text: the
/// account's concurrent shells (`PowerShellMaxConcurrency`) or its cmdlet quota (the user
/// load quota, `PowerShellMaxCmdlets`…). Both pass with time, like a 429.
pub fn is_throttling(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "user load quota",
        "concurrent shells",
        "quotalimit",
        "exceeded the maximum number of connections",
        "maxconcurrency",
        "powershellmaxconcurrency",
        "powershellmaxcmdlets",
        "exceeded the budget",
        "overbudgetexception",
        "throttl",
    ]
    .iter()
    .any(|needle| t.contains(needle))
}

/// An error record that is throttling rather than a refusal of the cmdlet.
pub fn record_is_throttling(e: &ErrorRecord) -> bool {
    is_throttling(&e.message)
        || is_throttling(&e.fully_qualified_error_id)
        || e.exception_types.iter().any(|t| is_throttling(t))
}

/// How long Exchange asks to wait: "… Please wait N seconds …", "… will not be approved for
/// at least N milliseconds."
pub fn wait_hint(text: &str) -> Option<std::time::Duration> {
    let t = text.to_ascii_lowercase();
    let after = ["wait", "at least", "after"]
        .iter()
        .find_map(|w| t.find(w))?;
    let rest = &t[after..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let digits: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let n: u64 = digits.parse().ok()?;
    let unit = rest[start + digits.len()..].trim_start();
    let wait = if unit.starts_with("millisecond") || unit.starts_with("ms") {
        std::time::Duration::from_millis(n)
    } else if unit.starts_with("second") {
        std::time::Duration::from_secs(n)
    } else {
        return None;
    };
    (!wait.is_zero() && wait <= std::time::Duration::from_secs(3600)).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Parameters;
    use easgate_psrp::Object;
    use serde_json::json;

    #[test]
    fn parameters_become_what_powershell_binds() {
        let c = Command::new(
            "Set-CASMailbox",
            Parameters::new()
                .text("Identity", "alice")
                .hash_edit("ActiveSyncAllowedDeviceIDs", vec!["ID1".into()], vec![])
                .hash_edit("ActiveSyncBlockedDeviceIDs", vec![], vec!["ID2".into()])
                .unlimited("ResultSize")
                .switch("ActiveSync")
                .bool("Confirm", false)
                .int("Limit", 5)
                .texts("Mailbox", vec!["a".into(), "b".into()]),
        );
        let p = pipeline(&c, None);
        assert_eq!(p.commands().count(), 1);
        let cmd = p.commands().next().unwrap();
        assert_eq!(cmd.name, "Set-CASMailbox");
        assert!(!cmd.is_script);
        assert_eq!(cmd.get("Identity"), Some(&Value::string("alice")));
        assert_eq!(
            cmd.get("ActiveSyncAllowedDeviceIDs"),
            Some(&Value::hashtable(vec![(
                Value::string("Add"),
                Value::array(vec![Value::string("ID1")])
            )]))
        );
        assert_eq!(
            cmd.get("ActiveSyncBlockedDeviceIDs"),
            Some(&Value::hashtable(vec![(
                Value::string("Remove"),
                Value::array(vec![Value::string("ID2")])
            )]))
        );
        assert_eq!(cmd.get("ResultSize"), Some(&Value::string("Unlimited")));
        assert_eq!(cmd.get("ActiveSync"), Some(&Value::Bool(true)));
        assert_eq!(cmd.get("Confirm"), Some(&Value::Bool(false)));
        assert_eq!(cmd.get("Limit"), Some(&Value::I32(5)));
        assert_eq!(
            cmd.get("Mailbox"),
            Some(&Value::array(vec![Value::string("a"), Value::string("b")]))
        );
        // And it goes out as CLIXML the codec reads back the same.
        let back = easgate_psrp::CreatePipeline::parse(&p.to_clixml()).unwrap();
        assert_eq!(back.commands().next(), Some(cmd));
    }

    #[test]
    fn a_selection_follows_the_cmdlet_in_the_same_statement() {
        let c = Command::new("Get-MobileDevice", Parameters::new().switch("ActiveSync"));
        let p = pipeline(&c, Some(&["Identity", "DeviceId"]));
        assert_eq!(
            p.statements.len(),
            1,
            "one statement: a pipe, not a second command"
        );
        let names: Vec<_> = p.commands().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Get-MobileDevice", "Select-Object"]);
        let select = p.commands().nth(1).unwrap();
        assert_eq!(
            select.get("Property"),
            Some(&Value::array(vec![
                Value::string("Identity"),
                Value::string("DeviceId")
            ]))
        );
        let back = easgate_psrp::CreatePipeline::parse(&p.to_clixml()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn exchange_objects_read_as_the_rest_json_the_models_decode() {
        let device = Value::Object(Box::new(Object {
            type_names: vec![
                "Deserialized.Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice"
                    .into(),
                "Deserialized.System.Object".into(),
            ],
            to_string: Some("iPhone§ABC".into()),
            adapted: vec![
                (
                    "Identity".into(),
                    Value::string("alice\\ExchangeActiveSyncDevices\\iPhone§ABC"),
                ),
                ("DeviceId".into(), Value::string("ABC")),
                ("DeviceOS".into(), Value::Null),
                (
                    "FirstSyncTime".into(),
                    Value::DateTime("2024-05-01T10:00:00.1234567".into()),
                ),
                (
                    "DeviceAccessState".into(),
                    Value::enumeration(
                        "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessState",
                        "Quarantined",
                        3,
                    ),
                ),
                (
                    "DeviceAccessStateReason".into(),
                    Value::enumeration("X", "Global", 2),
                ),
                (
                    "WhenChanged".into(),
                    Value::DateTime("2024-05-02T10:00:00+02:00".into()),
                ),
            ],
            ..Object::default()
        }));
        let json = to_json(&device);
        assert_eq!(json["DeviceAccessState"], json!("Quarantined"));
        assert_eq!(json["FirstSyncTime"], json!("2024-05-01T10:00:00.1234567Z"));
        assert_eq!(json["WhenChanged"], json!("2024-05-02T10:00:00+02:00"));
        let d: crate::exchange::models::MobileDevice = serde_json::from_value(json).unwrap();
        assert_eq!(d.device_id, "ABC");
        assert_eq!(
            d.device_access_state,
            crate::exchange::models::DeviceAccessState::Quarantined
        );
        assert_eq!(d.mailbox(), "alice");

        let mailbox = Value::Object(Box::new(Object {
            adapted: vec![
                ("Identity".into(), Value::string("alice")),
                ("PrimarySmtpAddress".into(), Value::string("alice@contoso.com")),
                (
                    "ActiveSyncAllowedDeviceIDs".into(),
                    Value::Object(Box::new(Object {
                        type_names: vec!["Deserialized.Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String]]".into()],
                        container: Container::List(easgate_psrp::ListKind::List, vec![Value::string("ID1")]),
                        ..Object::default()
                    })),
                ),
                ("ActiveSyncBlockedDeviceIDs".into(), Value::Null),
            ],
            ..Object::default()
        }));
        let m: crate::exchange::models::CasMailbox =
            serde_json::from_value(to_json(&mailbox)).unwrap();
        assert_eq!(m.active_sync_allowed_device_ids, vec!["ID1"]);
        assert!(m.active_sync_blocked_device_ids.is_empty());
    }

    fn record(types: &[&str], id: &str, cat: i32, message: &str) -> ErrorRecord {
        ErrorRecord {
            exception_types: types.iter().map(|s| (*s).to_owned()).collect(),
            message: message.into(),
            fully_qualified_error_id: id.into(),
            category: cat,
            activity: String::new(),
            reason: String::new(),
            target_name: String::new(),
            target_type: String::new(),
        }
    }

    #[test]
    fn a_missing_or_restricted_select_object_is_told_from_the_cmdlets_own_errors() {
        let binding = "System.Management.Automation.ParameterBindingException";
        let missing = ErrorRecord {
            target_name: "Select-Object".into(),
            ..record(
                &["System.Management.Automation.CommandNotFoundException"],
                "CommandNotFoundException",
                category::OBJECT_NOT_FOUND,
                "The term 'Select-Object' is not recognized as the name of a cmdlet…",
            )
        };
        assert!(refuses_select_object(&missing));
        let not_in_set = ErrorRecord {
            activity: "Select-Object".into(),
            ..record(
                &[binding],
                "ParameterArgumentValidationError,Select-Object",
                category::INVALID_DATA,
                "Cannot validate argument on parameter 'Property'. The argument \"DeviceId\" does not belong to the set…",
            )
        };
        assert!(refuses_select_object(&not_in_set));
        // The listing cmdlet's own refusals, a missing role cmdlet and throttling are not it.
        let own = ErrorRecord {
            activity: "Get-MobileDevice".into(),
            ..record(
                &[binding],
                "NamedParameterNotFound,Get-MobileDevice",
                category::INVALID_ARGUMENT,
                "A parameter cannot be found that matches parameter name 'Bogus'.",
            )
        };
        assert!(!refuses_select_object(&own));
        let other_missing = ErrorRecord {
            target_name: "Get-MobileDevice".into(),
            ..record(
                &["System.Management.Automation.CommandNotFoundException"],
                "CommandNotFoundException",
                category::OBJECT_NOT_FOUND,
                "The term 'Get-MobileDevice' is not recognized…",
            )
        };
        assert!(!refuses_select_object(&other_missing));
        let throttled = ErrorRecord {
            activity: "Select-Object".into(),
            ..record(
                &["System.Management.Automation.RemoteException"],
                "RemoteException,Select-Object",
                category::NOT_SPECIFIED,
                "The user load quota of 400 cmdlets was exceeded",
            )
        };
        assert!(!refuses_select_object(&throttled));
    }

    #[test]
    fn error_records_map_onto_the_error_classes() {
        let cas = "http://cas01/PowerShell/";
        let not_found = record(
            &[
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                "System.Exception",
            ],
            "[Server=CAS01] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] 9F2D0DD1,Microsoft.Exchange.Management.Tasks.SetCASMailbox",
            category::OBJECT_NOT_FOUND,
            "The operation couldn't be performed because object 'bob' couldn't be found.",
        );
        let e = crate::exchange::ExchangeError::Cmdlet(Box::new(failure(
            "Set-CASMailbox",
            cas,
            &not_found,
        )));
        assert!(e.is_not_found(), "{e}");
        assert!(!e.is_repeat_of_applied());
        // Without type names the error id still names the exception.
        let bare = record(&[], &not_found.fully_qualified_error_id, 0, "x");
        assert_eq!(
            failure("Get-Mailbox", cas, &bare).exception,
            "ManagementObjectNotFoundException"
        );
        let present = record(
            &["System.InvalidOperationException"],
            "x",
            category::INVALID_OPERATION,
            "The value \"ID1\" is already present in the collection.",
        );
        let e = crate::exchange::ExchangeError::Cmdlet(Box::new(failure(
            "Set-CASMailbox",
            cas,
            &present,
        )));
        assert!(e.is_repeat_of_applied());
        let missing = record(
            &["System.Management.Automation.CommandNotFoundException"],
            "CommandNotFoundException",
            category::OBJECT_NOT_FOUND,
            "The term 'Remove-MobileDevice' is not recognized as the name of a cmdlet, function, script file, or operable program.",
        );
        assert!(is_missing_cmdlet(&missing));
        let f = failure("Remove-MobileDevice", cas, &missing);
        assert!(
            f.message
                .contains("management roles do not include Remove-MobileDevice"),
            "{}",
            f.message
        );
        assert!(!crate::exchange::ExchangeError::Cmdlet(Box::new(f)).is_not_found());
        let quota = record(
            &[],
            "",
            category::QUOTA_EXCEEDED,
            "The user load quota of 400 requests per 60 seconds has been exceeded. Please wait 12 seconds.",
        );
        assert!(record_is_throttling(&quota));
        assert_eq!(
            wait_hint(&quota.message),
            Some(std::time::Duration::from_secs(12))
        );
        assert!(!record_is_throttling(&not_found));
        for (fault, wait) in [
            (
                "The WS-Management service cannot process the request. The user load quota of 5 \
                 requests per 10 seconds has been exceeded. Send future requests at a slower rate \
                 or raise the quota for this user. The next request from this user will not be \
                 approved for at least 1500 milliseconds.",
                Some(std::time::Duration::from_millis(1500)),
            ),
            (
                "The WS-Management service cannot process the request. This user is allowed a \
                 maximum number of 18 concurrent shells, which has been exceeded. Close existing \
                 shells or raise the quota for this user.",
                None,
            ),
        ] {
            assert!(is_throttling(fault), "{fault}");
            assert_eq!(wait_hint(fault), wait, "{fault}");
        }
        assert!(!is_throttling("The shell was not found on the server."));
    }
}
