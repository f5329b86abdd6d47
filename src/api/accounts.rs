//! `/v1/accounts` (admin) and `/v1/account` (the calling account itself).
//!
//! Tokens appear in full only in the answer to their creation; listings
//! show their IDs and labels.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tenure_events::{AccountId, Limits};
use tenure_projections::AccountView;
use utoipa::ToSchema;

use super::auth::AdminCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, JsonBody};
use super::schema;
use crate::control::{Control, Usage};
use crate::domain::account::LimitsUpdate;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::routing::resource;
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

/// A token of an account (never the token itself).
#[derive(Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenJson {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[schema(value_type = schema::Timestamp)]
    created_at: String,
}

/// An account: its limits, public key and tokens.
#[derive(Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountJson {
    #[schema(value_type = schema::AccountName)]
    name: AccountId,
    /// None for local mode's `default`, which was never created.
    #[schema(value_type = Option<schema::Timestamp>)]
    created_at: Option<String>,
    #[schema(value_type = schema::Limits)]
    limits: Limits,
    /// The ed25519 public key (standard base64), if registered.
    public_key: Option<String>,
    #[schema(value_type = Option<schema::Timestamp>)]
    public_key_registered_at: Option<String>,
    tokens: Vec<TokenJson>,
    /// What it uses now (`GET /v1/account`, `GET /v1/accounts/{name}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageJson>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Usage)]
struct UsageJson {
    /// Live leases.
    leases: usize,
    /// Keys in its key space.
    keys: usize,
}

const NAME_PATH: &str = "The account's name.";
const ACCOUNT_404: &str = "No such account (`account_not_found`).";

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

#[derive(Deserialize, ToSchema)]
#[schema(as = NewAccount, examples(json!({"name": "alice", "limits": {"max_leases": 100}})))]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[schema(value_type = schema::AccountName)]
    name: String,
    /// Limits left out are -1 (no limit).
    #[serde(default)]
    #[schema(value_type = schema::LimitsUpdate)]
    limits: LimitsUpdate,
}

/// Creates an account (admin).
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", operation_id = "create_account",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The account, created.", body = AccountJson),
        (status = 400, description = "A malformed body, name or limit (`bad_json`, `invalid_body`, `invalid_field`, `invalid_account_name`).", body = ErrorBody),
        (status = 409, description = "The name is taken (`account_exists`).", body = ErrorBody),
    ))]
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

#[derive(Serialize, ToSchema)]
struct AccountList {
    accounts: Vec<AccountJson>,
}

/// Every account (admin).
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", operation_id = "list_accounts",
    responses((status = 200, description = "The accounts, by name.", body = AccountList)))]
async fn list(control: web::Data<Control>, _: AdminCaller) -> Result<HttpResponse, ApiError> {
    let accounts = control.accounts().await;
    Ok(HttpResponse::Ok().json(AccountList {
        accounts: accounts.into_iter().map(|a| AccountJson::new(a, None)).collect(),
    }))
}

/// An account and its usage (admin).
#[utoipa::path(get, path = "/v1/accounts/{name}", tag = "accounts", operation_id = "get_account",
    params(("name" = schema::AccountName, Path, description = NAME_PATH)),
    responses(
        (status = 200, description = "The account, with its usage.", body = AccountJson),
        (status = 400, description = "A malformed name (`invalid_account_name`).", body = ErrorBody),
        (status = 404, description = ACCOUNT_404, body = ErrorBody),
    ))]
async fn get(control: web::Data<Control>, _: AdminCaller, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = account_name(&name)?;
    let view = control.account(&name).await?;
    let usage = control.usage(&name).await?;
    Ok(HttpResponse::Ok().json(AccountJson::new(view, Some(usage))))
}

#[derive(Deserialize, Default, ToSchema)]
#[schema(as = NewToken)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    /// What the token is for: 1 to 64 characters, no control characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    label: Option<String>,
}

/// A token, issued: the only answer that shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = IssuedToken)]
struct IssuedJson {
    #[schema(value_type = schema::AccountName)]
    account: AccountId,
    id: String,
    /// Shown only in this answer.
    token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[schema(value_type = schema::Timestamp)]
    created_at: String,
}

/// Issues a token to an account (admin).
#[utoipa::path(post, path = "/v1/accounts/{name}/tokens", tag = "accounts", operation_id = "create_token",
    params(("name" = schema::AccountName, Path, description = NAME_PATH)),
    request_body(content = Option<TokenBody>, description = "Optional: no body is `{}`."),
    responses(
        (status = 201, description = "The token, shown only here.", body = IssuedJson),
        (status = 400, description = "A malformed name, body or label (`invalid_account_name`, `bad_json`, `invalid_body`, `invalid_field`).", body = ErrorBody),
        (status = 404, description = ACCOUNT_404, body = ErrorBody),
        (status = 409, description = "The account has too many tokens (`too_many_tokens`).", body = ErrorBody),
    ))]
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

#[derive(Serialize, ToSchema)]
struct TokenList {
    tokens: Vec<TokenJson>,
}

/// An account's tokens (IDs and labels; admin).
#[utoipa::path(get, path = "/v1/accounts/{name}/tokens", tag = "accounts", operation_id = "list_tokens",
    params(("name" = schema::AccountName, Path, description = NAME_PATH)),
    responses(
        (status = 200, description = "The tokens.", body = TokenList),
        (status = 400, description = "A malformed name (`invalid_account_name`).", body = ErrorBody),
        (status = 404, description = ACCOUNT_404, body = ErrorBody),
    ))]
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

#[derive(Serialize, ToSchema)]
#[schema(as = RevokedToken)]
struct Revoked {
    #[schema(value_type = schema::AccountName)]
    account: AccountId,
    /// The token's ID.
    revoked: String,
}

/// Revokes a token (admin): it is refused from this answer on.
#[utoipa::path(delete, path = "/v1/accounts/{name}/tokens/{id}", tag = "accounts", operation_id = "revoke_token",
    params(
        ("name" = schema::AccountName, Path, description = NAME_PATH),
        ("id" = String, Path, description = "The token's ID."),
    ),
    responses(
        (status = 200, description = "The token, revoked.", body = Revoked),
        (status = 400, description = "A malformed name (`invalid_account_name`).", body = ErrorBody),
        (status = 404, description = "No such account or token (`account_not_found`, `token_not_found`).", body = ErrorBody),
    ))]
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

/// Sets some of an account's limits (admin).
#[utoipa::path(put, path = "/v1/accounts/{name}/limits", tag = "accounts", operation_id = "set_limits",
    params(("name" = schema::AccountName, Path, description = NAME_PATH)),
    request_body(content = Option<schema::LimitsUpdate>, description = "Optional: no body is `{}`, which changes nothing."),
    responses(
        (status = 200, description = "The account with its new limits.", body = AccountJson),
        (status = 400, description = "A malformed name, body or limit (`invalid_account_name`, `bad_json`, `invalid_body`, `invalid_field`).", body = ErrorBody),
        (status = 404, description = ACCOUNT_404, body = ErrorBody),
    ))]
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
#[utoipa::path(get, path = "/v1/account", tag = "accounts", operation_id = "whoami",
    responses((status = 200, description = "The calling account, with its usage.", body = AccountJson)))]
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

#[derive(Deserialize, ToSchema)]
#[schema(as = PublicKey)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// The ed25519 public key, standard base64 of its 32 bytes (a valid,
    /// not small-order, curve point).
    #[schema(pattern = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
    public_key: String,
}

/// Registers the calling account's ed25519 public key (it signs workload reservations).
#[utoipa::path(put, path = "/v1/account/key", tag = "accounts", operation_id = "register_key",
    request_body = KeyBody,
    responses(
        (status = 200, description = "The account with its key.", body = AccountJson),
        (status = 400, description = "A malformed body, or not a usable ed25519 key (`bad_json`, `invalid_body`, `invalid_field`).", body = ErrorBody),
    ))]
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
