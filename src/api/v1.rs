//! `/v1`: tenure's native JSON API for leases and keys. Lease IDs are 16
//! hexadecimal digits (as the CLI prints them); keys and values are JSON
//! strings, or `{"base64": "..."}` for bytes that are not UTF-8.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use tenure_events::{Bytes, LeaseId};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, JsonBody, QueryArgs};
use super::schema;
use crate::control::Control;
use crate::domain::keyspace::{KeyRange, KeyValue, LeaseUpdate, RangeOptions};
use crate::domain::lease::MAX_TTL_S;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/leases")
            .route(web::post().to(grant))
            .route(web::get().to(list_leases))
            .default_service(web::to(super::routing::method_not_allowed)),
    )
    .service(
        web::resource("/leases/{id}")
            .route(web::get().to(time_to_live))
            .route(web::delete().to(revoke))
            .default_service(web::to(super::routing::method_not_allowed)),
    )
    .service(
        web::resource("/leases/{id}/keepalive")
            .route(web::post().to(keep_alive))
            .default_service(web::to(super::routing::method_not_allowed)),
    )
    .service(
        web::resource("/keys")
            .route(web::get().to(get_keys))
            .route(web::put().to(put_key_query))
            .route(web::delete().to(delete_keys))
            .default_service(web::to(super::routing::method_not_allowed)),
    )
    .service(
        web::resource("/keys/{key:.+}")
            .route(web::get().to(get_key_path))
            .route(web::put().to(put_key_path))
            .route(web::delete().to(delete_key_path))
            .default_service(web::to(super::routing::method_not_allowed)),
    );
}

fn lease_id(raw: &str) -> Result<LeaseId, ApiError> {
    raw.parse()
        .map_err(|e: tenure_events::IdError| ApiError::bad_request("invalid_lease_id", e.to_string()))
}

#[derive(Deserialize, ToSchema)]
#[schema(examples(json!({"ttl": 100})))]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// Seconds; raised to the server's minimum if below it.
    #[schema(minimum = 1, maximum = 9_000_000_000_i64)]
    ttl: i64,
    /// A lease ID of the client's choice; the server picks one if absent.
    #[serde(default)]
    #[schema(value_type = Option<schema::LeaseId>)]
    id: Option<LeaseId>,
}

// The schema of `GrantBody::ttl` writes the largest TTL out.
const _: () = assert!(MAX_TTL_S == 9_000_000_000);

/// A lease and its TTL in seconds.
#[derive(Serialize, ToSchema)]
struct LeaseTtl {
    #[schema(value_type = schema::LeaseId)]
    id: LeaseId,
    ttl: i64,
}

const LEASE_PATH: &str = "The lease ID.";

/// Grants a lease.
#[utoipa::path(post, path = "/v1/leases", tag = "leases", operation_id = "grant_lease",
    request_body = GrantBody,
    responses(
        (status = 200, description = "The lease, granted.", body = LeaseTtl),
        (status = 400, description = "A malformed body or field (`bad_json`, `invalid_body`, `invalid_field`, `invalid_ttl`, `ttl_too_large`).", body = ErrorBody),
        (status = 409, description = "The ID is taken (`lease_exists`).", body = ErrorBody),
        (status = 429, description = "The account's `max_leases` (`limit_reached`).", body = ErrorBody),
    ))]
async fn grant(
    control: web::Data<Control>,
    caller: Caller,
    body: JsonBody<GrantBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    if body.ttl <= 0 {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!("ttl: must be a positive number of seconds, got {}", body.ttl),
        ));
    }
    let granted = control.grant(caller.meta(), body.id, body.ttl).await?;
    Ok(HttpResponse::Ok().json(LeaseTtl {
        id: granted.lease,
        ttl: granted.ttl_s,
    }))
}

/// Keeps a lease alive: its TTL starts again.
#[utoipa::path(post, path = "/v1/leases/{id}/keepalive", tag = "leases", operation_id = "keep_lease_alive",
    params(("id" = schema::LeaseId, Path, description = LEASE_PATH)),
    responses(
        (status = 200, description = "The lease and its granted TTL.", body = LeaseTtl),
        (status = 400, description = "A malformed lease ID (`invalid_lease_id`).", body = ErrorBody),
        (status = 404, description = "No such lease (`lease_not_found`).", body = ErrorBody),
    ))]
async fn keep_alive(
    control: web::Data<Control>,
    caller: Caller,
    via: crate::control::Via,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let lease = lease_id(&id)?;
    let ttl = control.keep_alive_via(caller.meta(), lease, &via).await?;
    Ok(HttpResponse::Ok().json(LeaseTtl { id: lease, ttl }))
}

/// A revoked lease and the keys deleted with it.
#[derive(Serialize, ToSchema)]
struct Revoked {
    #[schema(value_type = schema::LeaseId)]
    id: LeaseId,
    /// The key space's revision after the deletion.
    revision: i64,
    deleted_keys: usize,
}

/// Revokes a lease and deletes its keys.
#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "leases", operation_id = "revoke_lease",
    params(("id" = schema::LeaseId, Path, description = LEASE_PATH)),
    responses(
        (status = 200, description = "The lease, revoked.", body = Revoked),
        (status = 400, description = "A malformed lease ID (`invalid_lease_id`).", body = ErrorBody),
        (status = 404, description = "No such lease (`lease_not_found`).", body = ErrorBody),
    ))]
async fn revoke(control: web::Data<Control>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let lease = lease_id(&id)?;
    let deleted = control.revoke(caller.meta(), lease).await?;
    Ok(HttpResponse::Ok().json(Revoked {
        id: lease,
        revision: deleted.revision,
        deleted_keys: deleted.count,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TtlQuery {
    /// List the lease's keys too.
    #[serde(default)]
    keys: bool,
}

/// A lease: its granted TTL and the seconds it has left.
#[derive(Serialize, ToSchema)]
struct LeaseView {
    #[schema(value_type = schema::LeaseId)]
    id: LeaseId,
    granted_ttl: i64,
    /// Seconds left.
    ttl: i64,
    /// Its keys, with `?keys=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<schema::Bytes>>)]
    keys: Option<Vec<Bytes>>,
}

/// A lease's TTL and, with `?keys=true`, its keys.
#[utoipa::path(get, path = "/v1/leases/{id}", tag = "leases", operation_id = "get_lease",
    params(("id" = schema::LeaseId, Path, description = LEASE_PATH), TtlQuery),
    responses(
        (status = 200, description = "The lease.", body = LeaseView),
        (status = 400, description = "A malformed lease ID or query (`invalid_lease_id`, `invalid_query`).", body = ErrorBody),
        (status = 404, description = "No such lease (`lease_not_found`).", body = ErrorBody),
    ))]
async fn time_to_live(
    control: web::Data<Control>,
    caller: Caller,
    via: crate::control::Via,
    id: web::Path<String>,
    QueryArgs(query): QueryArgs<TtlQuery>,
) -> Result<HttpResponse, ApiError> {
    let lease = lease_id(&id)?;
    let info = control
        .time_to_live_via(&caller.account, lease, query.keys, &via)
        .await?;
    Ok(HttpResponse::Ok().json(LeaseView {
        id: info.lease,
        granted_ttl: info.granted_ttl_s,
        ttl: info.remaining_s,
        keys: query.keys.then_some(info.keys),
    }))
}

/// The account's live leases, by ID.
#[derive(Serialize, ToSchema)]
struct LeaseList {
    leases: Vec<LeaseRef>,
}

#[derive(Serialize, ToSchema)]
struct LeaseRef {
    #[schema(value_type = schema::LeaseId)]
    id: LeaseId,
}

/// The account's live leases.
#[utoipa::path(get, path = "/v1/leases", tag = "leases", operation_id = "list_leases",
    responses((status = 200, description = "The live leases, by ID.", body = LeaseList)))]
async fn list_leases(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let leases = control.leases(&caller.account).await?;
    Ok(HttpResponse::Ok().json(LeaseList {
        leases: leases.into_iter().map(|id| LeaseRef { id }).collect(),
    }))
}

/// Which keys a `/v1/keys` request is about: `?key=K` or `?prefix=P`
/// (an empty prefix: every key).
/// The query string of `/v1/keys` (`PUT` documents `PutParams`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct KeysQuery {
    /// One key. Give `key` or `prefix`, not both.
    #[param(min_length = 1)]
    key: Option<String>,
    /// Every key that starts with it (empty: every key).
    prefix: Option<String>,
    /// With `prefix`: at most this many keys (0: no limit).
    #[serde(default)]
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    limit: usize,
    /// With a delete: answer the deleted key-values too.
    #[serde(default)]
    prev_kv: bool,
}

enum Target {
    Key(Bytes),
    Prefix(Bytes),
}

impl KeysQuery {
    fn target(&self) -> Result<Target, ApiError> {
        match (&self.key, &self.prefix) {
            (Some(key), None) => Ok(Target::Key(Bytes::from(key.as_str()))),
            (None, Some(prefix)) => Ok(Target::Prefix(Bytes::from(prefix.as_str()))),
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "invalid_query",
                "give either key or prefix, not both",
            )),
            (None, None) => Err(ApiError::bad_request(
                "invalid_query",
                "give key=KEY, or prefix=PREFIX (an empty prefix means every key)",
            )),
        }
    }
}

/// The key of a `/v1/keys/{key}` path: everything after `/v1/keys/`,
/// percent-decoded to bytes.
fn path_key(req: &HttpRequest) -> Result<Bytes, ApiError> {
    let raw = req
        .uri()
        .path()
        .split_once("/v1/keys/")
        .map(|(_, k)| k)
        .unwrap_or_default();
    let key: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if key.is_empty() {
        return Err(ApiError::bad_request("empty_key", "key is not provided"));
    }
    Ok(Bytes(key))
}

/// A key and its value.
#[derive(Serialize, ToSchema)]
struct KeyView {
    #[schema(value_type = schema::Bytes)]
    key: Bytes,
    #[schema(value_type = schema::Bytes)]
    value: Bytes,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    /// The lease it is attached to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::LeaseId>)]
    lease: Option<LeaseId>,
}

impl KeyView {
    fn new(key: Bytes, kv: KeyValue) -> KeyView {
        KeyView {
            key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// The keys under a prefix.
#[derive(Serialize, ToSchema)]
struct KeyList {
    /// The key space's revision.
    revision: i64,
    /// How many keys match (all of them, whatever the limit).
    count: usize,
    /// More keys match than the limit let through.
    more: bool,
    kvs: Vec<KeyView>,
}

/// The query string of `PUT /v1/keys`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // a schema only
struct PutParams {
    /// The key.
    #[param(min_length = 1)]
    key: String,
    /// Answer the previous key-value too.
    prev_kv: Option<bool>,
}

/// What `GET /v1/keys` answers: one key (`?key=`) or a list (`?prefix=`).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a schema only
enum KeysAnswer {
    Key(KeyView),
    List(KeyList),
}

const KEY_PATH: &str = "The key, percent-encoded: everything after `/v1/keys/`, `/` included.";

async fn get_one(control: &Control, caller: &Caller, key: Bytes) -> Result<HttpResponse, ApiError> {
    let done = control
        .range(&caller.account, KeyRange::single(key.clone()), RangeOptions::limit(1))
        .await?;
    match done.result.kvs.into_iter().next() {
        Some((k, kv)) => Ok(HttpResponse::Ok().json(KeyView::new(k, kv))),
        None => Err(ApiError::not_found(
            "key_not_found",
            format!("key {:?} not found", key.to_string_lossy()),
        )),
    }
}

/// Reads one key (`?key=K`) or the keys under a prefix (`?prefix=P`).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", operation_id = "get_keys",
    params(KeysQuery),
    responses(
        (status = 200, description = "The key (`?key=`), or the keys under the prefix (`?prefix=`).", body = KeysAnswer),
        (status = 400, description = "A malformed query, or neither or both of `key` and `prefix` (`invalid_query`).", body = ErrorBody),
        (status = 404, description = "No such key (`key_not_found`).", body = ErrorBody),
    ))]
async fn get_keys(
    control: web::Data<Control>,
    caller: Caller,
    QueryArgs(query): QueryArgs<KeysQuery>,
) -> Result<HttpResponse, ApiError> {
    match query.target()? {
        Target::Key(key) => get_one(&control, &caller, key).await,
        Target::Prefix(prefix) => {
            let done = control
                .range(
                    &caller.account,
                    KeyRange::prefix(prefix),
                    RangeOptions::limit(query.limit),
                )
                .await?;
            Ok(HttpResponse::Ok().json(KeyList {
                revision: done.revision,
                count: done.result.count,
                more: done.result.more,
                kvs: done.result.kvs.into_iter().map(|(k, kv)| KeyView::new(k, kv)).collect(),
            }))
        }
    }
}

/// Reads the key in the path.
#[utoipa::path(get, path = "/v1/keys/{key}", tag = "keys", operation_id = "get_key",
    params(("key" = String, Path, description = KEY_PATH)),
    responses(
        (status = 200, description = "The key.", body = KeyView),
        (status = 400, description = "A malformed path (`empty_key`).", body = ErrorBody),
        (status = 404, description = "No such key (`key_not_found`).", body = ErrorBody),
    ))]
async fn get_key_path(control: web::Data<Control>, caller: Caller, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    get_one(&control, &caller, path_key(&req)?).await
}

#[derive(Deserialize, ToSchema)]
#[schema(examples(json!({"value": "hello", "lease": "1a203af6dc400000"})))]
#[serde(deny_unknown_fields)]
struct PutBody {
    #[schema(value_type = schema::Bytes)]
    value: Bytes,
    /// Attach the key to this live lease (none: detach it).
    #[serde(default)]
    #[schema(value_type = Option<schema::LeaseId>)]
    lease: Option<LeaseId>,
}

/// A key, written.
#[derive(Serialize, ToSchema)]
struct PutView {
    /// The key space's revision after the put.
    revision: i64,
    /// The key as it was, with `?prev_kv=true` (if it existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<KeyView>,
}

/// The statuses of a put besides 200 and 400.
const PUT_404: &str = "The lease does not exist (`lease_not_found`).";
const PUT_409: &str = "The lease holds too many keys (`too_many_keys_for_lease`).";
const PUT_429: &str = "The account's `max_keys` (`limit_reached`).";

async fn put(
    control: &Control,
    caller: &Caller,
    key: Bytes,
    body: PutBody,
    prev_kv: bool,
) -> Result<HttpResponse, ApiError> {
    let done = control
        .put(
            caller.meta(),
            key.clone(),
            Some(body.value),
            LeaseUpdate::Set(body.lease),
            prev_kv,
        )
        .await?;
    Ok(HttpResponse::Ok().json(PutView {
        revision: done.revision,
        prev_kv: done.prev.map(|kv| KeyView::new(key, kv)),
    }))
}

/// Writes the key `?key=K`.
#[utoipa::path(put, path = "/v1/keys", tag = "keys", operation_id = "put_key_by_query",
    params(PutParams),
    request_body = PutBody,
    responses(
        (status = 200, description = "The key, written.", body = PutView),
        (status = 400, description = "A malformed body or query, or no `key` (`bad_json`, `invalid_body`, `invalid_field`, `invalid_query`, `empty_key`).", body = ErrorBody),
        (status = 404, description = PUT_404, body = ErrorBody),
        (status = 409, description = PUT_409, body = ErrorBody),
        (status = 429, description = PUT_429, body = ErrorBody),
    ))]
async fn put_key_query(
    control: web::Data<Control>,
    caller: Caller,
    QueryArgs(query): QueryArgs<KeysQuery>,
    body: JsonBody<PutBody>,
) -> Result<HttpResponse, ApiError> {
    match query.target()? {
        Target::Key(key) => put(&control, &caller, key, body.0, query.prev_kv).await,
        Target::Prefix(_) => Err(ApiError::bad_request(
            "invalid_query",
            "put takes key=KEY, not a prefix",
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PrevKvQuery {
    /// Answer the previous key-value too.
    #[serde(default)]
    prev_kv: bool,
}

/// Writes the key in the path.
#[utoipa::path(put, path = "/v1/keys/{key}", tag = "keys", operation_id = "put_key",
    params(("key" = String, Path, description = KEY_PATH), PrevKvQuery),
    request_body = PutBody,
    responses(
        (status = 200, description = "The key, written.", body = PutView),
        (status = 400, description = "A malformed body or query (`bad_json`, `invalid_body`, `invalid_field`, `invalid_query`).", body = ErrorBody),
        (status = 404, description = PUT_404, body = ErrorBody),
        (status = 409, description = PUT_409, body = ErrorBody),
        (status = 429, description = PUT_429, body = ErrorBody),
    ))]
async fn put_key_path(
    control: web::Data<Control>,
    caller: Caller,
    req: HttpRequest,
    QueryArgs(query): QueryArgs<PrevKvQuery>,
    body: JsonBody<PutBody>,
) -> Result<HttpResponse, ApiError> {
    put(&control, &caller, path_key(&req)?, body.0, query.prev_kv).await
}

/// Keys, deleted.
#[derive(Serialize, ToSchema)]
struct DeletedView {
    /// The key space's revision after the deletion.
    revision: i64,
    /// How many keys were deleted.
    deleted: usize,
    /// The keys as they were, with `?prev_kv=true`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prev_kvs: Vec<KeyView>,
}

async fn delete(control: &Control, caller: &Caller, range: KeyRange, prev_kv: bool) -> Result<HttpResponse, ApiError> {
    let done = control.delete_range(caller.meta(), range, prev_kv).await?;
    Ok(HttpResponse::Ok().json(DeletedView {
        revision: done.revision,
        deleted: done.count,
        prev_kvs: done.prev_kvs.into_iter().map(|(k, kv)| KeyView::new(k, kv)).collect(),
    }))
}

/// Deletes the key `?key=K` or the keys under `?prefix=P`.
#[utoipa::path(delete, path = "/v1/keys", tag = "keys", operation_id = "delete_keys",
    params(KeysQuery),
    responses(
        (status = 200, description = "What was deleted (nothing, if nothing matched).", body = DeletedView),
        (status = 400, description = "A malformed query, or neither or both of `key` and `prefix` (`invalid_query`, `empty_key`).", body = ErrorBody),
    ))]
async fn delete_keys(
    control: web::Data<Control>,
    caller: Caller,
    QueryArgs(query): QueryArgs<KeysQuery>,
) -> Result<HttpResponse, ApiError> {
    let range = match query.target()? {
        Target::Key(key) => KeyRange::single(key),
        Target::Prefix(prefix) => KeyRange::prefix(prefix),
    };
    delete(&control, &caller, range, query.prev_kv).await
}

/// Deletes the key in the path.
#[utoipa::path(delete, path = "/v1/keys/{key}", tag = "keys", operation_id = "delete_key",
    params(("key" = String, Path, description = KEY_PATH), PrevKvQuery),
    responses(
        (status = 200, description = "What was deleted (nothing, if the key did not exist).", body = DeletedView),
        (status = 400, description = "A malformed query (`invalid_query`).", body = ErrorBody),
    ))]
async fn delete_key_path(
    control: web::Data<Control>,
    caller: Caller,
    req: HttpRequest,
    QueryArgs(query): QueryArgs<PrevKvQuery>,
) -> Result<HttpResponse, ApiError> {
    delete(&control, &caller, KeyRange::single(path_key(&req)?), query.prev_kv).await
}
