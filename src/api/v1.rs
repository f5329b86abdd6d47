//! `/v1`: tenure's native JSON API for leases and keys. Lease IDs are 16
//! hexadecimal digits (as the CLI prints them); keys and values are JSON
//! strings, or `{"base64": "..."}` for bytes that are not UTF-8.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use tenure_events::{Bytes, LeaseId};

use super::error::ApiError;
use super::extract::{Caller, JsonBody, QueryArgs};
use crate::control::Control;
use crate::domain::keyspace::{KeyRange, KeyValue, LeaseUpdate, RangeOptions};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/leases")
            .route(web::post().to(grant))
            .route(web::get().to(list_leases))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/leases/{id}")
            .route(web::get().to(time_to_live))
            .route(web::delete().to(revoke))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/leases/{id}/keepalive")
            .route(web::post().to(keep_alive))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/keys")
            .route(web::get().to(get_keys))
            .route(web::put().to(put_key_query))
            .route(web::delete().to(delete_keys))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/keys/{key:.+}")
            .route(web::get().to(get_key_path))
            .route(web::put().to(put_key_path))
            .route(web::delete().to(delete_key_path))
            .default_service(web::to(super::method_not_allowed)),
    );
}

fn lease_id(raw: &str) -> Result<LeaseId, ApiError> {
    raw.parse()
        .map_err(|e: tenure_events::IdError| ApiError::bad_request("invalid_lease_id", e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// Seconds; raised to the server's minimum if below it.
    ttl: i64,
    /// A lease ID of the client's choice; the server picks one if absent.
    #[serde(default)]
    id: Option<LeaseId>,
}

#[derive(Serialize)]
struct LeaseTtl {
    id: LeaseId,
    ttl: i64,
}

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

async fn keep_alive(
    control: web::Data<Control>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let lease = lease_id(&id)?;
    let ttl = control.keep_alive(caller.meta(), lease).await?;
    Ok(HttpResponse::Ok().json(LeaseTtl { id: lease, ttl }))
}

#[derive(Serialize)]
struct Revoked {
    id: LeaseId,
    revision: i64,
    deleted_keys: usize,
}

async fn revoke(control: web::Data<Control>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let lease = lease_id(&id)?;
    let deleted = control.revoke(caller.meta(), lease).await?;
    Ok(HttpResponse::Ok().json(Revoked {
        id: lease,
        revision: deleted.revision,
        deleted_keys: deleted.count,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TtlQuery {
    #[serde(default)]
    keys: bool,
}

#[derive(Serialize)]
struct LeaseView {
    id: LeaseId,
    granted_ttl: i64,
    /// Seconds left.
    ttl: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<Bytes>>,
}

async fn time_to_live(
    control: web::Data<Control>,
    caller: Caller,
    id: web::Path<String>,
    QueryArgs(query): QueryArgs<TtlQuery>,
) -> Result<HttpResponse, ApiError> {
    let lease = lease_id(&id)?;
    let info = control.time_to_live(&caller.account, lease, query.keys).await?;
    Ok(HttpResponse::Ok().json(LeaseView {
        id: info.lease,
        granted_ttl: info.granted_ttl_s,
        ttl: info.remaining_s,
        keys: query.keys.then_some(info.keys),
    }))
}

#[derive(Serialize)]
struct LeaseList {
    leases: Vec<LeaseRef>,
}

#[derive(Serialize)]
struct LeaseRef {
    id: LeaseId,
}

async fn list_leases(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let leases = control.leases(&caller.account).await?;
    Ok(HttpResponse::Ok().json(LeaseList {
        leases: leases.into_iter().map(|id| LeaseRef { id }).collect(),
    }))
}

/// Which keys a `/v1/keys` request is about: `?key=K` or `?prefix=P`
/// (an empty prefix: every key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysQuery {
    key: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    limit: usize,
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

#[derive(Serialize)]
struct KeyView {
    key: Bytes,
    value: Bytes,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
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

#[derive(Serialize)]
struct KeyList {
    revision: i64,
    count: usize,
    more: bool,
    kvs: Vec<KeyView>,
}

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

async fn get_key_path(control: web::Data<Control>, caller: Caller, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    get_one(&control, &caller, path_key(&req)?).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: Bytes,
    #[serde(default)]
    lease: Option<LeaseId>,
}

#[derive(Serialize)]
struct PutView {
    revision: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<KeyView>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrevKvQuery {
    #[serde(default)]
    prev_kv: bool,
}

async fn put_key_path(
    control: web::Data<Control>,
    caller: Caller,
    req: HttpRequest,
    QueryArgs(query): QueryArgs<PrevKvQuery>,
    body: JsonBody<PutBody>,
) -> Result<HttpResponse, ApiError> {
    put(&control, &caller, path_key(&req)?, body.0, query.prev_kv).await
}

#[derive(Serialize)]
struct DeletedView {
    revision: i64,
    deleted: usize,
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

async fn delete_key_path(
    control: web::Data<Control>,
    caller: Caller,
    req: HttpRequest,
    QueryArgs(query): QueryArgs<PrevKvQuery>,
) -> Result<HttpResponse, ApiError> {
    delete(&control, &caller, KeyRange::single(path_key(&req)?), query.prev_kv).await
}
