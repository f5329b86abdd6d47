//! The one error type of the HTTP API: every error body is
//! `{"code": "...", "message": "..."}`, 4xx for the caller's mistakes and
//! 5xx only for ours.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::CommandError;
use crate::domain::account::AccountRejection;
use crate::domain::keyspace::KeyspaceRejection;
use crate::domain::lease::LeaseRejection;
use crate::domain::service::{InstanceRejection, ServiceRejection};
use crate::domain::share::ShareRejection;
use crate::domain::workload::WorkloadRejection;
use crate::history::HistoryRejection;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

/// The body of every error answer of `/v1` (its OpenAPI schema is
/// `ApiError`, which every 4xx and 5xx answer of the document refers to).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ApiError, examples(json!({"code": "lease_not_found", "message": "lease 1a203af6dc400000 not found"})))]
pub struct ErrorBody<'a> {
    /// Stable and machine-readable, e.g. `invalid_field`, `lease_not_found`.
    #[schema(pattern = "^[a-z0-9_]+$")]
    pub code: &'a str,
    /// For people: names the field or parameter at fault.
    pub message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// An account limit refused the command (429; the message names the limit).
    pub fn limit_reached(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "limit_reached", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorBody {
            code: self.code,
            message: &self.message,
        })
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let message = e.to_string();
        match e {
            CommandError::Lease(r) => match r {
                LeaseRejection::NotFound(_) => ApiError::not_found("lease_not_found", message),
                LeaseRejection::AlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, "lease_exists", message),
                LeaseRejection::TtlTooLarge { .. } => ApiError::bad_request("ttl_too_large", message),
                LeaseRejection::NotDue { .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
            },
            CommandError::Keyspace(r) => match r {
                KeyspaceRejection::EmptyKey => ApiError::bad_request("empty_key", message),
                KeyspaceRejection::KeyNotFound => ApiError::not_found("key_not_found", message),
                KeyspaceRejection::TooManyKeysForLease { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "too_many_keys_for_lease", message)
                }
                KeyspaceRejection::KeyLimitReached { .. } => ApiError::limit_reached(message),
                KeyspaceRejection::LeaseNotFound(_) => ApiError::not_found("lease_not_found", message),
                KeyspaceRejection::DuplicateKey | KeyspaceRejection::TooManyOps | KeyspaceRejection::FutureRevision => {
                    ApiError::bad_request("invalid_txn", message)
                }
            },
            CommandError::Account(r) => match r {
                AccountRejection::AlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, "account_exists", message),
                AccountRejection::NotFound => ApiError::not_found("account_not_found", message),
                AccountRejection::TokenNotFound(_) => ApiError::not_found("token_not_found", message),
                AccountRejection::TokenIdTaken(_) => ApiError::new(StatusCode::CONFLICT, "token_id_taken", message),
                AccountRejection::TooManyTokens { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "too_many_tokens", message)
                }
                AccountRejection::InvalidLimit { .. }
                | AccountRejection::InvalidLabel(_)
                | AccountRejection::InvalidPublicKey(_) => ApiError::bad_request("invalid_field", message),
            },
            CommandError::Share(r) => match r {
                ShareRejection::NotFound => ApiError::not_found("share_not_found", message),
                ShareRejection::AlreadyReserved => ApiError::new(StatusCode::CONFLICT, "share_reserved", message),
                ShareRejection::SessionActive => ApiError::new(StatusCode::CONFLICT, "session_active", message),
                ShareRejection::SessionNotFound(_) => ApiError::not_found("session_not_found", message),
                ShareRejection::PublicShare => ApiError::bad_request("public_share", message),
                ShareRejection::InvalidTarget(_) | ShareRejection::InvalidAddress(_) => {
                    ApiError::bad_request("invalid_field", message)
                }
            },
            CommandError::Workload(r) => match r {
                WorkloadRejection::NotFound => ApiError::not_found("reservation_not_found", message),
                WorkloadRejection::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "reservation_exists", message),
                WorkloadRejection::BadSignature(_) => ApiError::bad_request("invalid_signature", message),
                WorkloadRejection::NoPublicKey => ApiError::bad_request("no_public_key", message),
                WorkloadRejection::ExpiredOnArrival { .. } => ApiError::bad_request("expired", message),
                WorkloadRejection::InvalidNode
                | WorkloadRejection::InvalidWorkload(_)
                | WorkloadRejection::InvalidDuration(_)
                | WorkloadRejection::CreatedInFuture(_)
                | WorkloadRejection::ErrorTooLong => ApiError::bad_request("invalid_field", message),
                WorkloadRejection::NotDue(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
            },
            CommandError::Service(r) => match r {
                ServiceRejection::NotFound => ApiError::not_found("service_not_found", message),
                ServiceRejection::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "service_exists", message),
                ServiceRejection::HasInstances(_) => {
                    ApiError::new(StatusCode::CONFLICT, "service_has_instances", message)
                }
                ServiceRejection::Invalid(_) => ApiError::bad_request("invalid_field", message),
            },
            CommandError::Instance(r) => match r {
                InstanceRejection::NotFound => ApiError::not_found("instance_not_found", message),
                InstanceRejection::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "instance_exists", message),
                InstanceRejection::Invalid(_) => ApiError::bad_request("invalid_field", message),
            },
            CommandError::History(r) => match r {
                HistoryRejection::NotFound(_) => ApiError::not_found("not_found", message),
                HistoryRejection::Invalid(_) => ApiError::bad_request("invalid_query", message),
            },
            CommandError::Limit(_) => ApiError::limit_reached(message),
            CommandError::Unavailable(_) | CommandError::Stopped => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            CommandError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            CommandError::Store(StoreError::Poisoned | StoreError::Closed) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message)
            }
            CommandError::Store(StoreError::Io(_) | StoreError::Corrupt(_)) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_failure", message)
            }
        }
    }
}
