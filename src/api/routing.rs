//! What every routes module shares, apart from `mod.rs` so that no routes
//! module imports the module that mounts it: a resource whose other methods
//! answer 405 with a JSON body and an `Allow` header, and the request's id.
//! Imports nothing of `api` but `error`.

use actix_web::http::header::HeaderValue;
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::error::ApiError;

/// The methods a route pattern allows (`/v1/keys/{key:.+}` → `GET, PUT,
/// DELETE`), registered as app data by [`super::configure`] (from the OpenAPI
/// description, which imports the routes modules; they cannot import it).
#[derive(Clone, Copy)]
pub struct AllowedMethods(pub fn(&str) -> Option<&'static str>);

/// A resource whose other methods answer 405 with a JSON body.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// The 405 of a path that exists: names the methods it allows in `Allow`
/// when the OpenAPI description lists them.
pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut res = actix_web::ResponseError::error_response(&ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    ));
    let allowed = req
        .match_pattern()
        .zip(req.app_data::<AllowedMethods>().copied())
        .and_then(|(pattern, AllowedMethods(allowed))| allowed(&pattern));
    if let Some(allow) = allowed {
        res.headers_mut()
            .insert(actix_web::http::header::ALLOW, HeaderValue::from_static(allow));
    }
    res
}

/// The request's id, set by the tracing middleware (a fresh one when a test
/// app runs without it).
pub fn request_id(req: &HttpRequest) -> Uuid {
    req.extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| **id)
        .unwrap_or_else(Uuid::new_v4)
}
