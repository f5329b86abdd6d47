use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tenure_events::{AccountId, BackendMode, LeaseId, RecordedEvent, ShareEvent, ShareMode};
use uuid::Uuid;

use crate::snapshot::{lease_id, ordered_map, RestoreError, ShareSnapshot, Time};
use crate::Projection;

/// The reserved shares: what `reservation list|get` show, what the
/// `max_reserved_shares` limit counts, and (later) what the routing table
/// serves. Released shares leave it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Shares {
    checkpoint: u64,
    shares: BTreeMap<String, ShareView>,
    by_owner: BTreeMap<AccountId, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShareView {
    pub token: String,
    pub owner: AccountId,
    pub mode: ShareMode,
    pub backend_mode: BackendMode,
    pub target: String,
    pub unique_name: bool,
    pub reserved_at: DateTime<Utc>,
    /// The current backend session, if one started and was not stopped or
    /// replaced. It serves only while its lease is live.
    pub session: Option<SessionView>,
    /// Access grants by ID: (grantee, SHA-256 of the grant's secret, when).
    pub grants: BTreeMap<String, GrantView>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionView {
    pub id: Uuid,
    pub lease: LeaseId,
    pub started_at: DateTime<Utc>,
    /// A web share's: where its backend serves the files.
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrantView {
    pub account: AccountId,
    pub sha256: String,
    pub granted_at: DateTime<Utc>,
}

impl Shares {
    pub fn get(&self, token: &str) -> Option<&ShareView> {
        self.shares.get(token)
    }

    /// Every reserved share, by token.
    pub fn all(&self) -> impl Iterator<Item = &ShareView> {
        self.shares.values()
    }

    /// The account's reserved shares, by token.
    pub fn owned_by<'a>(&'a self, owner: &AccountId) -> impl Iterator<Item = &'a ShareView> + 'a {
        self.by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|token| self.shares.get(token))
    }

    /// How many shares the account holds.
    pub fn count(&self, owner: &AccountId) -> usize {
        self.by_owner.get(owner).map_or(0, BTreeSet::len)
    }

    pub fn snapshot(&self) -> Vec<ShareSnapshot> {
        self.shares
            .values()
            .map(|s| ShareSnapshot {
                token: s.token.clone(),
                owner: s.owner.clone(),
                mode: s.mode,
                backend_mode: s.backend_mode,
                target: s.target.clone(),
                unique_name: s.unique_name,
                reserved_at: s.reserved_at.into(),
                session: s
                    .session
                    .as_ref()
                    .map(|x| (x.id, x.lease.get(), Time::from(x.started_at), x.address.clone())),
                grants: s
                    .grants
                    .iter()
                    .map(|(id, g)| {
                        (
                            id.clone(),
                            g.account.clone(),
                            g.sha256.clone(),
                            Time::from(g.granted_at),
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    pub fn restore(shares: Vec<ShareSnapshot>, checkpoint: u64) -> Result<Shares, RestoreError> {
        let mut by_owner: BTreeMap<AccountId, BTreeSet<String>> = BTreeMap::new();
        let mut entries = Vec::with_capacity(shares.len());
        for s in shares {
            let session = match s.session {
                Some((id, lease, started_at, address)) => Some(SessionView {
                    id,
                    lease: lease_id(lease)?,
                    started_at: started_at.to_datetime()?,
                    address,
                }),
                None => None,
            };
            let mut grants = Vec::with_capacity(s.grants.len());
            for (id, account, sha256, granted_at) in s.grants {
                let grant = GrantView {
                    account,
                    sha256,
                    granted_at: granted_at.to_datetime()?,
                };
                grants.push((id, grant));
            }
            by_owner.entry(s.owner.clone()).or_default().insert(s.token.clone());
            let view = ShareView {
                token: s.token.clone(),
                owner: s.owner,
                mode: s.mode,
                backend_mode: s.backend_mode,
                target: s.target,
                unique_name: s.unique_name,
                reserved_at: s.reserved_at.to_datetime()?,
                session,
                grants: ordered_map(grants, "a share's grants")?,
            };
            entries.push((s.token, view));
        }
        Ok(Shares {
            checkpoint,
            shares: ordered_map(entries, "shares")?,
            by_owner,
        })
    }
}

impl Projection for Shares {
    const NAME: &'static str = "shares";

    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn apply(&mut self, event: &RecordedEvent) {
        if !crate::advance(&mut self.checkpoint, event) || event.stream.category() != "share" {
            return;
        }
        let share_event = match event.decode_as::<ShareEvent>() {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(position = event.position, %err, "shares projection skips an event it cannot decode");
                return;
            }
        };
        let token = event.stream.as_str().trim_start_matches("share/");
        match share_event {
            ShareEvent::Reserved(e) => {
                self.by_owner
                    .entry(e.owner.clone())
                    .or_default()
                    .insert(e.token.clone());
                self.shares.insert(
                    e.token.clone(),
                    ShareView {
                        token: e.token,
                        owner: e.owner,
                        mode: e.mode,
                        backend_mode: e.backend_mode,
                        target: e.target,
                        unique_name: e.unique_name,
                        reserved_at: event.time,
                        session: None,
                        grants: BTreeMap::new(),
                    },
                );
            }
            ShareEvent::Released(_) => {
                if let Some(share) = self.shares.remove(token) {
                    if let Some(owned) = self.by_owner.get_mut(&share.owner) {
                        owned.remove(token);
                        if owned.is_empty() {
                            self.by_owner.remove(&share.owner);
                        }
                    }
                }
            }
            ShareEvent::SessionStarted(e) => {
                if let Some(share) = self.shares.get_mut(token) {
                    share.session = Some(SessionView {
                        id: e.session,
                        lease: e.lease,
                        started_at: event.time,
                        address: e.address,
                    });
                }
            }
            ShareEvent::SessionEnded(e) => {
                if let Some(share) = self.shares.get_mut(token) {
                    if share.session.as_ref().is_some_and(|s| s.id == e.session) {
                        share.session = None;
                    }
                }
            }
            ShareEvent::AccessGranted(e) => {
                if let Some(share) = self.shares.get_mut(token) {
                    share.grants.insert(
                        e.grant,
                        GrantView {
                            account: e.account,
                            sha256: e.sha256,
                            granted_at: event.time,
                        },
                    );
                }
            }
        }
    }
}
