//! `KV.Txn`: the protobuf txn to the key space's ([`Txn`]) and its outcome
//! back, with etcd's checks (`crate::etcd`, shared with the gateway's
//! `/v3/kv/txn`). Each operation's answer carries a header with only its
//! revision (a nested txn's, none), as etcd's do.

use tenure_events::Bytes;

use super::kv::{kv, options};
use super::pb::{self, compare::TargetUnion, request_op::Request, response_op::Response};
use crate::domain::keyspace::txn::{Compare, CompareResult, CompareTarget, OpOutcome, Txn, TxnOp, TxnOutcome};
use crate::domain::keyspace::{KeyRange, RangeResult};
use crate::etcd::{self, EtcdError};

fn compare(c: pb::Compare) -> Result<Compare, EtcdError> {
    let result = match c.result {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        other => return Err(EtcdError::invalid(format!("unknown compare result {other}"))),
    };
    // The operand is the target's field; another one set leaves it at its
    // zero value, as in etcd.
    let operand = c.target_union;
    let target = match c.target {
        0 => CompareTarget::Version(match operand {
            Some(TargetUnion::Version(v)) => v,
            _ => 0,
        }),
        1 => CompareTarget::Create(match operand {
            Some(TargetUnion::CreateRevision(v)) => v,
            _ => 0,
        }),
        2 => CompareTarget::Mod(match operand {
            Some(TargetUnion::ModRevision(v)) => v,
            _ => 0,
        }),
        3 => CompareTarget::Value(Bytes(match operand {
            Some(TargetUnion::Value(v)) => v,
            _ => Vec::new(),
        })),
        4 => CompareTarget::Lease(match operand {
            Some(TargetUnion::Lease(v)) => v,
            _ => 0,
        }),
        other => return Err(EtcdError::invalid(format!("unknown compare target {other}"))),
    };
    Ok(Compare {
        range: KeyRange {
            key: Bytes(c.key),
            range_end: Bytes(c.range_end),
        },
        target,
        result,
    })
}

/// `req` checked as etcd's `checkTxnRequest` does (see `etcd::check_txn_level`).
pub(super) fn txn_of(req: pb::TxnRequest, max_ops: usize) -> Result<Txn, EtcdError> {
    let left = etcd::check_txn_level(
        req.compare.len(),
        req.success.len(),
        req.failure.len(),
        req.compare.iter().map(|c| c.key.as_slice()),
        max_ops,
    )?;
    let ops = |ops: Vec<pb::RequestOp>| {
        ops.into_iter()
            .map(|op| txn_op(op, left))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Txn {
        compare: req.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: ops(req.success)?,
        failure: ops(req.failure)?,
    })
}

fn txn_op(op: pb::RequestOp, max_ops: usize) -> Result<TxnOp, EtcdError> {
    match op.request {
        Some(Request::RequestRange(req)) => Ok(TxnOp::Range {
            options: options(&req)?,
            revision: req.revision,
            range: etcd::key_range(req.key, req.range_end)?,
        }),
        Some(Request::RequestPut(req)) => {
            let put = etcd::put_op(req.into())?;
            Ok(TxnOp::Put {
                key: put.key,
                value: put.value,
                lease: put.lease,
                prev_kv: put.prev_kv,
            })
        }
        Some(Request::RequestDeleteRange(req)) => Ok(TxnOp::DeleteRange {
            range: etcd::key_range(req.key, req.range_end)?,
            prev_kv: req.prev_kv,
        }),
        Some(Request::RequestTxn(req)) => Ok(TxnOp::Txn(txn_of(req, max_ops)?)),
        None => Err(etcd::empty_txn_op()),
    }
}

/// The header of an answer inside a txn: only its revision.
fn inner(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn range_response(revision: i64, result: RangeResult) -> pb::RangeResponse {
    pb::RangeResponse {
        header: inner(revision),
        kvs: result.kvs.into_iter().map(|(k, v)| kv(k, v)).collect(),
        more: result.more,
        count: etcd::count(result.count),
    }
}

/// The outcome as etcd answers it, under `header`.
pub(super) fn response(header: Option<pb::ResponseHeader>, outcome: TxnOutcome) -> pb::TxnResponse {
    let responses = outcome
        .responses
        .into_iter()
        .map(|op| {
            let response = match op {
                OpOutcome::Range { revision, result } => Response::ResponseRange(range_response(revision, result)),
                // `Control::txn` reads these from the log before answering.
                OpOutcome::RangeAt { revision, .. } => {
                    Response::ResponseRange(range_response(revision, RangeResult::default()))
                }
                OpOutcome::Put { revision, key, prev } => Response::ResponsePut(pb::PutResponse {
                    header: inner(revision),
                    prev_kv: prev.map(|v| kv(key, v)),
                }),
                OpOutcome::DeleteRange {
                    revision,
                    deleted,
                    prev_kvs,
                } => Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: inner(revision),
                    deleted: etcd::count(deleted),
                    prev_kvs: prev_kvs.into_iter().map(|(k, v)| kv(k, v)).collect(),
                }),
                OpOutcome::Txn(nested) => Response::ResponseTxn(response(None, nested)),
            };
            pb::ResponseOp {
                response: Some(response),
            }
        })
        .collect();
    pb::TxnResponse {
        header,
        succeeded: outcome.succeeded,
        responses,
    }
}
