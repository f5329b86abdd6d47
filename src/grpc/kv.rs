//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn (see `txn.rs`), Compact.

use tenure_events::Bytes;
use tonic::{Request, Response, Status};

use super::generated::k_v_server::KV;
use super::{pb, Etcd};
use crate::domain::keyspace::txn::MAX_TXN_OPS;
use crate::domain::keyspace::{KeyValue, RangeOptions, SortOrder, SortTarget};
use crate::etcd::{self, Code, EtcdError};

impl From<pb::PutRequest> for etcd::Put {
    fn from(req: pb::PutRequest) -> etcd::Put {
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

pub(super) fn kv(key: Bytes, kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: key.0,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.0,
        lease: kv.lease.map_or(0, |l| l.get()),
    }
}

fn enum_value<T: Copy>(values: &[T], raw: i32, field: &str) -> Result<T, EtcdError> {
    usize::try_from(raw)
        .ok()
        .and_then(|i| values.get(i).copied())
        .ok_or_else(|| EtcdError::invalid(format!("unknown {field} {raw}")))
}

pub(super) fn options(req: &pb::RangeRequest) -> Result<RangeOptions, EtcdError> {
    let sort_order = enum_value(
        &[SortOrder::None, SortOrder::Ascend, SortOrder::Descend],
        req.sort_order,
        "sort_order",
    )?;
    let sort_target = enum_value(
        &[
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ],
        req.sort_target,
        "sort_target",
    )?;
    Ok(RangeOptions {
        // A negative limit is no limit, as in etcd.
        limit: usize::try_from(req.limit).unwrap_or(0),
        sort_order,
        sort_target,
        count_only: req.count_only,
        keys_only: req.keys_only,
        min_mod_revision: req.min_mod_revision,
        max_mod_revision: req.max_mod_revision,
        min_create_revision: req.min_create_revision,
        max_create_revision: req.max_create_revision,
    })
}

#[tonic::async_trait]
impl KV for Etcd {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let options = options(&req)?;
        let range = etcd::key_range(req.key, req.range_end)?;
        let done = etcd::range(&self.control, &caller.account, range, options, req.revision).await?;
        Ok(Response::new(pb::RangeResponse {
            header: self.header(&caller.account, done.revision),
            kvs: done.result.kvs.into_iter().map(|(k, v)| kv(k, v)).collect(),
            more: done.result.more,
            count: etcd::count(done.result.count),
        }))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let (key, done) = etcd::put(&self.control, caller.meta(), request.into_inner().into()).await?;
        Ok(Response::new(pb::PutResponse {
            header: self.header(&caller.account, done.revision),
            prev_kv: done.prev.map(|v| kv(key, v)),
        }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let range = etcd::key_range(req.key, req.range_end)?;
        let done = etcd::delete_range(&self.control, caller.meta(), range, req.prev_kv).await?;
        Ok(Response::new(pb::DeleteRangeResponse {
            header: self.header(&caller.account, done.revision),
            deleted: etcd::count(done.count),
            prev_kvs: done.prev_kvs.into_iter().map(|(k, v)| kv(k, v)).collect(),
        }))
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let txn = super::txn::txn_of(request.into_inner(), MAX_TXN_OPS)?;
        let done = self.control.txn(caller.meta(), txn).await.map_err(EtcdError::from)?;
        let header = self.header(&caller.account, done.revision);
        Ok(Response::new(super::txn::response(header, done.outcome)))
    }

    /// tenure keeps every revision (a range at any past revision is served
    /// from the log), so a compaction frees nothing and changes nothing;
    /// it is accepted, as etcd accepts one, for a revision that exists.
    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let revision = self.control.revision(&caller.account);
        if request.get_ref().revision > revision {
            return Err(EtcdError::new(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            )
            .into());
        }
        Ok(Response::new(pb::CompactionResponse {
            header: self.header(&caller.account, revision),
        }))
    }
}
