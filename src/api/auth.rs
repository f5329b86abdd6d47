//! Authentication on the HTTP API: a middleware on the `/v1` and `/v3`
//! scopes turns the `Authorization` header into a [`Principal`] (see
//! `crate::auth`, where every rule lives) and stores it in the request;
//! the [`Caller`](super::extract::Caller) and [`AdminCaller`] extractors
//! read it and apply the policy. A route that is not behind the middleware
//! gets no principal and its extractors refuse (fail closed).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use super::error::ApiError;
use super::etcd_error::EtcdError;
use crate::auth::{AuthError, Denied, Principal};
use crate::control::Control;
use crate::history::filter::HistoryScope;

/// Which error format a scope answers in.
#[derive(Clone, Copy)]
enum Dialect {
    Tenure,
    Etcd,
}

/// The `/v1` middleware.
pub async fn v1(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    authenticate(req, next, Dialect::Tenure).await
}

/// The `/v3` (etcd gateway) middleware: errors as etcd gives them, and only
/// accounts (the gateway has no admin endpoints).
pub async fn v3(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    authenticate(req, next, Dialect::Etcd).await
}

async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
    dialect: Dialect,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(control) = req.app_data::<web::Data<Control>>().cloned() else {
        let error = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no control plane configured",
        );
        return Ok(req.error_response(error).map_into_right_body());
    };
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let principal = match control.authenticate(header).await {
        Ok(principal) => principal,
        Err(e) => {
            let mut res = match dialect {
                Dialect::Tenure => req.error_response(unauthenticated(&e)),
                Dialect::Etcd => req.error_response(EtcdError::unauthenticated(e.to_string())),
            };
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tenure\""));
            return Ok(res.map_into_right_body());
        }
    };
    if let (Dialect::Etcd, Err(denied)) = (dialect, principal.account()) {
        return Ok(req
            .error_response(EtcdError::permission_denied(denied.to_string()))
            .map_into_right_body());
    }
    if let Principal::Account { account, .. } = &principal {
        tracing::Span::current().record("account", tracing::field::display(account));
    }
    req.extensions_mut().insert(principal);
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

fn unauthenticated(e: &AuthError) -> ApiError {
    let code = match e {
        AuthError::Missing => "missing_token",
        AuthError::Malformed(_) => "malformed_authorization",
        AuthError::Invalid => "invalid_token",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
    }
}

/// The principal the middleware stored, or a refusal if none did.
pub(super) fn principal(req: &actix_web::HttpRequest) -> Result<Principal, ApiError> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "this route is not behind authentication",
        )
    })
}

/// A caller allowed to manage accounts (the admin token, or local mode).
#[derive(Clone, Debug)]
pub struct AdminCaller {
    pub request_id: uuid::Uuid,
}

impl actix_web::FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<AdminCaller, ApiError>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let admin = principal(req).and_then(|p| p.require_admin().map_err(ApiError::from));
        std::future::ready(admin.map(|()| AdminCaller {
            request_id: super::routing::request_id(req),
        }))
    }
}

/// A caller reading the log: whose events it may see.
#[derive(Clone, Debug)]
pub struct HistoryReader {
    pub scope: HistoryScope,
}

impl actix_web::FromRequest for HistoryReader {
    type Error = ApiError;
    type Future = std::future::Ready<Result<HistoryReader, ApiError>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(principal(req).map(|p| HistoryReader {
            scope: p.history_scope(),
        }))
    }
}
