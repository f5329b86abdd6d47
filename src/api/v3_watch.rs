//! `POST /v3/watch` on the gateway: etcd's Watch as grpc-gateway serves
//! it. The body is a sequence of JSON `WatchRequest`s (usually one
//! `create_request`); the answer is a stream of `{"result": WatchResponse}`
//! objects, one a line, for as long as the client keeps the connection.
//! The watch session is the gRPC one (`grpc::watch_session`); this module
//! only translates JSON to its messages and back, with the gateway's
//! conventions (int64s as strings, base64 bytes, zero values left out, a
//! PUT event without `type`).

use actix_web::{web, HttpResponse};
use futures::StreamExt;
use serde::{de, Deserialize, Deserializer, Serialize};
use tenure_events::Bytes;
use tokio::sync::mpsc;

use super::etcd_error::EtcdError;
use super::extract::Caller;
use super::v3::{boolean, bytes, int64, string, zero, Header, Kv, RawBody};
use crate::control::Control;
use crate::grpc::pb::{self, watch_request::RequestUnion};
use crate::watch::Watches;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/watch")
            .route(web::post().to(watch))
            .default_service(web::to(super::routing::method_not_allowed)),
    );
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WatchRequest {
    #[serde(alias = "createRequest")]
    create_request: Option<CreateRequest>,
    #[serde(alias = "cancelRequest")]
    cancel_request: Option<CancelRequest>,
    #[serde(alias = "progressRequest")]
    progress_request: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateRequest {
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(alias = "rangeEnd", deserialize_with = "bytes")]
    range_end: Vec<u8>,
    #[serde(alias = "startRevision", deserialize_with = "int64")]
    start_revision: i64,
    #[serde(alias = "progressNotify", deserialize_with = "boolean")]
    progress_notify: bool,
    #[serde(deserialize_with = "filters")]
    filters: Vec<i32>,
    #[serde(alias = "prevKv", deserialize_with = "boolean")]
    prev_kv: bool,
    #[serde(alias = "watchId", deserialize_with = "int64")]
    watch_id: i64,
    #[serde(deserialize_with = "boolean")]
    fragment: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CancelRequest {
    #[serde(alias = "watchId", deserialize_with = "int64")]
    watch_id: i64,
}

/// `filters`: `NOPUT`/`NODELETE` by name or number.
fn filters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Name(String),
        Number(i64),
    }
    let raw = Option::<Vec<Raw>>::deserialize(d)?.unwrap_or_default();
    raw.into_iter()
        .map(|f| match f {
            Raw::Name(name) if name == "NOPUT" => Ok(0),
            Raw::Name(name) if name == "NODELETE" => Ok(1),
            Raw::Number(n @ (0 | 1)) => Ok(n as i32),
            Raw::Name(name) => Err(de::Error::custom(format!(
                "unknown value {name:?}, expected one of [\"NOPUT\", \"NODELETE\"]"
            ))),
            Raw::Number(n) => Err(de::Error::custom(format!("unknown value {n}"))),
        })
        .collect()
}

impl From<WatchRequest> for pb::WatchRequest {
    fn from(r: WatchRequest) -> pb::WatchRequest {
        let request_union = if let Some(c) = r.create_request {
            Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: c.key,
                range_end: c.range_end,
                start_revision: c.start_revision,
                progress_notify: c.progress_notify,
                filters: c.filters,
                prev_kv: c.prev_kv,
                watch_id: c.watch_id,
                fragment: c.fragment,
            }))
        } else if let Some(c) = r.cancel_request {
            Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
                watch_id: c.watch_id,
            }))
        } else {
            r.progress_request
                .map(|_| RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        };
        pb::WatchRequest { request_union }
    }
}

/// The gateway's shapes of the watch session's messages (`v3`'s).
fn header(h: pb::ResponseHeader) -> Header {
    Header {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: h.revision,
        raft_term: h.raft_term,
    }
}

fn kv(kv: pb::KeyValue) -> Kv {
    Kv {
        key: Bytes(kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: Bytes(kv.value),
        lease: kv.lease,
    }
}

fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Serialize)]
struct Event {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kv: Option<Kv>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<Kv>,
}

#[derive(Serialize)]
struct WatchResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    watch_id: i64,
    #[serde(skip_serializing_if = "is_false")]
    created: bool,
    #[serde(skip_serializing_if = "is_false")]
    canceled: bool,
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    compact_revision: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    cancel_reason: String,
    #[serde(skip_serializing_if = "is_false")]
    fragment: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<Event>,
}

#[derive(Serialize)]
struct Line {
    result: WatchResult,
}

impl From<pb::WatchResponse> for Line {
    fn from(r: pb::WatchResponse) -> Line {
        Line {
            result: WatchResult {
                header: r.header.map(header),
                watch_id: r.watch_id,
                created: r.created,
                canceled: r.canceled,
                compact_revision: r.compact_revision,
                cancel_reason: r.cancel_reason,
                fragment: r.fragment,
                events: r
                    .events
                    .into_iter()
                    .map(|e| Event {
                        kind: (e.kind == 1).then_some("DELETE"),
                        kv: e.kv.map(kv),
                        prev_kv: e.prev_kv.map(kv),
                    })
                    .collect(),
            },
        }
    }
}

/// Responses the gateway holds for a client that does not read.
const OUT_BUFFER: usize = 16;

async fn watch(
    control: web::Data<Control>,
    watches: web::Data<Watches>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<HttpResponse, EtcdError> {
    let mut requests = Vec::new();
    for request in serde_json::Deserializer::from_slice(&body).into_iter::<WatchRequest>() {
        let request = request.map_err(|e| EtcdError::invalid(e.to_string()))?;
        requests.push(pb::WatchRequest::from(request));
    }
    let etcd = crate::grpc::Etcd::new(control.get_ref().clone(), watches.get_ref().clone(), String::new());
    let (tx, rx) = mpsc::channel(OUT_BUFFER);
    tokio::spawn(crate::grpc::watch_session(
        etcd,
        caller.account,
        futures::stream::iter(requests),
        tx,
    ));
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let response = rx.recv().await?;
        let mut line = serde_json::to_vec(&Line::from(response)).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(line)), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(lines.boxed_local()))
}
