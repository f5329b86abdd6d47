//! etcd's errors: the gRPC status code and etcd's message for each of our
//! refusals and failures. The JSON gateway (`api::etcd_error`) gives them
//! grpc-gateway's HTTP statuses and body; the gRPC server (`grpc`) sends
//! them as they are.

use crate::actors::CommandError;
use crate::domain::keyspace::KeyspaceRejection;
use crate::domain::lease::LeaseRejection;
use crate::store::StoreError;

/// etcd's gRPC status codes that tenure answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
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

/// An error as etcd gives it: a gRPC status code and etcd's message.
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
