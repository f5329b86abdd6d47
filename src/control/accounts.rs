//! Accounts: creation, tokens, limits, public keys, usage.

use chrono::{DateTime, Utc};
use tenure_events::{AccountId, Bytes, Metadata};
use tenure_projections::AccountView;
use uuid::Uuid;

use crate::actors::{account, Activation, Cmd, CommandError};
use crate::domain::account::{AccountCommand, AccountRejection, LimitsUpdate};
use crate::domain::keyspace::{KeyRange, RangeOptions};

use super::{Control, FRESH_ID_ATTEMPTS};

/// A token just issued: the only time the token itself is seen.
#[derive(Clone)]
pub struct IssuedToken {
    pub id: String,
    pub token: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What an account has in use, against its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub leases: usize,
    pub keys: usize,
}

impl Control {
    /// Carries out a command on an account; once it is durable, waits for
    /// the directory to apply it, so authentication and limits see it.
    async fn account_command(
        &self,
        name: &AccountId,
        request_id: Option<Uuid>,
        command: AccountCommand,
    ) -> Result<usize, CommandError> {
        let cmd = Cmd::new(Metadata {
            account: name.clone(),
            request_id,
            causation_id: None,
        });
        self.entity_command(&self.hub.accounts, name, Activation::Load, |reply| account::Execute {
            command: command.clone(),
            cmd: cmd.clone(),
            reply,
        })
        .await
    }

    /// Creates an account (admin).
    pub async fn create_account(
        &self,
        request_id: Option<Uuid>,
        name: AccountId,
        limits: LimitsUpdate,
    ) -> Result<AccountView, CommandError> {
        let command = AccountCommand::Create {
            name: name.clone(),
            limits,
        };
        self.account_command(&name, request_id, command).await?;
        self.account(&name).await
    }

    /// Issues a new API token to the account (admin). The token is in the
    /// answer and nowhere else: the log keeps its SHA-256.
    pub async fn issue_token(
        &self,
        request_id: Option<Uuid>,
        name: &AccountId,
        label: Option<String>,
    ) -> Result<IssuedToken, CommandError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (id, token) = crate::auth::new_token().map_err(|e| CommandError::Unavailable(e.to_string()))?;
            let command = AccountCommand::IssueToken {
                id: id.clone(),
                sha256: crate::auth::sha256_hex(&token),
                label: label.clone(),
            };
            match self.account_command(name, request_id, command).await {
                Err(CommandError::Account(AccountRejection::TokenIdTaken(_))) if attempt < FRESH_ID_ATTEMPTS => {
                    continue
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    let view = self.account(name).await?;
                    let created_at = view.tokens.get(&id).map(|t| t.created_at).unwrap_or_else(Utc::now);
                    return Ok(IssuedToken {
                        id,
                        token,
                        label,
                        created_at,
                    });
                }
            }
        }
    }

    /// Revokes one of the account's tokens (admin): it authenticates
    /// nothing once this answers.
    pub async fn revoke_token(
        &self,
        request_id: Option<Uuid>,
        name: &AccountId,
        id: String,
    ) -> Result<(), CommandError> {
        self.account_command(name, request_id, AccountCommand::RevokeToken { id })
            .await
            .map(drop)
    }

    /// Changes some of the account's limits (admin).
    pub async fn set_limits(
        &self,
        request_id: Option<Uuid>,
        name: &AccountId,
        update: LimitsUpdate,
    ) -> Result<AccountView, CommandError> {
        self.account_command(name, request_id, AccountCommand::SetLimits(update))
            .await?;
        self.account(name).await
    }

    /// Registers or rotates the account's ed25519 public key (the account itself).
    pub async fn register_key(
        &self,
        request_id: Option<Uuid>,
        name: &AccountId,
        public_key: String,
    ) -> Result<AccountView, CommandError> {
        let command = AccountCommand::RegisterKey { public_key };
        match self.account_command(name, request_id, command.clone()).await {
            // Local mode's `default` account exists without being created:
            // create it on its first registration.
            Err(CommandError::Account(AccountRejection::NotFound)) if name.as_str() == AccountId::DEFAULT => {
                let create = AccountCommand::Create {
                    name: name.clone(),
                    limits: LimitsUpdate::default(),
                };
                self.account_command(name, request_id, create).await?;
                self.account_command(name, request_id, command).await?;
            }
            other => {
                other?;
            }
        }
        self.account(name).await
    }

    /// One account as the directory shows it, including every change
    /// acknowledged before this call.
    pub async fn account(&self, name: &AccountId) -> Result<AccountView, CommandError> {
        let found = self.read(|p| p.directory.read().account(name).cloned()).await;
        found.ok_or(CommandError::Account(AccountRejection::NotFound))
    }

    /// Every account, by name.
    pub async fn accounts(&self) -> Vec<AccountView> {
        self.read(|p| p.directory.read().accounts().cloned().collect()).await
    }

    /// What the account has in use.
    pub async fn usage(&self, account: &AccountId) -> Result<Usage, CommandError> {
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let leases = projections.expiry.lock().count(account);
        let range = KeyRange {
            key: Bytes(vec![0]),
            range_end: Bytes(vec![0]),
        };
        let options = RangeOptions {
            count_only: true,
            ..RangeOptions::default()
        };
        let keys = self.range(account, range, options).await?.result.count;
        Ok(Usage { leases, keys })
    }
}
