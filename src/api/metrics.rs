//! `GET /metrics`: every metric in Prometheus's text format. Open in local
//! mode; with `--auth`, for the admin token only (behind the same
//! middleware as `/v1`, so 401 without a valid token, 403 for an account's).

use actix_web::{web, HttpResponse};

use super::auth::AdminCaller;
use super::error::ApiError;
use crate::control::Control;
use crate::metrics::TEXT_FORMAT;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::routing::resource("/metrics")
            .wrap(actix_web::middleware::from_fn(super::auth::v1))
            .route(web::get().to(scrape)),
    );
}

async fn scrape(_admin: AdminCaller, control: web::Data<Control>) -> Result<HttpResponse, ApiError> {
    let text = control.metrics_text().await?;
    Ok(HttpResponse::Ok().content_type(TEXT_FORMAT).body(text))
}
