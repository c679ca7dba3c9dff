//! Exchange-style errors of the admin API, shaped as Exchange Online answers a cmdlet that failed:
//!
//! ```text
//! {"error":{"code":"NotFound","message":"Error executing cmdlet",
//!   "details":[{"code":"Context","target":"","message":"Ex6F9304|Microsoft.Exchange.…Exception|text"}],
//!   "innererror":{"message":"Error executing cmdlet","type":"Microsoft.Exchange.Admin.OData.Core.ODataServiceException","stacktrace":"…"}}}
//! ```
//!
//! (as real answers quoted in public bug reports show it). A client classifies on the middle part
//! of `details[].message`, the .NET exception Exchange threw, and reads the text from its last
//! part: `error.message` says only that a cmdlet failed. The first part is Exchange's id of the
//! error site (`Ex` and six hex digits); the lab derives it from the exception type, and uses the
//! `Ex6F9304` real answers carry for not found. The PowerShell error category is not in the REST
//! body (the remote PowerShell face still writes it into its ErrorRecords).
//!
//! Refusals before any cmdlet runs (token, throttling, a failing CAS, a malformed request or skip
//! token) carry their own text in `error.message` and an empty id: no public example of those
//! was found, so they keep the rest of the shape, the lab's best guess.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{exception}: {message}")]
pub(crate) struct CmdletError {
    pub status: StatusCode,
    pub code: &'static str,
    pub exception: &'static str,
    pub category: &'static str,
    pub message: String,
    /// Seconds for `Retry-After`, on throttling.
    pub retry_after: Option<u64>,
    /// Whether the cmdlet ran and failed ("Error executing cmdlet"), rather than the request
    /// being refused before it.
    pub executed: bool,
}

/// The generic `error.message` (and `innererror.message`) of a cmdlet that ran and failed.
const EXECUTING: &str = "Error executing cmdlet";

/// The admin API's own exception, in `innererror.type` and in refusals of a request.
const ODATA: &str = "Microsoft.Exchange.Admin.OData.Core.ODataServiceException";

const BINDING: &str = "System.Management.Automation.ParameterBindingException";

impl CmdletError {
    fn new(
        status: StatusCode,
        code: &'static str,
        exception: &'static str,
        category: &'static str,
        message: String,
    ) -> Self {
        Self {
            status,
            code,
            exception,
            category,
            message,
            retry_after: None,
            executed: true,
        }
    }

    /// A refusal of the request itself, before any cmdlet ran.
    fn refusal(self) -> Self {
        Self {
            executed: false,
            ..self
        }
    }

    /// Exchange's id of the error site, the first part of `details[].message`.
    fn error_id(&self) -> String {
        if !self.executed {
            return String::new();
        }
        if self
            .exception
            .ends_with(".ManagementObjectNotFoundException")
        {
            // The id real not-found answers carry.
            return "Ex6F9304".to_owned();
        }
        let hash = self.exception.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        format!("Ex{:06X}", hash >> 8)
    }

    pub fn not_found(identity: &str, server: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
            "NotSpecified",
            format!(
                "The operation couldn't be performed because object '{identity}' couldn't be found on '{server}'."
            ),
        )
    }

    pub fn unknown_cmdlet(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "System.Management.Automation.CommandNotFoundException",
            "ObjectNotFound",
            format!(
                "The term '{name}' is not recognized as a name of a cmdlet, function, script file, or executable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
            ),
        )
    }

    pub fn unknown_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            BINDING,
            "InvalidArgument",
            format!("A parameter cannot be found that matches parameter name '{name}'."),
        )
    }

    pub fn missing_parameters(names: &[&str]) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            BINDING,
            "InvalidArgument",
            format!(
                "Cannot process command because of one or more missing mandatory parameters: {}.",
                names.join(" ")
            ),
        )
    }

    pub fn parameter_set() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            BINDING,
            "InvalidArgument",
            "Parameter set cannot be resolved using the specified named parameters.".to_owned(),
        )
    }

    /// A value outside a parameter's `ValidateSet`.
    pub fn not_in_set(parameter: &str, value: &str, set: &[&str]) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "System.Management.Automation.ParameterBindingValidationException",
            "InvalidData",
            format!(
                "Cannot validate argument on parameter '{parameter}'. The argument \"{value}\" does not belong to the set \"{}\" specified by the ValidateSet attribute. Supply an argument that is in the set and then try the command again.",
                set.join(",")
            ),
        )
    }

    pub fn bad_value(parameter: &str, value: &str, type_name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            BINDING,
            "InvalidArgument",
            format!(
                "Cannot bind parameter '{parameter}'. Cannot convert value \"{value}\" to type \"{type_name}\"."
            ),
        )
    }

    pub fn invalid_filter(message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            BINDING,
            "InvalidArgument",
            message,
        )
    }

    pub fn already_present(value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "System.InvalidOperationException",
            "InvalidOperation",
            format!("The value \"{value}\" is already present in the collection."),
        )
    }

    pub fn already_exists(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
            "NotSpecified",
            format!("The ActiveSync device access rule \"{name}\" already exists."),
        )
    }

    pub fn malformed(message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            ODATA,
            "InvalidArgument",
            message,
        )
        .refusal()
    }

    /// A followed next link whose skip token has expired. Microsoft does not document what the
    /// admin API answers then, and no example of it was found: this is a plausible guess, shaped
    /// as the admin API's other OData-layer refusals (HTTP 400, `ODataServiceException`) and, like
    /// its refusal of an invalid skip token, naming the skip token in its message.
    pub fn expired_skip_token() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            ODATA,
            "InvalidArgument",
            "The skip token has expired. Run the command again without a skip token.".to_owned(),
        )
        .refusal()
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "System.UnauthorizedAccessException",
            "PermissionDenied",
            message.to_owned(),
        )
        .refusal()
    }

    /// Exchange's concurrency throttling: too many requests of this tenant in flight.
    pub fn too_many_concurrent(limit: usize, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Microsoft.Exchange.Configuration.Core.ThrottlingException",
                "ResourceBusy",
                format!(
                    "Fail to create a runspace because you have exceeded the maximum number of concurrent requests allowed ({limit}). Please wait and try again."
                ),
            )
            .refusal()
        }
    }

    /// A CAS told by the control API to fail.
    pub fn server_fault(status: StatusCode, server: &str) -> Self {
        Self::new(
            status,
            "ServiceUnavailable",
            "Microsoft.Exchange.Data.Storage.ConnectionFailedTransientException",
            "ResourceUnavailable",
            format!(
                "The server '{server}' is unable to service the request right now. Try again later."
            ),
        )
        .refusal()
    }

    fn body(&self) -> serde_json::Value {
        let message = if self.executed {
            EXECUTING
        } else {
            self.message.as_str()
        };
        json!({
            "error": {
                "code": self.code,
                "message": message,
                "details": [{
                    "code": "Context",
                    "target": "",
                    "message": format!("{}|{}|{}", self.error_id(), self.exception, self.message),
                }],
                "innererror": {
                    "message": message,
                    "type": ODATA,
                    "stacktrace": "   at Microsoft.Exchange.AdminApi.CommandInvocation.CommandInvocation.InvokeCommand(QueryContext queryContext, CmdletInvokeInputType cmdletInvokeInputType)",
                },
            }
        })
    }
}

impl IntoResponse for CmdletError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_cmdlet_answers_as_exchange_online_does() {
        let body = CmdletError::not_found("nobody", "CAS01.contoso.com").body();
        let e = &body["error"];
        assert_eq!(e["code"], "NotFound");
        assert_eq!(e["message"], EXECUTING);
        assert_eq!(e["innererror"]["type"], ODATA);
        assert_eq!(e["details"][0]["code"], "Context");
        assert_eq!(
            e["details"][0]["message"],
            "Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be performed because object 'nobody' couldn't be found on 'CAS01.contoso.com'."
        );
        let other = CmdletError::already_present("ID1").error_id();
        assert!(
            other.len() == 8
                && other.starts_with("Ex")
                && other[2..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{other}"
        );
    }

    #[test]
    fn a_refused_request_says_why_in_its_message() {
        let body = CmdletError::too_many_concurrent(3, 2).body();
        let e = &body["error"];
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("maximum number of concurrent requests"),
            "{e}"
        );
        assert!(
            e["details"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("|Microsoft.Exchange.Configuration.Core.ThrottlingException|"),
            "{e}"
        );
    }
}
