//! Keys: put, range and delete in an account's key space.

use tenure_events::{AccountId, Bytes, Metadata};

use crate::actors::keyspace::{self, Deleted, PutDone, RangeDone};
use crate::actors::lease;
use crate::actors::{Activation, Cmd, CommandError};
use crate::domain::keyspace::{KeyRange, LeaseUpdate, RangeOptions};

use super::Control;

impl Control {
    /// Puts a key. `value: None` keeps its value; `lease` attaches it to a
    /// lease (which must be live), detaches it, or keeps its lease.
    pub async fn put(
        &self,
        meta: Metadata,
        key: Bytes,
        value: Option<Bytes>,
        lease: LeaseUpdate,
        prev_kv: bool,
    ) -> Result<PutDone, CommandError> {
        let hub = &self.hub;
        let account = meta.account.clone();
        let cmd = Cmd::new(meta);
        if let LeaseUpdate::Set(Some(id)) = lease {
            // Through the lease actor, which checks the lease is live.
            let lease_key = Self::lease_key(&account, id);
            let route = |reply| {
                let msg = lease::PutWithLease {
                    key,
                    value,
                    prev_kv,
                    cmd,
                    reply,
                };
                hub.leases.route(hub, &lease_key, Activation::Load, msg)
            };
            return self.call(route).await;
        }
        let route = |reply| {
            let msg = keyspace::Put {
                key,
                value,
                lease,
                prev_kv,
                cmd,
                reply,
            };
            hub.keyspaces.route(hub, &account, Activation::Load, msg)
        };
        self.call(route).await
    }

    /// Reads a range of keys with etcd's options.
    pub async fn range(
        &self,
        account: &AccountId,
        range: KeyRange,
        options: RangeOptions,
    ) -> Result<RangeDone, CommandError> {
        let hub = &self.hub;
        let route = |reply| {
            hub.keyspaces.route(
                hub,
                account,
                Activation::Load,
                keyspace::Range { range, options, reply },
            )
        };
        self.call(route).await
    }

    pub async fn delete_range(&self, meta: Metadata, range: KeyRange, prev_kv: bool) -> Result<Deleted, CommandError> {
        let hub = &self.hub;
        let account = meta.account.clone();
        let cmd = Cmd::new(meta);
        self.call(|reply| {
            hub.keyspaces.route(
                hub,
                &account,
                Activation::Load,
                keyspace::DeleteRange {
                    range,
                    prev_kv,
                    cmd,
                    reply,
                },
            )
        })
        .await
    }

    /// The account's key space revision (etcd's header revision): at least
    /// the revision of every change acknowledged before this call.
    pub fn revision(&self, account: &AccountId) -> i64 {
        self.hub.revisions.get(account)
    }
}
