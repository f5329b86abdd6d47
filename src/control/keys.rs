//! Keys: put, range, delete and txn in an account's key space.

use tenure_events::{AccountId, Bytes, KeyspaceEvent, LeaseId, Metadata, StreamId};

use crate::actors::keyspace::{self, Deleted, PutDone, RangeDone, TxnDone};
use crate::actors::lease;
use crate::actors::{Activation, Cmd, CommandError};
use crate::domain::keyspace::txn::{OpOutcome, Txn, TxnOutcome};
use crate::domain::keyspace::{KeyRange, Keyspace, LeaseUpdate, RangeOptions};
use crate::store::StoreError;

use super::Control;

/// Events read from the log at a time when folding a key space's history.
const HISTORY_PAGE: usize = 4096;

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
                    key: key.clone(),
                    value: value.clone(),
                    prev_kv,
                    cmd: cmd.clone(),
                    reply,
                };
                hub.leases.route(hub, &lease_key, Activation::Projected, msg)
            };
            return self.call(route).await;
        }
        let route = |reply| {
            let msg = keyspace::Put {
                key: key.clone(),
                value: value.clone(),
                lease,
                prev_kv,
                cmd: cmd.clone(),
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
                keyspace::Range {
                    range: range.clone(),
                    options: options.clone(),
                    reply,
                },
            )
        };
        self.call(route).await
    }

    /// Reads a range of keys as it was at `revision`, as etcd's Range does
    /// for a revision it has not compacted (tenure compacts nothing): the
    /// keys, `count` and `more` are those of the key space with every change
    /// up to `revision` applied and none after. `revision` 0 (or less) or the
    /// current revision reads the current keys, like [`Control::range`].
    ///
    /// The answer's `revision` is always the current one, as in etcd's reply
    /// header; a `revision` above it is the caller's to refuse (etcd's
    /// "required revision is a future revision"), and it gets the current
    /// keys here.
    pub async fn range_at(
        &self,
        account: &AccountId,
        range: KeyRange,
        options: RangeOptions,
        revision: i64,
    ) -> Result<RangeDone, CommandError> {
        if revision <= 0 {
            return self.range(account, range, options).await;
        }
        // Every change up to the published revision is durable, so a
        // revision below it is in the log.
        let published = self.revision(account);
        let current = if revision < published {
            published
        } else {
            // At or past what is published: the key space actor knows
            // whether changes since (or its loading) moved it past `revision`.
            let done = self.range(account, range.clone(), options.clone()).await?;
            if revision >= done.revision {
                return Ok(done);
            }
            done.revision
        };
        let past = self.keyspace_at(account, revision).await?;
        Ok(RangeDone {
            revision: current,
            result: past.range_with(&range, &options),
        })
    }

    /// The account's key space as it was at `revision`, folded from its
    /// stream, which is read in pages up to the first change past
    /// `revision`. The caller knows `revision` is durable.
    async fn keyspace_at(&self, account: &AccountId, revision: i64) -> Result<Keyspace, CommandError> {
        let _permit = self.enter().await?;
        let stream = StreamId::keyspace(account);
        let mut state = Keyspace::default();
        let mut next_version = 1;
        loop {
            let page = self.hub.store.read_stream(&stream, next_version, HISTORY_PAGE).await?;
            for recorded in &page {
                let event = recorded.decode_as::<KeyspaceEvent>().map_err(|e| {
                    StoreError::Corrupt(format!("event at position {} does not decode: {e}", recorded.position))
                })?;
                if let Some(event) = event {
                    if state.evolve_up_to(revision, &event, recorded.time).is_break() {
                        return Ok(state);
                    }
                }
                next_version = recorded.version + 1;
            }
            if page.len() < HISTORY_PAGE {
                return Ok(state);
            }
        }
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
                    range: range.clone(),
                    prev_kv,
                    cmd: cmd.clone(),
                    reply,
                },
            )
        })
        .await
    }

    /// etcd's Txn, atomic on the account's key space. A txn whose puts
    /// name leases goes through those leases' actors, which tell the key
    /// space which of them are live and keep them so until it is done
    /// (see `actors::lease`). Ranges in it at a revision before the txn's
    /// are read from the log after.
    pub async fn txn(&self, meta: Metadata, txn: Txn) -> Result<TxnDone, CommandError> {
        txn.check_keys()?;
        let leases: Vec<LeaseId> = txn.leases().into_iter().collect();
        let hub = &self.hub;
        let account = meta.account.clone();
        let cmd = Cmd::new(meta);
        let mut done: TxnDone = match leases.first() {
            Some(&first) => {
                let lease_key = Self::lease_key(&account, first);
                self.call(|reply| {
                    let msg = lease::TxnWithLeases {
                        txn: txn.clone(),
                        leases: leases.clone(),
                        live: Vec::new(),
                        cmd: cmd.clone(),
                        reply,
                    };
                    hub.leases.route(hub, &lease_key, Activation::Projected, msg)
                })
                .await?
            }
            None => {
                self.call(|reply| {
                    let msg = keyspace::Txn {
                        txn: txn.clone(),
                        live_leases: Vec::new(),
                        cmd: cmd.clone(),
                        reply,
                    };
                    hub.keyspaces.route(hub, &account, Activation::Load, msg)
                })
                .await?
            }
        };
        self.read_past_ranges(&account, &mut done.outcome).await?;
        Ok(done)
    }

    /// Answers the ranges of a txn at revisions before it from the log.
    async fn read_past_ranges(&self, account: &AccountId, outcome: &mut TxnOutcome) -> Result<(), CommandError> {
        let mut pending = vec![outcome];
        while let Some(outcome) = pending.pop() {
            for response in &mut outcome.responses {
                match response {
                    OpOutcome::RangeAt {
                        revision,
                        range,
                        options,
                        at,
                    } => {
                        let past = self.keyspace_at(account, *at).await?;
                        *response = OpOutcome::Range {
                            revision: *revision,
                            result: past.range_with(range, options),
                        };
                    }
                    OpOutcome::Txn(inner) => pending.push(inner),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The account's key space revision (etcd's header revision): at least
    /// the revision of every change acknowledged before this call.
    pub fn revision(&self, account: &AccountId) -> i64 {
        self.hub.revisions.get(account)
    }
}
