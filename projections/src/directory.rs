use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use tenure_events::{AccountEvent, AccountId, Limits, RecordedEvent};

use crate::snapshot::{invalid, ordered_map, AccountSnapshot, RestoreError, Time};
use crate::Projection;

/// The accounts, their tokens, keys and limits: what authentication and
/// the admin API read. Tokens are indexed by their SHA-256, the only form
/// the log holds them in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directory {
    checkpoint: u64,
    accounts: BTreeMap<AccountId, AccountView>,
    /// Token SHA-256 (lowercase hex) → (account, token ID).
    by_hash: HashMap<String, (AccountId, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountView {
    pub name: AccountId,
    pub created_at: DateTime<Utc>,
    pub limits: Limits,
    /// The ed25519 public key in use (standard base64), and since when.
    pub public_key: Option<(String, DateTime<Utc>)>,
    /// Live tokens by ID.
    pub tokens: BTreeMap<String, TokenView>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenView {
    pub id: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    sha256: String,
}

impl Directory {
    pub fn account(&self, name: &AccountId) -> Option<&AccountView> {
        self.accounts.get(name)
    }

    /// Every account, by name.
    pub fn accounts(&self) -> impl Iterator<Item = &AccountView> {
        self.accounts.values()
    }

    /// The account and token ID of a live token, by the token's SHA-256.
    pub fn token(&self, sha256_hex: &str) -> Option<(&AccountId, &str)> {
        self.by_hash.get(sha256_hex).map(|(account, id)| (account, id.as_str()))
    }

    /// The account's limits; an account that was never created (the local
    /// mode's `default`) has none.
    pub fn limits(&self, name: &AccountId) -> Limits {
        self.accounts.get(name).map_or(Limits::UNLIMITED, |a| a.limits)
    }

    pub fn snapshot(&self) -> Vec<AccountSnapshot> {
        self.accounts
            .values()
            .map(|a| AccountSnapshot {
                name: a.name.clone(),
                created_at: a.created_at.into(),
                limits: a.limits,
                public_key: a.public_key.as_ref().map(|(key, at)| (key.clone(), Time::from(*at))),
                tokens: a
                    .tokens
                    .values()
                    .map(|t| {
                        (
                            t.id.clone(),
                            t.label.clone(),
                            Time::from(t.created_at),
                            t.sha256.clone(),
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    pub fn restore(accounts: Vec<AccountSnapshot>, checkpoint: u64) -> Result<Directory, RestoreError> {
        let mut directory = Directory {
            checkpoint,
            ..Directory::default()
        };
        let mut entries = Vec::with_capacity(accounts.len());
        for a in accounts {
            let mut tokens = Vec::with_capacity(a.tokens.len());
            for (id, label, created_at, sha256) in a.tokens {
                if directory
                    .by_hash
                    .insert(sha256.clone(), (a.name.clone(), id.clone()))
                    .is_some()
                {
                    return invalid("two tokens have the same hash");
                }
                let token = TokenView {
                    id: id.clone(),
                    label,
                    created_at: created_at.to_datetime()?,
                    sha256,
                };
                tokens.push((id, token));
            }
            let public_key = match a.public_key {
                Some((key, at)) => Some((key, at.to_datetime()?)),
                None => None,
            };
            let view = AccountView {
                name: a.name.clone(),
                created_at: a.created_at.to_datetime()?,
                limits: a.limits,
                public_key,
                tokens: ordered_map(tokens, "an account's tokens")?,
            };
            entries.push((a.name, view));
        }
        directory.accounts = ordered_map(entries, "accounts")?;
        Ok(directory)
    }
}

impl Projection for Directory {
    const NAME: &'static str = "directory";

    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn apply(&mut self, event: &RecordedEvent) {
        if !crate::advance(&mut self.checkpoint, event) || event.stream.category() != "account" {
            return;
        }
        let account_event = match event.decode_as::<AccountEvent>() {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(position = event.position, %err, "directory skips an event it cannot decode");
                return;
            }
        };
        let name = &event.account;
        if let AccountEvent::Created(created) = &account_event {
            self.accounts.entry(name.clone()).or_insert_with(|| AccountView {
                name: name.clone(),
                created_at: event.time,
                limits: created.limits,
                public_key: None,
                tokens: BTreeMap::new(),
            });
            return;
        }
        let Some(account) = self.accounts.get_mut(name) else {
            return;
        };
        match account_event {
            AccountEvent::Created(_) => {}
            AccountEvent::TokenCreated(e) => {
                self.by_hash.insert(e.sha256.clone(), (name.clone(), e.token.clone()));
                account.tokens.insert(
                    e.token.clone(),
                    TokenView {
                        id: e.token,
                        label: e.label,
                        created_at: event.time,
                        sha256: e.sha256,
                    },
                );
            }
            AccountEvent::TokenRevoked(e) => {
                if let Some(token) = account.tokens.remove(&e.token) {
                    self.by_hash.remove(&token.sha256);
                }
            }
            AccountEvent::KeyRegistered(e) => account.public_key = Some((e.public_key, event.time)),
            AccountEvent::LimitsSet(e) => account.limits = e.limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_events::{
        AccountCreated, AccountLimitsSet, AccountTokenCreated, AccountTokenRevoked, EventSet, NewEvent, StreamId,
    };

    fn recorded(position: u64, account: &str, event: AccountEvent) -> RecordedEvent {
        let account: AccountId = account.parse().expect("valid name");
        let time = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let new = NewEvent::new(&event, &tenure_events::Metadata::new(account.clone()), time);
        assert_eq!(new.event_type, event.event_type());
        RecordedEvent::from_new(new, StreamId::account(&account), position, position)
    }

    #[test]
    fn tokens_authenticate_until_revoked_and_limits_follow_the_log() {
        let mut dir = Directory::default();
        let alice_limits = Limits {
            max_leases: 2,
            ..Limits::UNLIMITED
        };
        dir.apply(&recorded(
            1,
            "alice",
            AccountCreated {
                name: "alice".parse().expect("valid"),
                limits: alice_limits,
            }
            .into(),
        ));
        dir.apply(&recorded(
            2,
            "alice",
            AccountTokenCreated {
                token: "t1".into(),
                sha256: "h1".into(),
                label: None,
            }
            .into(),
        ));
        let alice: AccountId = "alice".parse().expect("valid");
        assert_eq!(dir.token("h1"), Some((&alice, "t1")));
        assert_eq!(dir.limits(&alice), alice_limits);
        assert_eq!(dir.limits(&AccountId::default_account()), Limits::UNLIMITED);

        dir.apply(&recorded(3, "alice", AccountTokenRevoked { token: "t1".into() }.into()));
        assert_eq!(dir.token("h1"), None);
        assert!(dir.account(&alice).is_some_and(|a| a.tokens.is_empty()));

        dir.apply(&recorded(
            4,
            "alice",
            AccountLimitsSet {
                limits: Limits::UNLIMITED,
            }
            .into(),
        ));
        assert_eq!(dir.limits(&alice), Limits::UNLIMITED);

        // Replaying what was applied changes nothing.
        let before = dir.clone();
        dir.apply(&recorded(2, "alice", AccountTokenRevoked { token: "x".into() }.into()));
        assert_eq!(dir, before);
    }
}
