//! The errors of the etcd gateway (`/v3`): etcd's gRPC status codes, the
//! HTTP statuses grpc-gateway gives them, and the `{"error", "message",
//! "code"}` body. Here rather than in `v3` so that the authentication
//! middleware can answer in etcd's shape without depending on the routes.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::CommandError;
use crate::domain::keyspace::KeyspaceRejection;
use crate::domain::lease::LeaseRejection;
use crate::store::StoreError;

/// etcd's gRPC status codes that the gateway answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    InvalidArgument = 3,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    /// The HTTP status grpc-gateway v1 (etcd 3.4's) gives a gRPC code.
    fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Code::Aborted => StatusCode::CONFLICT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error as etcd's gateway gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdError {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl EtcdError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> EtcdError {
        EtcdError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> EtcdError {
        EtcdError::new(Code::InvalidArgument, message)
    }

    pub(crate) fn unauthenticated(message: impl Into<String>) -> EtcdError {
        EtcdError::new(Code::Unauthenticated, message)
    }

    pub(crate) fn permission_denied(message: impl Into<String>) -> EtcdError {
        EtcdError::new(Code::PermissionDenied, message)
    }

    pub(crate) fn lease_not_found() -> EtcdError {
        EtcdError::new(Code::NotFound, "etcdserver: requested lease not found")
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code as u16)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: u16,
}

impl ResponseError for EtcdError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let body = ErrorBody {
            error: &self.message,
            message: &self.message,
            code: self.code as u16,
        };
        HttpResponse::build(self.status_code()).json(body)
    }
}

impl From<CommandError> for EtcdError {
    fn from(e: CommandError) -> EtcdError {
        match e {
            CommandError::Lease(LeaseRejection::NotFound(_)) => EtcdError::lease_not_found(),
            CommandError::Lease(LeaseRejection::AlreadyExists(_)) => {
                EtcdError::new(Code::FailedPrecondition, "etcdserver: lease already exists")
            }
            CommandError::Lease(LeaseRejection::TtlTooLarge { .. }) => {
                EtcdError::new(Code::OutOfRange, "etcdserver: too large lease TTL")
            }
            CommandError::Lease(r @ LeaseRejection::NotDue { .. }) => EtcdError::new(Code::Internal, r.to_string()),
            CommandError::Keyspace(KeyspaceRejection::EmptyKey) => {
                EtcdError::invalid("etcdserver: key is not provided")
            }
            CommandError::Keyspace(KeyspaceRejection::KeyNotFound) => EtcdError::invalid("etcdserver: key not found"),
            CommandError::Keyspace(KeyspaceRejection::LeaseNotFound(_)) => EtcdError::lease_not_found(),
            CommandError::Keyspace(KeyspaceRejection::DuplicateKey) => {
                EtcdError::invalid("etcdserver: duplicate key given in txn request")
            }
            CommandError::Keyspace(KeyspaceRejection::TooManyOps) => {
                EtcdError::invalid("etcdserver: too many operations in txn request")
            }
            CommandError::Keyspace(KeyspaceRejection::FutureRevision) => EtcdError::new(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            CommandError::Keyspace(
                r @ (KeyspaceRejection::TooManyKeysForLease { .. } | KeyspaceRejection::KeyLimitReached { .. }),
            ) => EtcdError::new(Code::ResourceExhausted, format!("tenure: {r}")),
            CommandError::Limit(r) => EtcdError::new(Code::ResourceExhausted, format!("tenure: {r}")),
            CommandError::Account(r) => EtcdError::invalid(format!("tenure: {r}")),
            CommandError::Share(r) => EtcdError::invalid(format!("tenure: {r}")),
            CommandError::Workload(r) => EtcdError::invalid(format!("tenure: {r}")),
            CommandError::Service(r) => EtcdError::invalid(format!("tenure: {r}")),
            CommandError::Instance(r) => EtcdError::invalid(format!("tenure: {r}")),
            CommandError::History(r) => EtcdError::invalid(format!("tenure: {r}")),
            CommandError::Unavailable(m) => EtcdError::new(Code::Unavailable, m),
            e @ CommandError::Stopped => EtcdError::new(Code::Unavailable, e.to_string()),
            CommandError::Conflict(m) => EtcdError::new(Code::Aborted, format!("tenure: {m}")),
            CommandError::Store(e @ (StoreError::Poisoned | StoreError::Closed)) => {
                EtcdError::new(Code::Unavailable, e.to_string())
            }
            CommandError::Store(e) => EtcdError::new(Code::Internal, e.to_string()),
        }
    }
}
