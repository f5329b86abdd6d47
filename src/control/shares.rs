//! Reserved shares (zrok): reserve, sessions, access grants, release.

use tenure_events::{AccountId, BackendMode, LeaseId, Metadata, ShareMode};
use tenure_projections::{SessionView, ShareView};
use uuid::Uuid;

use crate::actors::{Activation, Cmd, CommandError};
use crate::domain::lease::LeaseRejection;
use crate::domain::share::{ShareCommand, ShareRejection};

use super::{Control, Limit, FRESH_ID_ATTEMPTS};

impl Control {
    async fn share_command(&self, token: &str, meta: Metadata, command: ShareCommand) -> Result<usize, CommandError> {
        let cmd = Cmd::new(meta);
        let key = token.to_owned();
        self.entity_command(&self.hub.shares, &key, Activation::Load, |reply| {
            crate::actors::share::Execute {
                command: command.clone(),
                cmd: cmd.clone(),
                reply,
            }
        })
        .await
    }

    /// Reserves a share for the caller: under `unique_name`, or a random
    /// 12-character token. Refused at the account's `max_reserved_shares`.
    pub async fn reserve(
        &self,
        meta: Metadata,
        mode: ShareMode,
        backend_mode: BackendMode,
        target: String,
        unique_name: Option<String>,
    ) -> Result<ShareView, CommandError> {
        let account = meta.account.clone();
        let count = |p: &crate::actors::Projections| p.shares.lock().count(&account);
        self.within_limit(&account, Limit::SHARES, count, || {
            self.reserve_unchecked(meta, mode, backend_mode, target, unique_name)
        })
        .await
    }

    async fn reserve_unchecked(
        &self,
        meta: Metadata,
        mode: ShareMode,
        backend_mode: BackendMode,
        target: String,
        unique_name: Option<String>,
    ) -> Result<ShareView, CommandError> {
        let account = meta.account.clone();
        let chosen = unique_name.is_some();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = match &unique_name {
                Some(name) => name.clone(),
                None => crate::auth::random_chars(crate::domain::share::TOKEN_LEN)
                    .map_err(|e| CommandError::Unavailable(e.to_string()))?,
            };
            let command = ShareCommand::Reserve {
                caller: account.clone(),
                token: token.clone(),
                mode,
                backend_mode,
                target: target.clone(),
                unique_name: chosen,
            };
            match self.share_command(&token, meta.clone(), command).await {
                Err(CommandError::Share(ShareRejection::AlreadyReserved)) if !chosen && attempt < FRESH_ID_ATTEMPTS => {
                    continue
                }
                Err(e) => return Err(e),
                Ok(_) => return self.share(&account, &token).await,
            }
        }
    }

    /// One of the account's shares; another account's is not found.
    pub async fn share(&self, account: &AccountId, token: &str) -> Result<ShareView, CommandError> {
        let found = self
            .read(|p| p.shares.lock().get(token).filter(|s| s.owner == *account).cloned())
            .await;
        found.ok_or(CommandError::Share(ShareRejection::NotFound))
    }

    /// The account's shares, by token.
    pub async fn shares(&self, account: &AccountId) -> Vec<ShareView> {
        self.read(|p| p.shares.lock().owned_by(account).cloned().collect())
            .await
    }

    /// Whether a session's lease is live (the session serves).
    pub fn session_live(&self, owner: &AccountId, session: &SessionView) -> bool {
        self.hub
            .projections
            .expiry
            .lock()
            .is_live(&Self::lease_key(owner, session.lease))
    }

    /// Starts a backend session on the caller's share, held by the caller's
    /// live `lease`.
    pub async fn start_session(
        &self,
        meta: Metadata,
        token: &str,
        lease: LeaseId,
        address: Option<String>,
        replace: bool,
    ) -> Result<SessionView, CommandError> {
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        if !projections
            .expiry
            .lock()
            .is_live(&Self::lease_key(&meta.account, lease))
        {
            return Err(LeaseRejection::NotFound(lease).into());
        }
        let account = meta.account.clone();
        let session = Uuid::new_v4();
        let command = ShareCommand::StartSession {
            caller: account.clone(),
            session,
            lease,
            address,
            replace,
            current_live: false,
        };
        self.share_command(token, meta, command).await?;
        self.share(&account, token)
            .await?
            .session
            .filter(|s| s.id == session)
            .ok_or_else(|| CommandError::Unavailable("the session ended as it started; retry".into()))
    }

    /// Ends a backend session (the backend stopped).
    pub async fn stop_session(&self, meta: Metadata, token: &str, session: Uuid) -> Result<(), CommandError> {
        let command = ShareCommand::StopSession {
            caller: meta.account.clone(),
            session,
        };
        self.share_command(token, meta, command).await.map(drop)
    }

    /// Grants the caller access to a private share; answers the grant's ID
    /// and its secret (shown once; the log keeps its SHA-256).
    pub async fn grant_access(&self, meta: Metadata, token: &str) -> Result<(String, String), CommandError> {
        let (grant, secret) = crate::auth::new_token().map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let secret = secret.replacen(crate::auth::TOKEN_PREFIX, "tnra_", 1);
        let command = ShareCommand::GrantAccess {
            caller: meta.account.clone(),
            grant: grant.clone(),
            sha256: crate::auth::sha256_hex(&secret),
        };
        self.share_command(token, meta, command).await?;
        Ok((grant, secret))
    }

    /// Releases the caller's share: its token is free, and the lease of its
    /// session (if any) is revoked, which ends the backend's keep-alive.
    pub async fn release(&self, meta: Metadata, token: &str) -> Result<(), CommandError> {
        let session = self.share(&meta.account, token).await?.session;
        let command = ShareCommand::Release {
            caller: meta.account.clone(),
            token: token.to_owned(),
        };
        self.share_command(token, meta.clone(), command).await?;
        if let Some(session) = session {
            match self.revoke(meta, session.lease).await {
                Ok(_) | Err(CommandError::Lease(LeaseRejection::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
