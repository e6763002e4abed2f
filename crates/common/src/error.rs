//! The rich gRPC error model (google.rpc details through tonic-types) as small constructors, so
//! every service's one exhaustive `From<ServiceError> for Status` reads the same way:
//! field violations for bad input, a stable `ErrorInfo` reason for every business error,
//! `RetryInfo` when trying again later can help, and opaque INTERNAL for everything else.

use std::{error::Error as StdError, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of errors raised by the kit itself (database, limits); business
/// errors carry their service's domain (`catalog.backbone`, ...).
pub const KIT_ERROR_DOMAIN: &str = "backbone";

/// One bad field of a request: its path (`item.quantity`, `page_token`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message, dotted for nested fields.
    pub field: String,
    /// What is wrong with the value and what would be accepted, for a developer to read.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`, explained by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// INVALID_ARGUMENT with a `BadRequest` listing every violation; the message names them too so
/// a client that ignores details still reads what is wrong.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let message = match violations {
        [] => "invalid request".to_owned(),
        [one] => format!("invalid {}: {}", one.field, one.description),
        many => format!(
            "invalid request: {}",
            many.iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let mut details = ErrorDetails::new();
    for violation in violations {
        details.add_bad_request_violation(&violation.field, &violation.description);
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// A business error: `code` with an `ErrorInfo { reason, domain, metadata }`. `reason` is a
/// stable UPPER_SNAKE identifier clients may branch on; `domain` names the service.
pub fn business(
    domain: &str,
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> Status {
    let details = ErrorDetails::with_error_info(
        reason,
        domain,
        metadata
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    Status::with_error_details(code, message, details)
}

/// UNAVAILABLE with an `ErrorInfo` reason of the kit's domain and a `RetryInfo` saying when to
/// try again.
pub fn unavailable(reason: &str, message: impl Into<String>, retry_after: Duration) -> Status {
    retryable(
        KIT_ERROR_DOMAIN,
        Code::Unavailable,
        reason,
        message,
        retry_after,
    )
}

/// `code` (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) with an `ErrorInfo { reason, domain }` and a
/// `RetryInfo` saying when to try again.
pub fn retryable(
    domain: &str,
    code: Code,
    reason: &str,
    message: impl Into<String>,
    retry_after: Duration,
) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.set_error_info(reason, domain, std::collections::HashMap::new());
    Status::with_error_details(code, message, details)
}

/// An unexpected failure: logged here with its whole source chain, answered as an opaque
/// INTERNAL so no SQL, path or secret reaches the client.
pub fn internal(error: &(dyn StdError + 'static)) -> Status {
    tracing::error!(error = %SourceChain(error), "internal error");
    Status::internal("internal error; see the service log for this trace id")
}

/// Displays an error followed by each of its sources: `a: b: c`.
#[derive(Debug)]
pub struct SourceChain<'a>(pub &'a (dyn StdError + 'static));

impl std::fmt::Display for SourceChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_each_violation() {
        let status = invalid_argument(&[
            FieldViolation::new("email", "must contain @"),
            FieldViolation::new("page_size", "must be at most 100"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("email: must contain @"));
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "page_size"]);
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let status = unavailable(
            "DATABASE_UNAVAILABLE",
            "database down",
            Duration::from_secs(2),
        );
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("DATABASE_UNAVAILABLE")
        );
    }

    #[test]
    fn internal_hides_the_cause() {
        let cause = std::io::Error::other("SELECT secret FROM users");
        let status = internal(&cause);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }
}
