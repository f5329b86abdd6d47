//! `/v1/accounts` (admin) and `/v1/account` (the calling account itself).
//!
//! Tokens appear in full only in the answer to their creation; listings
//! show their IDs and labels.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tenure_events::{AccountId, Limits};
use tenure_projections::AccountView;

use super::auth::AdminCaller;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use crate::control::{Control, Usage};
use crate::domain::account::LimitsUpdate;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(
        resource("/accounts")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(resource("/accounts/{name}").route(web::get().to(get)))
    .service(
        resource("/accounts/{name}/tokens")
            .route(web::post().to(create_token))
            .route(web::get().to(list_tokens)),
    )
    .service(resource("/accounts/{name}/tokens/{id}").route(web::delete().to(revoke_token)))
    .service(resource("/accounts/{name}/limits").route(web::put().to(set_limits)))
    .service(resource("/account").route(web::get().to(whoami)))
    .service(resource("/account/key").route(web::put().to(register_key)));
}

fn account_name(raw: &str) -> Result<AccountId, ApiError> {
    raw.parse()
        .map_err(|e: tenure_events::IdError| ApiError::bad_request("invalid_account_name", format!("name: {e}")))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize)]
pub struct TokenJson {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    created_at: String,
}

#[derive(Serialize)]
pub struct AccountJson {
    name: AccountId,
    created_at: Option<String>,
    limits: Limits,
    /// The ed25519 public key (standard base64), if registered.
    public_key: Option<String>,
    public_key_registered_at: Option<String>,
    tokens: Vec<TokenJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageJson>,
}

#[derive(Serialize)]
struct UsageJson {
    leases: usize,
    keys: usize,
}

impl AccountJson {
    fn new(view: AccountView, usage: Option<Usage>) -> AccountJson {
        AccountJson {
            name: view.name,
            created_at: Some(time(view.created_at)),
            limits: view.limits,
            public_key_registered_at: view.public_key.as_ref().map(|(_, at)| time(*at)),
            public_key: view.public_key.map(|(key, _)| key),
            tokens: view
                .tokens
                .into_values()
                .map(|t| TokenJson {
                    id: t.id,
                    label: t.label,
                    created_at: time(t.created_at),
                })
                .collect(),
            usage: usage.map(|u| UsageJson {
                leases: u.leases,
                keys: u.keys,
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    limits: LimitsUpdate,
}

async fn create(
    control: web::Data<Control>,
    admin: AdminCaller,
    body: JsonBody<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let name = account_name(&body.0.name)?;
    let view = control
        .create_account(Some(admin.request_id), name, body.0.limits)
        .await?;
    Ok(HttpResponse::Created().json(AccountJson::new(view, None)))
}

#[derive(Serialize)]
struct AccountList {
    accounts: Vec<AccountJson>,
}

async fn list(control: web::Data<Control>, _: AdminCaller) -> Result<HttpResponse, ApiError> {
    let accounts = control.accounts().await;
    Ok(HttpResponse::Ok().json(AccountList {
        accounts: accounts.into_iter().map(|a| AccountJson::new(a, None)).collect(),
    }))
}

async fn get(control: web::Data<Control>, _: AdminCaller, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = account_name(&name)?;
    let view = control.account(&name).await?;
    let usage = control.usage(&name).await?;
    Ok(HttpResponse::Ok().json(AccountJson::new(view, Some(usage))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    label: Option<String>,
}

#[derive(Serialize)]
struct IssuedJson {
    account: AccountId,
    id: String,
    /// Shown only in this answer.
    token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    created_at: String,
}

async fn create_token(
    control: web::Data<Control>,
    admin: AdminCaller,
    name: web::Path<String>,
    body: JsonBody<TokenBody>,
) -> Result<HttpResponse, ApiError> {
    let name = account_name(&name)?;
    let issued = control.issue_token(Some(admin.request_id), &name, body.0.label).await?;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(IssuedJson {
            account: name,
            id: issued.id,
            token: issued.token,
            label: issued.label,
            created_at: time(issued.created_at),
        }))
}

#[derive(Serialize)]
struct TokenList {
    tokens: Vec<TokenJson>,
}

async fn list_tokens(
    control: web::Data<Control>,
    _: AdminCaller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = account_name(&name)?;
    let view = control.account(&name).await?;
    Ok(HttpResponse::Ok().json(TokenList {
        tokens: AccountJson::new(view, None).tokens,
    }))
}

#[derive(Serialize)]
struct Revoked {
    account: AccountId,
    revoked: String,
}

async fn revoke_token(
    control: web::Data<Control>,
    admin: AdminCaller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, id) = path.into_inner();
    let name = account_name(&name)?;
    control.revoke_token(Some(admin.request_id), &name, id.clone()).await?;
    Ok(HttpResponse::Ok().json(Revoked {
        account: name,
        revoked: id,
    }))
}

async fn set_limits(
    control: web::Data<Control>,
    admin: AdminCaller,
    name: web::Path<String>,
    body: JsonBody<LimitsUpdate>,
) -> Result<HttpResponse, ApiError> {
    let name = account_name(&name)?;
    let view = control.set_limits(Some(admin.request_id), &name, body.0).await?;
    Ok(HttpResponse::Ok().json(AccountJson::new(view, None)))
}

/// The calling account. In local mode `default` was never created: it is
/// shown with no limits and no tokens.
async fn whoami(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let usage = control.usage(&caller.account).await?;
    let json = match control.account(&caller.account).await {
        Ok(view) => AccountJson::new(view, Some(usage)),
        Err(_) => AccountJson {
            name: caller.account,
            created_at: None,
            limits: Limits::UNLIMITED,
            public_key: None,
            public_key_registered_at: None,
            tokens: Vec::new(),
            usage: Some(UsageJson {
                leases: usage.leases,
                keys: usage.keys,
            }),
        },
    };
    Ok(HttpResponse::Ok().json(json))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// The ed25519 public key, standard base64 of its 32 bytes.
    public_key: String,
}

async fn register_key(
    control: web::Data<Control>,
    caller: Caller,
    body: JsonBody<KeyBody>,
) -> Result<HttpResponse, ApiError> {
    let view = control
        .register_key(Some(caller.request_id), &caller.account, body.0.public_key)
        .await?;
    Ok(HttpResponse::Ok().json(AccountJson::new(view, None)))
}
