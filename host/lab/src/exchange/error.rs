//! Exchange-style errors of the admin API: an HTTP status and
//! `{"error":{"code":…,"message":…,"details":[{"message":"Type|Category|Message"}]}}`, where `Type`
//! is the .NET exception Exchange throws and `Category` the PowerShell error category — what a
//! client classifies on (not found, bad parameter, throttled) without parsing prose.

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
}

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
        }
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
            "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            "InvalidArgument",
            message,
        )
    }

    /// A followed next link whose skip token has expired. Microsoft does not document what the
    /// admin API answers then, and no example of it was found: this is a plausible guess, shaped
    /// as the admin API's other OData-layer refusals (HTTP 400, `ODataServiceException`) and, like
    /// its refusal of an invalid skip token, naming the skip token in its message.
    pub fn expired_skip_token() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            "InvalidArgument",
            "The skip token has expired. Run the command again without a skip token.".to_owned(),
        )
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "System.UnauthorizedAccessException",
            "PermissionDenied",
            message.to_owned(),
        )
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
    }

    fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": [{
                    "code": "Context",
                    "target": "",
                    "message": format!("{}|{}|{}", self.exception, self.category, self.message),
                }],
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
