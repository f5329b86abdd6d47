//! The operator dashboard: `GET /` and `/dashboard` answer its page, and
//! `/dashboard/{file}` its script and style sheet. The files live in
//! `ops/dashboard/` and are compiled into the binary (`include_str!`): no
//! build step, nothing fetched from elsewhere at run time (the answers say
//! so with a Content-Security-Policy of `'self'` only).
//!
//! The page is a client of the API: `/v1/overview`, `/v1/overview/leases`,
//! `/v1/events/stream` and `/v1/audit`, with the bearer token the user
//! types in (kept in the tab's sessionStorage) when the server has `--auth`.

use actix_web::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use actix_web::{web, HttpResponse};

use super::error::ApiError;

/// The dashboard's files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ops/dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ops/dashboard/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ops/dashboard/style.css"),
    ),
];

/// Only this origin: scripts, styles, fetches (the API) and nothing else.
const POLICY: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::routing::resource;
    cfg.service(resource("/").route(web::get().to(page)))
        .service(resource("/dashboard").route(web::get().to(page)))
        .service(resource("/dashboard/").route(web::get().to(page)))
        .service(resource("/dashboard/{file}").route(web::get().to(file)));
}

fn answer(name: &str) -> Result<HttpResponse, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(file, _, _)| *file == name)
        .ok_or_else(|| ApiError::not_found("no_route", format!("no dashboard file {name:?}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)))
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(*body))
}

async fn page() -> Result<HttpResponse, ApiError> {
    answer("index.html")
}

async fn file(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    answer(&name)
}
