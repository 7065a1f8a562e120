//! The error every service boundary speaks: a small code enum mapped to `tonic::Code` and an HTTP
//! status, plus a message and, for bad input, the row and field at fault. Each crate keeps its own
//! `thiserror` enum and converts into [`ServiceError`] at the edge.

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range: do not retry as is.
    InvalidArgument,
    /// The thing asked for does not exist.
    NotFound,
    /// The request or batch exceeds a configured bound.
    PayloadTooLarge,
    /// A dependency (a peer, etcd, the disk) is not available now: retry later.
    Unavailable,
    /// The client did not send its request in time (a trickled header or body).
    RequestTimeout,
    /// The system is not in a state to do this (e.g. still catching up).
    FailedPrecondition,
    /// A bug or an unexpected failure.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code for this error.
    pub fn grpc(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::PayloadTooLarge => tonic::Code::OutOfRange,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::RequestTimeout => tonic::Code::DeadlineExceeded,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status for this error.
    pub fn http(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::FailedPrecondition => 409,
            ErrorCode::Internal => 500,
        }
    }

    fn from_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => ErrorCode::PayloadTooLarge,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                ErrorCode::Unavailable
            }
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            _ => ErrorCode::Internal,
        }
    }
}

/// A row-level location of bad input: which row of the batch and which field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowField {
    /// Zero-based index of the row in the batch (for JSON lines: line number minus one).
    pub row: usize,
    /// The field at fault.
    pub field: String,
}

/// What travels in a gRPC status's metadata beside a located error: the location and the detail
/// without its rendered prefix, so the receiver rebuilds the same error.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireLocation {
    row: usize,
    field: String,
    detail: String,
}

/// An error as it crosses a service boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// A lowercase message naming the value and what was expected. For located errors this is
    /// the detail only; [`ServiceError::text`] puts the row and field in front.
    pub message: String,
    /// For bad input: where in the batch.
    pub location: Option<RowField>,
}

/// Result with a [`ServiceError`].
pub type ServiceResult<T> = std::result::Result<T, ServiceError>;

impl ServiceError {
    /// A new error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            location: None,
        }
    }

    /// Bad input at a row and field; [`ServiceError::text`] names both.
    pub fn bad_row(row: usize, field: &str, message: impl fmt::Display) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            message: message.to_string(),
            location: Some(RowField {
                row,
                field: field.to_string(),
            }),
        }
    }

    /// The same error with its row counted `offset` rows further on: a batch's rows numbered
    /// over the whole stream it came in.
    pub fn shift_row(mut self, offset: usize) -> Self {
        if let Some(loc) = self.location.as_mut() {
            loc.row += offset;
        }
        self
    }

    /// The message as a person reads it: `row R: field `F`: detail` for located errors.
    pub fn text(&self) -> String {
        match &self.location {
            Some(loc) => format!("row {}: field `{}`: {}", loc.row, loc.field, self.message),
            None => self.message.clone(),
        }
    }

    /// Shorthand for [`ErrorCode::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// Shorthand for [`ErrorCode::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// Shorthand for [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The JSON body an HTTP API returns for this error.
    pub fn to_json(&self) -> serde_json::Value {
        let mut err = serde_json::json!({ "code": self.code, "message": self.text() });
        if let Some(loc) = &self.location {
            err["row"] = loc.row.into();
            err["field"] = loc.field.clone().into();
        }
        serde_json::json!({ "error": err })
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.text())
    }
}

impl std::error::Error for ServiceError {}

const LOCATION_KEY: &str = "x-coldstart-location";

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        let mut status = tonic::Status::new(e.code.grpc(), e.text());
        if let Some(loc) = e.location {
            let wire = WireLocation {
                row: loc.row,
                field: loc.field,
                detail: e.message,
            };
            if let Ok(v) = serde_json::to_string(&wire).unwrap_or_default().parse() {
                status.metadata_mut().insert(LOCATION_KEY, v);
            }
        }
        status
    }
}

impl From<tonic::Status> for ServiceError {
    fn from(s: tonic::Status) -> Self {
        let wire: Option<WireLocation> = s
            .metadata()
            .get(LOCATION_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| serde_json::from_str(v).ok());
        let code = ErrorCode::from_grpc(s.code());
        match wire {
            Some(w) => Self {
                code,
                message: w.detail,
                location: Some(RowField {
                    row: w.row,
                    field: w.field,
                }),
            },
            None => Self::new(code, s.message()),
        }
    }
}

impl From<arrow::error::ArrowError> for ServiceError {
    fn from(e: arrow::error::ArrowError) -> Self {
        ServiceError::invalid(format!("arrow: {e}"))
    }
}

impl From<arrow_flight::error::FlightError> for ServiceError {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        match e {
            arrow_flight::error::FlightError::Tonic(s) => (*s).into(),
            arrow_flight::error::FlightError::Arrow(a) => a.into(),
            other => ServiceError::unavailable(format!("flight: {other}")),
        }
    }
}

/// A file that could not be read or written, named: what every stateful service's error enum
/// holds for its disk. It crosses a boundary as `Unavailable` (retry later; nothing was acked).
#[derive(Debug, thiserror::Error)]
#[error("storage at {}: {source}", path.display())]
pub struct StorageError {
    /// The file or directory involved.
    pub path: std::path::PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

impl StorageError {
    /// Turns an I/O error on `path` into a [`StorageError`]: `.map_err(StorageError::at(&p))`.
    pub fn at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
        move |source| StorageError {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<StorageError> for ServiceError {
    fn from(e: StorageError) -> Self {
        ServiceError::unavailable(e.to_string())
    }
}

impl axum::response::IntoResponse for ServiceError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.code.http())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.to_json())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_code_message_and_location() {
        let e = ServiceError::bad_row(3, "action", "unknown value \"pin\"");
        let back = ServiceError::from(tonic::Status::from(e.clone()));
        assert_eq!(back, e);
        assert_eq!(back.code.http(), 400);
        assert_eq!(
            back.to_string(),
            "InvalidArgument: row 3: field `action`: unknown value \"pin\""
        );
    }

    #[test]
    fn shifting_a_row_renumbers_the_text_too() {
        let e = ServiceError::bad_row(2, "ts", "is null").shift_row(100);
        assert_eq!(e.location.as_ref().map(|l| l.row), Some(102));
        assert_eq!(e.text(), "row 102: field `ts`: is null");
        // an error without a row stays as it was
        let plain = ServiceError::invalid("no rows").shift_row(5);
        assert_eq!(plain.text(), "no rows");
    }
}
