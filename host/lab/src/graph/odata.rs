//! OData query options of the Graph side: `$select`, `$top`, `$skiptoken` and the `$filter`
//! clauses Intune answers for `managedDevices`.
//!
//! Supported `$filter`: `lastSyncDateTime` with `ge`/`gt`/`le`/`lt` and an unquoted
//! DateTimeOffset, and `eq` on `easDeviceId`, `complianceState`, `operatingSystem`,
//! `userPrincipalName` with a quoted string; clauses joined by `and`, optionally parenthesized.
//! Anything else — another property, `or`, `not`, functions, a quoted date — is a 400, never
//! silently ignored: a client that got an unfiltered answer to a filtered question would act on
//! the wrong devices.

use crate::utc::Utc;

/// A Graph error to answer with: (code, message).
pub(crate) type ODataError = (&'static str, String);

fn bad(message: String) -> ODataError {
    ("BadRequest", message)
}

/// Parses `$select` against the entity's property list into a bit set.
pub(crate) fn select(text: Option<&str>, fields: &[&str], entity: &str) -> Result<u64, ODataError> {
    let Some(text) = text else {
        return Ok(u64::MAX);
    };
    let mut bits = 0u64;
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let i = fields
            .iter()
            .position(|f| f.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                bad(format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.{entity}'."
                ))
            })?;
        bits |= 1 << i;
    }
    if bits == 0 {
        return Err(bad(
            "The query specified in the URI is not valid. $select is empty.".into(),
        ));
    }
    Ok(bits)
}

/// Parses `$top` (1 ..= `max`; larger values are clamped, as Graph pages them anyway).
pub(crate) fn top(text: Option<&str>, max: usize) -> Result<Option<usize>, ODataError> {
    match text {
        None => Ok(None),
        Some(t) => match t.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n.min(max))),
            _ => Err(bad(format!(
                "Invalid value '{t}' for $top query option found. The $top query option requires a non-negative integer value."
            ))),
        },
    }
}

/// Query options a resource accepts; others starting with `$` are rejected.
pub(crate) fn check_options<'a>(
    keys: impl Iterator<Item = &'a str>,
    allowed: &[&str],
) -> Result<(), ODataError> {
    for k in keys.filter(|k| k.starts_with('$')) {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(k)) {
            return Err(bad(format!(
                "Query option '{k}' is not supported for this request."
            )));
        }
    }
    Ok(())
}

/// A comparison of `lastSyncDateTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeOp {
    Ge,
    Gt,
    Le,
    Lt,
}

/// One supported `$filter` clause of `managedDevices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Clause {
    LastSync(TimeOp, Utc),
    EasDeviceId(String),
    ComplianceState(String),
    OperatingSystem(String),
    UserPrincipalName(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Word(String),
    Str(String),
}

fn tokenize(text: &str) -> Result<Vec<Tok>, ODataError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(bad("Unterminated string literal in $filter.".into())),
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        Some('\'') => break,
                        Some(ch) => s.push(ch),
                    }
                }
                out.push(Tok::Str(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || ch == '(' || ch == ')' || ch == '\'' {
                        break;
                    }
                    w.push(ch);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

fn unsupported(detail: &str) -> ODataError {
    bad(format!("Invalid filter clause: {detail}"))
}

/// Parses a `managedDevices` `$filter` into its clauses (all must hold).
pub(crate) fn managed_device_filter(text: &str) -> Result<Vec<Clause>, ODataError> {
    let toks = tokenize(text)?;
    let mut clauses = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let mut expect_clause = true;
    while i < toks.len() {
        match &toks[i] {
            Tok::Open if expect_clause => {
                depth += 1;
                i += 1;
            }
            Tok::Close if !expect_clause && depth > 0 => {
                depth -= 1;
                i += 1;
            }
            Tok::Word(w) if !expect_clause && w.eq_ignore_ascii_case("and") => {
                expect_clause = true;
                i += 1;
            }
            Tok::Word(w) if !expect_clause => {
                return Err(unsupported(&format!(
                    "the operator '{w}' is not supported; only 'and' can combine clauses"
                )));
            }
            Tok::Word(prop) if expect_clause => {
                let (Some(Tok::Word(op)), Some(value)) = (toks.get(i + 1), toks.get(i + 2)) else {
                    return Err(unsupported(&format!("incomplete comparison of '{prop}'")));
                };
                clauses.push(clause(prop, op, value)?);
                i += 3;
                expect_clause = false;
            }
            _ => return Err(unsupported("syntax error")),
        }
    }
    if expect_clause || depth != 0 {
        return Err(unsupported("syntax error at end of expression"));
    }
    Ok(clauses)
}

fn clause(prop: &str, op: &str, value: &Tok) -> Result<Clause, ODataError> {
    let op = op.to_ascii_lowercase();
    if prop == "lastSyncDateTime" {
        let op = match op.as_str() {
            "ge" => TimeOp::Ge,
            "gt" => TimeOp::Gt,
            "le" => TimeOp::Le,
            "lt" => TimeOp::Lt,
            other => {
                return Err(unsupported(&format!(
                    "operator '{other}' is not supported on 'lastSyncDateTime'"
                )));
            }
        };
        return match value {
            Tok::Word(w) => Utc::parse_iso(w)
                .map(|t| Clause::LastSync(op, t))
                .ok_or_else(|| bad(format!("The DateTimeOffset text '{w}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range."))),
            Tok::Str(_) => Err(bad(
                "A binary operator with incompatible types was detected. Found operand types 'Edm.DateTimeOffset' and 'Edm.String' for operator kind 'GreaterThanOrEqual'.".into(),
            )),
            _ => Err(unsupported("missing value")),
        };
    }
    let make: fn(String) -> Clause = match prop {
        "easDeviceId" => Clause::EasDeviceId,
        "complianceState" => Clause::ComplianceState,
        "operatingSystem" => Clause::OperatingSystem,
        "userPrincipalName" => Clause::UserPrincipalName,
        other => {
            return Err(unsupported(&format!(
                "filtering on '{other}' is not supported"
            )));
        }
    };
    if op != "eq" {
        return Err(unsupported(&format!(
            "operator '{op}' is not supported on '{prop}'; use 'eq'"
        )));
    }
    match value {
        Tok::Str(s) => Ok(make(s.clone())),
        _ => Err(unsupported(&format!(
            "'{prop}' must be compared with a quoted string"
        ))),
    }
}

/// Percent-encodes a query value the way Graph writes its `@odata.nextLink`s.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'$'
            | b','
            | b':' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_filters() {
        let t = Utc::from_ymd_hms(2024, 5, 1, 0, 0, 0).unwrap();
        assert_eq!(
            managed_device_filter("lastSyncDateTime ge 2024-05-01T00:00:00Z").unwrap(),
            [Clause::LastSync(TimeOp::Ge, t)]
        );
        assert_eq!(
            managed_device_filter(
                "(easDeviceId eq 'ab''c') and lastSyncDateTime lt 2024-05-01T00:00:00Z"
            )
            .unwrap(),
            [
                Clause::EasDeviceId("ab'c".into()),
                Clause::LastSync(TimeOp::Lt, t)
            ]
        );
        assert_eq!(
            managed_device_filter("complianceState eq 'noncompliant'").unwrap(),
            [Clause::ComplianceState("noncompliant".into())]
        );
    }

    #[test]
    fn rejects_everything_else() {
        for f in [
            "deviceName eq 'x'",
            "easDeviceId eq 'a' or easDeviceId eq 'b'",
            "not (easDeviceId eq 'a')",
            "easDeviceId ne 'a'",
            "easDeviceId eq a",
            "lastSyncDateTime ge '2024-05-01T00:00:00Z'",
            "lastSyncDateTime eq 2024-05-01T00:00:00Z",
            "lastSyncDateTime ge yesterday",
            "startswith(deviceName,'a')",
            "easDeviceId eq 'a' and",
            "(easDeviceId eq 'a'",
            "",
        ] {
            assert!(managed_device_filter(f).is_err(), "{f}");
        }
    }

    #[test]
    fn select_and_top() {
        let fields = ["id", "easDeviceId", "complianceState"];
        assert_eq!(
            select(Some("id,complianceState"), &fields, "managedDevice").unwrap(),
            0b101
        );
        assert_eq!(select(None, &fields, "managedDevice").unwrap(), u64::MAX);
        let e = select(Some("id,nope"), &fields, "managedDevice").unwrap_err();
        assert!(e.1.contains("'nope'"));
        assert_eq!(top(Some("5000"), 1000).unwrap(), Some(1000));
        assert!(top(Some("0"), 1000).is_err());
        assert!(top(Some("x"), 1000).is_err());
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            encode("lastSyncDateTime ge 2024-05-01T00:00:00Z"),
            "lastSyncDateTime%20ge%202024-05-01T00:00:00Z"
        );
        assert_eq!(encode("a'b&c"), "a%27b%26c");
    }
}
