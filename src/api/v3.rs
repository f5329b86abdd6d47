//! `/v3`: etcd 3.4's JSON gateway, so etcd HTTP clients work unchanged.
//!
//! As etcd's grpc-gateway: every call is a POST with a JSON body; keys and
//! values are base64; 64-bit integers are JSON strings in replies and strings
//! or numbers in requests; fields at their zero value are left out of
//! replies; every reply has a `header` whose `revision` is the account's key
//! space revision. Field names are the proto names or their lowerCamelCase
//! JSON names, and unknown fields are ignored. Errors are
//! `{"error", "message", "code"}` with etcd's gRPC code and the HTTP status
//! grpc-gateway v1 gives it (not found 404/5, lease exists 412/9, bad request
//! 400/3, out of range 400/11).
//!
//! Served: `kv/put`, `kv/range`, `kv/deleterange`, `kv/txn` (in `v3_txn`:
//! compares on every target, nested txns, all of a txn's writes at one
//! revision, puts with leases) and the lease calls (`lease/grant`,
//! `keepalive`, `revoke`, `timetolive`, `leases`, with etcd's
//! `kv/lease/...` aliases). The shapes here (requests, replies, headers)
//! are shared with `v3_txn`, which imports them; this module does not
//! import it.
//!
//! Deliberate differences from etcd (the differential test checks ours):
//! - lease IDs must be positive (etcd also accepts negative ones);
//! - nothing is ever compacted: a range at any past `revision` is served
//!   from the log (the key space folded up to that revision), and there is
//!   no `compact` call;
//! - a lease holds at most 10,000 keys (429, code 8);
//! - expired leases are not revoked at a limited rate;
//! - a put with a negative lease ID in a txn is refused with "lease not
//!   found" even on the branch that does not run.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use base64::Engine;
use futures::future::LocalBoxFuture;
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tenure_events::{AccountId, Bytes, LeaseId};

use super::etcd_error::{Code, EtcdError};
use super::extract::{read_body, BodyError, Caller};
use crate::control::Control;
use crate::domain::keyspace::{KeyRange, KeyValue, RangeOptions, RangeResult, SortOrder, SortTarget};
use crate::etcd;
pub(super) use crate::etcd::{count, key_range, PutOp};

/// One POST resource (one static path a resource, aliases included: a
/// resource with several patterns is matched with a regex on every request).
pub(super) fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(super::routing::method_not_allowed))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/kv/put", kv_put))
        .service(post("/kv/range", kv_range))
        .service(post("/kv/deleterange", kv_delete_range))
        .service(post("/lease/grant", lease_grant))
        .service(post("/lease/keepalive", lease_keepalive))
        .service(post("/lease/revoke", lease_revoke))
        .service(post("/kv/lease/revoke", lease_revoke))
        .service(post("/lease/timetolive", lease_time_to_live))
        .service(post("/kv/lease/timetolive", lease_time_to_live))
        .service(post("/lease/leases", lease_leases))
        .service(post("/kv/lease/leases", lease_leases));
}

/// A JSON request body as the gateway reads it: empty means `{}`.
pub(super) struct EtcdJson<T>(pub(super) T);

fn body_error(e: BodyError) -> EtcdError {
    match e {
        BodyError::TooLarge => EtcdError::invalid("etcdserver: request is too large"),
        BodyError::Unreadable(e) => EtcdError::invalid(e),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EtcdError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => serde_json::from_slice(b"{}"),
        Some(b'{') => serde_json::from_slice(bytes),
        Some(_) => return Err(EtcdError::invalid("request body must be a JSON object")),
    }
    .map_err(|e| EtcdError::invalid(e.to_string()))
}

impl<T: DeserializeOwned + 'static> FromRequest for EtcdJson<T> {
    type Error = EtcdError;
    type Future = LocalBoxFuture<'static, Result<EtcdJson<T>, EtcdError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload);
        Box::pin(async move { parse(&body.await.map_err(body_error)?).map(EtcdJson) })
    }
}

/// The raw body, for keep-alive's stream of requests.
pub(super) struct RawBody(pub(super) web::BytesMut);

impl FromRequest for RawBody {
    type Error = EtcdError;
    type Future = LocalBoxFuture<'static, Result<RawBody, EtcdError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload);
        Box::pin(async move { body.await.map(RawBody).map_err(body_error) })
    }
}

// Requests. Every field has its zero value when absent or null.

/// etcd's int64: a number or a string of one.
pub(super) fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a 64-bit integer, as a number or a string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} does not fit an int64")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            Err(E::custom(format!("cannot unmarshal number {v} into an int64")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.parse().map_err(|_| E::custom(format!("invalid int64 {v:?}")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
            Ok(0)
        }
    }
    d.deserialize_any(Visitor)
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// etcd's bytes: base64 (standard, or URL-safe), like Go's decoder.
pub(super) fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(Vec::new());
    };
    STANDARD.decode(&text).or_else(|_| URL_SAFE.decode(&text)).map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            _ => text.len(),
        };
        de::Error::custom(format!("illegal base64 data at input byte {at}"))
    })
}

/// A proto enum: its name or its number.
pub(super) fn enum_value<'de, D: Deserializer<'de>>(d: D, names: &[&str]) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Name(String),
        Number(i64),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(0),
        Some(Raw::Name(name)) => names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| de::Error::custom(format!("unknown value {name:?}, expected one of {names:?}"))),
        Some(Raw::Number(n)) => usize::try_from(n)
            .ok()
            .filter(|n| *n < names.len())
            .ok_or_else(|| de::Error::custom(format!("unknown value {n}"))),
    }
}

fn sort_order<'de, D: Deserializer<'de>>(d: D) -> Result<SortOrder, D::Error> {
    Ok([SortOrder::None, SortOrder::Ascend, SortOrder::Descend][enum_value(d, &["NONE", "ASCEND", "DESCEND"])?])
}

fn sort_target<'de, D: Deserializer<'de>>(d: D) -> Result<SortTarget, D::Error> {
    let targets = [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ];
    Ok(targets[enum_value(d, &["KEY", "VERSION", "CREATE", "MOD", "VALUE"])?])
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GrantRequest {
    #[serde(rename = "TTL", deserialize_with = "int64")]
    ttl: i64,
    #[serde(rename = "ID", deserialize_with = "int64")]
    id: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeaseRequest {
    #[serde(rename = "ID", deserialize_with = "int64")]
    id: i64,
    #[serde(deserialize_with = "boolean")]
    keys: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct PutRequest {
    #[serde(deserialize_with = "bytes")]
    pub(super) key: Vec<u8>,
    #[serde(deserialize_with = "bytes")]
    pub(super) value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    pub(super) lease: i64,
    #[serde(alias = "prevKv", deserialize_with = "boolean")]
    pub(super) prev_kv: bool,
    #[serde(alias = "ignoreValue", deserialize_with = "boolean")]
    pub(super) ignore_value: bool,
    #[serde(alias = "ignoreLease", deserialize_with = "boolean")]
    pub(super) ignore_lease: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RangeRequest {
    #[serde(deserialize_with = "bytes")]
    pub(super) key: Vec<u8>,
    #[serde(alias = "rangeEnd", deserialize_with = "bytes")]
    pub(super) range_end: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    pub(super) limit: i64,
    #[serde(deserialize_with = "int64")]
    pub(super) revision: i64,
    #[serde(alias = "sortOrder", deserialize_with = "sort_order")]
    pub(super) sort_order: SortOrder,
    #[serde(alias = "sortTarget", deserialize_with = "sort_target")]
    pub(super) sort_target: SortTarget,
    #[serde(alias = "keysOnly", deserialize_with = "boolean")]
    pub(super) keys_only: bool,
    #[serde(alias = "countOnly", deserialize_with = "boolean")]
    pub(super) count_only: bool,
    #[serde(alias = "minModRevision", deserialize_with = "int64")]
    pub(super) min_mod_revision: i64,
    #[serde(alias = "maxModRevision", deserialize_with = "int64")]
    pub(super) max_mod_revision: i64,
    #[serde(alias = "minCreateRevision", deserialize_with = "int64")]
    pub(super) min_create_revision: i64,
    #[serde(alias = "maxCreateRevision", deserialize_with = "int64")]
    pub(super) max_create_revision: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DeleteRangeRequest {
    #[serde(deserialize_with = "bytes")]
    pub(super) key: Vec<u8>,
    #[serde(alias = "rangeEnd", deserialize_with = "bytes")]
    pub(super) range_end: Vec<u8>,
    #[serde(alias = "prevKv", deserialize_with = "boolean")]
    pub(super) prev_kv: bool,
}

impl From<PutRequest> for etcd::Put {
    fn from(req: PutRequest) -> etcd::Put {
        etcd::Put {
            key: req.key,
            value: req.value,
            lease: req.lease,
            prev_kv: req.prev_kv,
            ignore_value: req.ignore_value,
            ignore_lease: req.ignore_lease,
        }
    }
}

/// etcd's checks of a put (`etcd::put_op`).
pub(super) fn put_op(req: PutRequest) -> Result<PutOp, EtcdError> {
    etcd::put_op(req.into())
}

pub(super) fn range_op(req: &RangeRequest) -> Result<(KeyRange, RangeOptions), EtcdError> {
    let range = key_range(req.key.clone(), req.range_end.clone())?;
    let options = RangeOptions {
        // A negative limit is no limit, as in etcd.
        limit: usize::try_from(req.limit).unwrap_or(0),
        sort_order: req.sort_order,
        sort_target: req.sort_target,
        count_only: req.count_only,
        keys_only: req.keys_only,
        min_mod_revision: req.min_mod_revision,
        max_mod_revision: req.max_mod_revision,
        min_create_revision: req.min_create_revision,
        max_create_revision: req.max_create_revision,
    };
    Ok((range, options))
}

// Replies.

pub(super) fn string<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(super) fn zero(v: &i64) -> bool {
    *v == 0
}

fn b64<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v.as_slice()))
}

fn b64_list<S: Serializer>(v: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        v.iter()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b.as_slice())),
    )
}

#[derive(Serialize)]
pub(super) struct Header {
    #[serde(serialize_with = "string")]
    pub(super) cluster_id: u64,
    #[serde(serialize_with = "string")]
    pub(super) member_id: u64,
    #[serde(serialize_with = "string")]
    pub(super) revision: i64,
    #[serde(serialize_with = "string")]
    pub(super) raft_term: u64,
}

/// A reply header: the account's identity (`etcd::Identity`) and `revision`.
pub(super) fn header(account: &AccountId, revision: i64) -> Header {
    let id = etcd::Identity::of(account);
    Header {
        cluster_id: id.cluster_id,
        member_id: id.member_id,
        revision,
        raft_term: id.raft_term,
    }
}

#[derive(Serialize)]
pub(super) struct Kv {
    #[serde(serialize_with = "b64")]
    pub(super) key: Bytes,
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    pub(super) create_revision: i64,
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    pub(super) mod_revision: i64,
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    pub(super) version: i64,
    #[serde(serialize_with = "b64", skip_serializing_if = "Bytes::is_empty")]
    pub(super) value: Bytes,
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    pub(super) lease: i64,
}

impl Kv {
    pub(super) fn new(key: Bytes, kv: KeyValue) -> Kv {
        Kv {
            key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease.map_or(0, LeaseId::get),
        }
    }
}

#[derive(Serialize)]
struct LeaseReply {
    header: Header,
    #[serde(rename = "ID", serialize_with = "string", skip_serializing_if = "zero")]
    id: i64,
    #[serde(rename = "TTL", serialize_with = "string", skip_serializing_if = "zero")]
    ttl: i64,
    #[serde(rename = "grantedTTL", serialize_with = "string", skip_serializing_if = "zero")]
    granted_ttl: i64,
    #[serde(serialize_with = "b64_list", skip_serializing_if = "Vec::is_empty")]
    keys: Vec<Bytes>,
}

impl LeaseReply {
    fn new(header: Header, id: i64, ttl: i64) -> LeaseReply {
        LeaseReply {
            header,
            id,
            ttl,
            granted_ttl: 0,
            keys: Vec::new(),
        }
    }
}

#[derive(Serialize)]
struct HeaderOnly {
    header: Header,
}

#[derive(Serialize)]
struct LeaseRef {
    #[serde(rename = "ID", serialize_with = "string")]
    id: i64,
}

#[derive(Serialize)]
struct LeasesReply {
    header: Header,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    leases: Vec<LeaseRef>,
}

#[derive(Serialize)]
pub(super) struct PutReply<H = Header> {
    pub(super) header: H,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) prev_kv: Option<Kv>,
}

#[derive(Serialize)]
pub(super) struct RangeReply<H = Header> {
    header: H,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kvs: Vec<Kv>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    more: bool,
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    count: i64,
}

#[derive(Serialize)]
pub(super) struct DeleteRangeReply<H = Header> {
    header: H,
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    deleted: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prev_kvs: Vec<Kv>,
}

impl<H> RangeReply<H> {
    pub(super) fn new(header: H, result: RangeResult) -> RangeReply<H> {
        RangeReply {
            header,
            kvs: result.kvs.into_iter().map(|(k, kv)| Kv::new(k, kv)).collect(),
            more: result.more,
            count: count(result.count),
        }
    }
}

impl<H> DeleteRangeReply<H> {
    pub(super) fn new(header: H, deleted: usize, prev_kvs: Vec<(Bytes, KeyValue)>) -> DeleteRangeReply<H> {
        DeleteRangeReply {
            header,
            deleted: count(deleted),
            prev_kvs: prev_kvs.into_iter().map(|(k, kv)| Kv::new(k, kv)).collect(),
        }
    }
}

pub(super) fn ok<T: Serialize>(body: T) -> Result<HttpResponse, EtcdError> {
    Ok(HttpResponse::Ok().json(body))
}

// Handlers.

async fn lease_grant(
    control: web::Data<Control>,
    caller: Caller,
    EtcdJson(req): EtcdJson<GrantRequest>,
) -> Result<HttpResponse, EtcdError> {
    let granted = etcd::grant(&control, caller.meta(), req.id, req.ttl).await?;
    let header = header(&caller.account, control.revision(&caller.account));
    ok(LeaseReply::new(header, granted.lease.get(), granted.ttl_s))
}

async fn lease_revoke(
    control: web::Data<Control>,
    caller: Caller,
    EtcdJson(req): EtcdJson<LeaseRequest>,
) -> Result<HttpResponse, EtcdError> {
    let deleted = etcd::revoke(&control, caller.meta(), req.id).await?;
    ok(HeaderOnly {
        header: header(&caller.account, deleted.revision),
    })
}

/// Keep-alive is a stream in etcd: the body may hold several requests, and
/// each gets a `{"result": ...}` line. A lease that is gone answers without
/// a TTL, as etcd does.
async fn lease_keepalive(
    control: web::Data<Control>,
    caller: Caller,
    via: crate::control::Via,
    RawBody(body): RawBody,
) -> Result<HttpResponse, EtcdError> {
    #[derive(Serialize)]
    struct Line {
        result: LeaseReply,
    }
    let mut out = Vec::new();
    for request in serde_json::Deserializer::from_slice(&body).into_iter::<LeaseRequest>() {
        let request = request.map_err(|e| EtcdError::invalid(e.to_string()))?;
        let ttl = etcd::keep_alive(&control, caller.meta(), request.id, &via).await?;
        let header = header(&caller.account, control.revision(&caller.account));
        let line = Line {
            result: LeaseReply::new(header, request.id, ttl),
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| EtcdError::new(Code::Internal, e.to_string()))?;
        out.push(b'\n');
    }
    Ok(HttpResponse::Ok().content_type("application/json").body(out))
}

async fn lease_time_to_live(
    control: web::Data<Control>,
    caller: Caller,
    via: crate::control::Via,
    EtcdJson(req): EtcdJson<LeaseRequest>,
) -> Result<HttpResponse, EtcdError> {
    let info = etcd::time_to_live(&control, &caller.account, req.id, req.keys, &via).await?;
    let header = header(&caller.account, control.revision(&caller.account));
    match info {
        Some(info) => ok(LeaseReply {
            granted_ttl: info.granted_ttl_s,
            keys: info.keys,
            ..LeaseReply::new(header, req.id, info.remaining_s)
        }),
        // etcd answers an unknown lease with TTL -1, not an error.
        None => ok(LeaseReply::new(header, req.id, -1)),
    }
}

async fn lease_leases(
    control: web::Data<Control>,
    caller: Caller,
    EtcdJson(_): EtcdJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<HttpResponse, EtcdError> {
    let leases = control.leases(&caller.account).await?;
    let header = header(&caller.account, control.revision(&caller.account));
    ok(LeasesReply {
        header,
        leases: leases.into_iter().map(|l| LeaseRef { id: l.get() }).collect(),
    })
}

async fn kv_put(
    control: web::Data<Control>,
    caller: Caller,
    EtcdJson(req): EtcdJson<PutRequest>,
) -> Result<HttpResponse, EtcdError> {
    let (key, done) = etcd::put(&control, caller.meta(), req.into()).await?;
    ok(PutReply {
        header: header(&caller.account, done.revision),
        prev_kv: done.prev.map(|kv| Kv::new(key, kv)),
    })
}

async fn kv_range(
    control: web::Data<Control>,
    caller: Caller,
    EtcdJson(req): EtcdJson<RangeRequest>,
) -> Result<HttpResponse, EtcdError> {
    let (range, options) = range_op(&req)?;
    let done = etcd::range(&control, &caller.account, range, options, req.revision).await?;
    ok(RangeReply::new(header(&caller.account, done.revision), done.result))
}

async fn kv_delete_range(
    control: web::Data<Control>,
    caller: Caller,
    EtcdJson(req): EtcdJson<DeleteRangeRequest>,
) -> Result<HttpResponse, EtcdError> {
    let range = key_range(req.key, req.range_end)?;
    let done = etcd::delete_range(&control, caller.meta(), range, req.prev_kv).await?;
    ok(DeleteRangeReply::new(
        header(&caller.account, done.revision),
        done.count,
        done.prev_kvs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::CommandError;
    use crate::domain::keyspace::KeyspaceRejection;
    use crate::domain::lease::LeaseRejection;
    use actix_web::ResponseError;

    #[test]
    fn requests_read_int64s_from_numbers_and_strings_and_ignore_unknown_fields() {
        let check = |body: &str, ttl: i64, id: i64| {
            let req: GrantRequest = parse(body.as_bytes()).expect("parses");
            assert_eq!((req.ttl, req.id), (ttl, id), "{body}");
        };
        check(r#"{"TTL": 100}"#, 100, 0);
        check(r#"{"TTL": "100", "ID": "7"}"#, 100, 7);
        check(r#"{"TTL": null, "other": [1, 2]}"#, 0, 0);
        check("", 0, 0);
        check("  ", 0, 0);
        let bad = |body: &str, has: &str| {
            let err = parse::<GrantRequest>(body.as_bytes()).err().expect("refused");
            assert_eq!(err.code, Code::InvalidArgument);
            assert!(err.message.contains(has), "{body}: {}", err.message);
        };
        bad(r#"{"TTL": 1.5}"#, "1.5");
        bad(r#"{"TTL": "x"}"#, "invalid int64");
        bad(r#"{"ID": 18446744073709551615}"#, "does not fit");
        bad("{bad", "key must be a string");
        bad("[1]", "JSON object");
    }

    #[test]
    fn requests_take_proto_and_camel_case_names_base64_and_enums() {
        let req: RangeRequest = parse(
            br#"{"key": "a2V5", "rangeEnd": "a2V6", "limit": "2", "sort_order": "DESCEND", "sortTarget": 3, "countOnly": true}"#,
        )
        .expect("parses");
        assert_eq!(
            (req.key, req.range_end, req.limit),
            (b"key".to_vec(), b"kez".to_vec(), 2)
        );
        assert_eq!(
            (req.sort_order, req.sort_target, req.count_only),
            (SortOrder::Descend, SortTarget::Mod, true)
        );
        let err = parse::<PutRequest>(br#"{"key": "!!"}"#).err().expect("bad base64");
        assert!(
            err.message.contains("illegal base64 data at input byte 0"),
            "{}",
            err.message
        );
        let url_safe: PutRequest = parse(br#"{"key": "_-8="}"#).expect("URL-safe base64");
        assert_eq!(url_safe.key, vec![0xff, 0xef]);
        assert!(parse::<RangeRequest>(br#"{"sort_order": "SIDEWAYS"}"#).is_err());
    }

    #[test]
    fn replies_use_strings_for_int64_and_leave_zero_values_out() {
        let account = AccountId::default_account();
        let reply = LeaseReply::new(header(&account, 7), 1234, 0);
        let json = serde_json::to_value(&reply).expect("serializes");
        assert_eq!(json["ID"], "1234");
        assert_eq!(json["header"]["revision"], "7");
        assert!(json.get("TTL").is_none() && json.get("grantedTTL").is_none() && json.get("keys").is_none());
        let kv = Kv::new(
            "k".into(),
            KeyValue {
                value: Bytes::default(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                lease: None,
            },
        );
        assert_eq!(
            serde_json::to_value(kv).expect("serializes"),
            serde_json::json!({"key": "aw==", "create_revision": "2", "mod_revision": "3", "version": "2"})
        );
    }

    #[test]
    fn errors_carry_etcd_s_codes_and_grpc_gateway_s_statuses() {
        let check = |e: CommandError, status: u16, code: u16, message: &str| {
            let err = EtcdError::from(e);
            assert_eq!((err.status_code().as_u16(), err.code as u16), (status, code));
            assert!(err.message.contains(message), "{}", err.message);
        };
        let id = LeaseId::new(1).expect("positive");
        check(
            LeaseRejection::NotFound(id).into(),
            404,
            5,
            "etcdserver: requested lease not found",
        );
        check(
            LeaseRejection::AlreadyExists(id).into(),
            412,
            9,
            "etcdserver: lease already exists",
        );
        check(
            LeaseRejection::TtlTooLarge { ttl_s: 1, max_s: 0 }.into(),
            400,
            11,
            "etcdserver: too large lease TTL",
        );
        check(
            KeyspaceRejection::EmptyKey.into(),
            400,
            3,
            "etcdserver: key is not provided",
        );
        check(
            KeyspaceRejection::TooManyKeysForLease { lease: id, max: 1 }.into(),
            429,
            8,
            "maximum",
        );
        check(CommandError::Unavailable("retry".into()), 503, 14, "retry");
    }
}
