//! `/v3/kv/txn`: etcd 3.4's Txn through its JSON gateway. The request is
//! checked here as etcd's `checkTxnRequest` checks it (the size of each
//! level, the compares' keys, each operation); the rest (duplicate keys,
//! compares, leases, the operations) is the key space's (`domain::keyspace::txn`,
//! reached through `Control::txn`). Answers in etcd's shapes: each
//! operation's answer carries a header with only its revision, a nested
//! txn's an empty one; `succeeded: false` is left out.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};
use tenure_events::Bytes;

use super::etcd_error::EtcdError;
use super::extract::Caller;
use super::v3::{
    bytes, enum_value, header, int64, key_range, ok, post, put_op, range_op, string, zero, DeleteRangeReply,
    DeleteRangeRequest, EtcdJson, Header, Kv, PutOp, PutReply, PutRequest, RangeReply, RangeRequest,
};
use crate::control::Control;
use crate::domain::keyspace::txn::{
    Compare, CompareResult, CompareTarget, OpOutcome, Txn, TxnOp, TxnOutcome, MAX_TXN_OPS,
};
use crate::domain::keyspace::{KeyRange, RangeResult};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/kv/txn", kv_txn));
}

async fn kv_txn(
    control: web::Data<Control>,
    caller: Caller,
    EtcdJson(req): EtcdJson<TxnRequest>,
) -> Result<HttpResponse, EtcdError> {
    let txn = txn_of(req, MAX_TXN_OPS)?;
    let done = control.txn(caller.meta(), txn).await?;
    ok(TxnReply::new(header(&caller.account, done.revision), done.outcome))
}

/// A list that may be absent or null.
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TxnRequest {
    #[serde(deserialize_with = "list")]
    compare: Vec<CompareRequest>,
    #[serde(deserialize_with = "list")]
    success: Vec<RequestOp>,
    #[serde(deserialize_with = "list")]
    failure: Vec<RequestOp>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompareRequest {
    #[serde(deserialize_with = "compare_result")]
    result: CompareResult,
    /// VERSION, CREATE, MOD, VALUE or LEASE, by position.
    #[serde(deserialize_with = "compare_target")]
    target: usize,
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(alias = "rangeEnd", deserialize_with = "bytes")]
    range_end: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    version: i64,
    #[serde(alias = "createRevision", deserialize_with = "int64")]
    create_revision: i64,
    #[serde(alias = "modRevision", deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(deserialize_with = "bytes")]
    value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    lease: i64,
}

fn compare_result<'de, D: Deserializer<'de>>(d: D) -> Result<CompareResult, D::Error> {
    let results = [
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ];
    Ok(results[enum_value(d, &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])?])
}

fn compare_target<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    enum_value(d, &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"])
}

/// One operation of a txn: the first request it holds.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RequestOp {
    #[serde(alias = "requestRange")]
    request_range: Option<RangeRequest>,
    #[serde(alias = "requestPut")]
    request_put: Option<PutRequest>,
    #[serde(alias = "requestDeleteRange")]
    request_delete_range: Option<DeleteRangeRequest>,
    #[serde(alias = "requestTxn")]
    request_txn: Option<TxnRequest>,
}

/// A txn request checked as etcd's `checkTxnRequest` does, in its order:
/// the number of compares and of each branch's operations (at most
/// `max_ops`; a nested txn gets what its parent leaves), the compares'
/// keys, then each operation.
fn txn_of(req: TxnRequest, max_ops: usize) -> Result<Txn, EtcdError> {
    let left = crate::etcd::check_txn_level(
        req.compare.len(),
        req.success.len(),
        req.failure.len(),
        req.compare.iter().map(|c| c.key.as_slice()),
        max_ops,
    )?;
    let compare = req
        .compare
        .into_iter()
        .map(|c| {
            // The operand is the field of the target; another one set
            // leaves it at its zero value, as in etcd.
            let target = match c.target {
                0 => CompareTarget::Version(c.version),
                1 => CompareTarget::Create(c.create_revision),
                2 => CompareTarget::Mod(c.mod_revision),
                3 => CompareTarget::Value(Bytes(c.value)),
                _ => CompareTarget::Lease(c.lease),
            };
            Compare {
                range: KeyRange {
                    key: Bytes(c.key),
                    range_end: Bytes(c.range_end),
                },
                target,
                result: c.result,
            }
        })
        .collect();
    let ops_of = |ops: Vec<RequestOp>| {
        ops.into_iter()
            .map(|op| txn_op(op, left))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Txn {
        compare,
        success: ops_of(req.success)?,
        failure: ops_of(req.failure)?,
    })
}

fn txn_op(op: RequestOp, max_ops: usize) -> Result<TxnOp, EtcdError> {
    if let Some(req) = op.request_range {
        let (range, options) = range_op(&req)?;
        return Ok(TxnOp::Range {
            range,
            options,
            revision: req.revision,
        });
    }
    if let Some(req) = op.request_put {
        let PutOp {
            key,
            value,
            lease,
            prev_kv,
        } = put_op(req)?;
        return Ok(TxnOp::Put {
            key,
            value,
            lease,
            prev_kv,
        });
    }
    if let Some(req) = op.request_delete_range {
        return Ok(TxnOp::DeleteRange {
            range: key_range(req.key, req.range_end)?,
            prev_kv: req.prev_kv,
        });
    }
    if let Some(req) = op.request_txn {
        return Ok(TxnOp::Txn(txn_of(req, max_ops)?));
    }
    Err(crate::etcd::empty_txn_op())
}

/// The header of an answer inside a txn: etcd sets only its revision (and
/// not even that in a nested txn's).
#[derive(Serialize)]
struct InnerHeader {
    #[serde(serialize_with = "string", skip_serializing_if = "zero")]
    revision: i64,
}

#[derive(Serialize)]
struct TxnReply<H = Header> {
    header: H,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    succeeded: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    responses: Vec<ResponseOp>,
}

/// One answer of a txn, named as etcd's `ResponseOp` fields are.
#[derive(Serialize)]
enum ResponseOp {
    #[serde(rename = "response_range")]
    Range(RangeReply<InnerHeader>),
    #[serde(rename = "response_put")]
    Put(PutReply<InnerHeader>),
    #[serde(rename = "response_delete_range")]
    DeleteRange(DeleteRangeReply<InnerHeader>),
    #[serde(rename = "response_txn")]
    Txn(TxnReply<InnerHeader>),
}

impl<H> TxnReply<H> {
    fn new(header: H, outcome: TxnOutcome) -> TxnReply<H> {
        let inner = |revision| InnerHeader { revision };
        let responses = outcome
            .responses
            .into_iter()
            .map(|response| match response {
                OpOutcome::Range { revision, result } => ResponseOp::Range(RangeReply::new(inner(revision), result)),
                // Control reads these from the log before answering; the
                // current revision is what a range in a txn answers.
                OpOutcome::RangeAt { revision, .. } => {
                    ResponseOp::Range(RangeReply::new(inner(revision), RangeResult::default()))
                }
                OpOutcome::Put { revision, key, prev } => ResponseOp::Put(PutReply {
                    header: inner(revision),
                    prev_kv: prev.map(|kv| Kv::new(key, kv)),
                }),
                OpOutcome::DeleteRange {
                    revision,
                    deleted,
                    prev_kvs,
                } => ResponseOp::DeleteRange(DeleteRangeReply::new(inner(revision), deleted, prev_kvs)),
                OpOutcome::Txn(nested) => ResponseOp::Txn(TxnReply::new(inner(0), nested)),
            })
            .collect();
        TxnReply {
            header,
            succeeded: outcome.succeeded,
            responses,
        }
    }
}
