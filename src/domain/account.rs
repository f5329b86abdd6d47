//! An account (tenant): created by the admin, holding API tokens, an
//! optional ed25519 public key, and limits. Only what decisions need is kept
//! here; the directory projection is the read model (names, labels, hashes).

use std::collections::BTreeSet;

use base64::Engine;
use chrono::{DateTime, Utc};
use tenure_events::{
    AccountCreated, AccountEvent, AccountId, AccountKeyRegistered, AccountLimitsSet, AccountTokenCreated,
    AccountTokenRevoked, Limits, UNLIMITED,
};

use super::Aggregate;

/// Live tokens an account may hold at once.
pub const MAX_TOKENS_PER_ACCOUNT: usize = 100;

/// The longest token label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Account {
    #[default]
    Absent,
    Active {
        limits: Limits,
        /// IDs of the live (not revoked) tokens.
        tokens: BTreeSet<String>,
        public_key: Option<String>,
    },
}

/// A change to some of an account's limits; `None` leaves a limit as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsUpdate {
    pub max_leases: Option<i64>,
    pub max_keys: Option<i64>,
    pub max_reserved_shares: Option<i64>,
    pub max_services: Option<i64>,
}

impl LimitsUpdate {
    /// `limits` with this update applied, or the first limit that is not a
    /// count or -1.
    pub fn apply_to(&self, limits: Limits) -> Result<Limits, AccountRejection> {
        let pick = |field: &'static str, new: Option<i64>, old: i64| match new {
            Some(value) if value < UNLIMITED => Err(AccountRejection::InvalidLimit { field, value }),
            Some(value) => Ok(value),
            None => Ok(old),
        };
        Ok(Limits {
            max_leases: pick("max_leases", self.max_leases, limits.max_leases)?,
            max_keys: pick("max_keys", self.max_keys, limits.max_keys)?,
            max_reserved_shares: pick(
                "max_reserved_shares",
                self.max_reserved_shares,
                limits.max_reserved_shares,
            )?,
            max_services: pick("max_services", self.max_services, limits.max_services)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountCommand {
    Create {
        name: AccountId,
        limits: LimitsUpdate,
    },
    /// Record a token the caller generated; only its hash comes here.
    IssueToken {
        id: String,
        sha256: String,
        label: Option<String>,
    },
    RevokeToken {
        id: String,
    },
    /// Register or rotate the account's ed25519 public key (base64).
    RegisterKey {
        public_key: String,
    },
    SetLimits(LimitsUpdate),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountRejection {
    #[error("account '{0}' already exists")]
    AlreadyExists(AccountId),
    #[error("account not found")]
    NotFound,
    #[error("token '{0}' not found")]
    TokenNotFound(String),
    #[error("token ID '{0}' is taken")]
    TokenIdTaken(String),
    #[error("the account already holds the maximum of {max} tokens; revoke one first")]
    TooManyTokens { max: usize },
    #[error("{field} must be -1 (unlimited) or a count of 0 or more, got {value}")]
    InvalidLimit { field: &'static str, value: i64 },
    #[error("label: {0}")]
    InvalidLabel(String),
    #[error("public_key: {0}")]
    InvalidPublicKey(String),
}

/// Checks an ed25519 public key given as standard base64 of its 32 bytes.
pub fn check_public_key(public_key: &str) -> Result<(), AccountRejection> {
    let bad = |why: &str| AccountRejection::InvalidPublicKey(why.to_owned());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(public_key.trim())
        .map_err(|_| bad("must be the key's 32 bytes in standard base64"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad("an ed25519 public key is 32 bytes"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a valid ed25519 point"))?;
    if key.is_weak() {
        return Err(bad("a weak (small-order) key cannot verify signatures"));
    }
    Ok(())
}

fn check_label(label: &Option<String>) -> Result<(), AccountRejection> {
    let Some(label) = label else { return Ok(()) };
    if label.is_empty() || label.chars().count() > MAX_LABEL_CHARS {
        return Err(AccountRejection::InvalidLabel(format!(
            "must be 1 to {MAX_LABEL_CHARS} characters"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(AccountRejection::InvalidLabel(
            "must not hold control characters".into(),
        ));
    }
    Ok(())
}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Rejection = AccountRejection;

    fn decide(&self, command: AccountCommand, _now: DateTime<Utc>) -> Result<Vec<AccountEvent>, AccountRejection> {
        let Account::Active {
            limits,
            tokens,
            public_key,
        } = self
        else {
            return match command {
                AccountCommand::Create { name, limits } => {
                    let limits = limits.apply_to(Limits::UNLIMITED)?;
                    Ok(vec![AccountCreated { name, limits }.into()])
                }
                _ => Err(AccountRejection::NotFound),
            };
        };
        match command {
            AccountCommand::Create { name, .. } => Err(AccountRejection::AlreadyExists(name)),
            AccountCommand::IssueToken { id, sha256, label } => {
                check_label(&label)?;
                if tokens.contains(&id) {
                    return Err(AccountRejection::TokenIdTaken(id));
                }
                if tokens.len() >= MAX_TOKENS_PER_ACCOUNT {
                    return Err(AccountRejection::TooManyTokens {
                        max: MAX_TOKENS_PER_ACCOUNT,
                    });
                }
                Ok(vec![AccountTokenCreated {
                    token: id,
                    sha256,
                    label,
                }
                .into()])
            }
            AccountCommand::RevokeToken { id } => {
                if !tokens.contains(&id) {
                    return Err(AccountRejection::TokenNotFound(id));
                }
                Ok(vec![AccountTokenRevoked { token: id }.into()])
            }
            AccountCommand::RegisterKey { public_key: new } => {
                let new = new.trim().to_owned();
                check_public_key(&new)?;
                if public_key.as_ref() == Some(&new) {
                    return Ok(vec![]);
                }
                Ok(vec![AccountKeyRegistered { public_key: new }.into()])
            }
            AccountCommand::SetLimits(update) => {
                let new = update.apply_to(*limits)?;
                if new == *limits {
                    return Ok(vec![]);
                }
                Ok(vec![AccountLimitsSet { limits: new }.into()])
            }
        }
    }

    fn evolve(&mut self, event: &AccountEvent, _at: DateTime<Utc>) {
        match (self, event) {
            (this @ Account::Absent, AccountEvent::Created(e)) => {
                *this = Account::Active {
                    limits: e.limits,
                    tokens: BTreeSet::new(),
                    public_key: None,
                };
            }
            (Account::Active { tokens, .. }, AccountEvent::TokenCreated(e)) => {
                tokens.insert(e.token.clone());
            }
            (Account::Active { tokens, .. }, AccountEvent::TokenRevoked(e)) => {
                tokens.remove(&e.token);
            }
            (Account::Active { public_key, .. }, AccountEvent::KeyRegistered(e)) => {
                *public_key = Some(e.public_key.clone());
            }
            (Account::Active { limits, .. }, AccountEvent::LimitsSet(e)) => *limits = e.limits,
            // Events out of place (a second creation) change nothing.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;

    fn alice() -> AccountId {
        "alice".parse().expect("valid name")
    }

    fn created() -> AccountEvent {
        AccountCreated {
            name: alice(),
            limits: Limits::UNLIMITED,
        }
        .into()
    }

    fn issued(id: &str) -> AccountEvent {
        AccountTokenCreated {
            token: id.into(),
            sha256: "ab".repeat(32),
            label: None,
        }
        .into()
    }

    fn issue(id: &str, label: Option<&str>) -> AccountCommand {
        AccountCommand::IssueToken {
            id: id.into(),
            sha256: "ab".repeat(32),
            label: label.map(Into::into),
        }
    }

    /// A valid ed25519 public key: the one of RFC 8032's first test vector.
    const PUBLIC_KEY: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    #[test]
    fn an_account_is_created_once_with_unlimited_defaults() {
        let partial = LimitsUpdate {
            max_leases: Some(3),
            ..LimitsUpdate::default()
        };
        given::<Account>([])
            .when(AccountCommand::Create {
                name: alice(),
                limits: partial,
            })
            .then([AccountCreated {
                name: alice(),
                limits: Limits {
                    max_leases: 3,
                    ..Limits::UNLIMITED
                },
            }
            .into()]);
        given::<Account>([created()])
            .when(AccountCommand::Create {
                name: alice(),
                limits: LimitsUpdate::default(),
            })
            .then_rejects(AccountRejection::AlreadyExists(alice()));
    }

    #[test]
    fn commands_on_a_missing_account_are_refused() {
        given::<Account>([])
            .when(issue("aaaaaaaa", None))
            .then_rejects(AccountRejection::NotFound);
        given::<Account>([])
            .when(AccountCommand::SetLimits(LimitsUpdate::default()))
            .then_rejects(AccountRejection::NotFound);
    }

    #[test]
    fn tokens_are_issued_and_revoked_once() {
        given::<Account>([created()])
            .when(issue("aaaaaaaa", Some("ci")))
            .then([AccountTokenCreated {
                token: "aaaaaaaa".into(),
                sha256: "ab".repeat(32),
                label: Some("ci".into()),
            }
            .into()]);
        given::<Account>([created(), issued("aaaaaaaa")])
            .when(issue("aaaaaaaa", None))
            .then_rejects(AccountRejection::TokenIdTaken("aaaaaaaa".into()));
        given::<Account>([created(), issued("aaaaaaaa")])
            .when(AccountCommand::RevokeToken { id: "aaaaaaaa".into() })
            .then([AccountTokenRevoked {
                token: "aaaaaaaa".into(),
            }
            .into()]);
        given::<Account>([
            created(),
            issued("aaaaaaaa"),
            AccountTokenRevoked {
                token: "aaaaaaaa".into(),
            }
            .into(),
        ])
        .when(AccountCommand::RevokeToken { id: "aaaaaaaa".into() })
        .then_rejects(AccountRejection::TokenNotFound("aaaaaaaa".into()));
    }

    #[test]
    fn token_labels_and_counts_are_bounded() {
        given::<Account>([created()])
            .when(issue("aaaaaaaa", Some("")))
            .then_rejects(AccountRejection::InvalidLabel("must be 1 to 64 characters".into()));
        given::<Account>([created()])
            .when(issue("aaaaaaaa", Some("a\nb")))
            .then_rejects(AccountRejection::InvalidLabel(
                "must not hold control characters".into(),
            ));
        let mut events = vec![created()];
        events.extend((0..MAX_TOKENS_PER_ACCOUNT).map(|i| issued(&format!("{i:08}"))));
        given::<Account>(events)
            .when(issue("zzzzzzzz", None))
            .then_rejects(AccountRejection::TooManyTokens {
                max: MAX_TOKENS_PER_ACCOUNT,
            });
    }

    #[test]
    fn limits_change_only_what_is_given_and_refuse_below_minus_one() {
        let update = LimitsUpdate {
            max_keys: Some(0),
            max_services: Some(-1),
            ..LimitsUpdate::default()
        };
        given::<Account>([created()])
            .when(AccountCommand::SetLimits(update))
            .then([AccountLimitsSet {
                limits: Limits {
                    max_keys: 0,
                    ..Limits::UNLIMITED
                },
            }
            .into()]);
        // Setting what is already there records nothing.
        given::<Account>([created()])
            .when(AccountCommand::SetLimits(LimitsUpdate {
                max_leases: Some(-1),
                ..LimitsUpdate::default()
            }))
            .then([]);
        given::<Account>([created()])
            .when(AccountCommand::SetLimits(LimitsUpdate {
                max_reserved_shares: Some(-2),
                ..LimitsUpdate::default()
            }))
            .then_rejects(AccountRejection::InvalidLimit {
                field: "max_reserved_shares",
                value: -2,
            });
    }

    #[test]
    fn only_valid_ed25519_keys_are_registered_and_rotation_records_the_new_one() {
        given::<Account>([created()])
            .when(AccountCommand::RegisterKey {
                public_key: PUBLIC_KEY.into(),
            })
            .then([AccountKeyRegistered {
                public_key: PUBLIC_KEY.into(),
            }
            .into()]);
        let registered: AccountEvent = AccountKeyRegistered {
            public_key: PUBLIC_KEY.into(),
        }
        .into();
        given::<Account>([created(), registered.clone()])
            .when(AccountCommand::RegisterKey {
                public_key: PUBLIC_KEY.into(),
            })
            .then([]);
        let other = base64::engine::general_purpose::STANDARD.encode(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .to_bytes(),
        );
        given::<Account>([created(), registered])
            .when(AccountCommand::RegisterKey {
                public_key: other.clone(),
            })
            .then([AccountKeyRegistered { public_key: other }.into()]);
        let invalid = |key: &str, why: &str| {
            given::<Account>([created()])
                .when(AccountCommand::RegisterKey { public_key: key.into() })
                .then_rejects(AccountRejection::InvalidPublicKey(why.into()));
        };
        invalid("not base64!", "must be the key's 32 bytes in standard base64");
        invalid("AAAA", "an ed25519 public key is 32 bytes");
        // The identity point has small order.
        let identity = base64::engine::general_purpose::STANDARD.encode({
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        });
        invalid(&identity, "a weak (small-order) key cannot verify signatures");
    }
}
