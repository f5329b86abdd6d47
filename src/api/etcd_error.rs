//! The errors of the etcd gateway (`/v3`): etcd's errors (`crate::etcd`)
//! with the HTTP statuses grpc-gateway gives their gRPC codes, in the
//! `{"error", "message", "code"}` body. Here rather than in `v3` so that the
//! authentication middleware can answer in etcd's shape without depending
//! on the routes.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub use crate::etcd::{Code, EtcdError};

/// The HTTP status grpc-gateway v1 (etcd 3.4's) gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
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

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: u16,
}

impl ResponseError for EtcdError {
    fn status_code(&self) -> StatusCode {
        http_status(self.code)
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
