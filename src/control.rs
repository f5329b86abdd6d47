//! The control plane's front door: one async method per command or query,
//! used by the HTTP API (and by tests). It routes to the actors and waits for
//! their answer; it holds no state of its own.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tenure_events::{AccountId, Bytes, LeaseId, Metadata};
use tenure_projections::{AccountView, LeaseKey};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::actors::keyspace::{self, Deleted, PutDone, RangeDone};
use crate::actors::lease::{self, Granted};
use crate::actors::{account, Activation, Cmd, CommandError, Hub, LimitReached, Reply};
use crate::auth::{AuthError, Authenticator, Principal};
use crate::domain::account::{AccountCommand, AccountRejection, LimitsUpdate};
use crate::domain::keyspace::{KeyRange, LeaseUpdate, RangeOptions};
use crate::domain::lease::LeaseRejection;
use crate::domain::service::{InstanceCommand, InstanceRejection, ServiceCommand, ServiceRejection};
use crate::domain::share::{ShareCommand, ShareRejection};
use crate::domain::workload::{Signed, WorkloadCommand, WorkloadRejection};
use crate::store::StoreError;
use tenure_events::service::{InstanceRegistered, PortRule, ServiceCreated, ServiceDeleteReason};
use tenure_events::workload::ResultState;
use tenure_events::{BackendMode, ShareMode};
use tenure_projections::{InstanceView, ServiceView, SessionView, ShareView, WorkloadView};

/// Commands and queries in flight at once. Past this, callers wait: this is
/// the bound behind every actor mailbox and the store's write queue.
pub const COMMANDS_IN_FLIGHT_MAX: usize = 16_384;

/// How often a server-chosen lease ID is drawn again if it is taken.
const FRESH_ID_ATTEMPTS: usize = 3;

/// A lease as `timetolive` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub lease: LeaseId,
    pub granted_ttl_s: i64,
    pub remaining_s: i64,
    /// Attached keys, when asked for.
    pub keys: Vec<Bytes>,
}

/// A limit a creation is counted against.
#[derive(Clone, Copy)]
struct Limit {
    name: &'static str,
    what: &'static str,
    pick: fn(&tenure_events::Limits) -> i64,
}

impl Limit {
    const LEASES: Limit = Limit {
        name: "max_leases",
        what: "live leases",
        pick: |l| l.max_leases,
    };
    const SHARES: Limit = Limit {
        name: "max_reserved_shares",
        what: "reserved shares",
        pick: |l| l.max_reserved_shares,
    };
    const SERVICES: Limit = Limit {
        name: "max_services",
        what: "services",
        pick: |l| l.max_services,
    };
}

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

#[derive(Clone)]
pub struct Control {
    hub: Arc<Hub>,
    auth: Arc<Authenticator>,
    in_flight: Arc<Semaphore>,
    lease_ids: Arc<LeaseIds>,
    /// Creations counted by a limit (grants, reservations) of an account
    /// with such a limit pass one at a time per account (check the count,
    /// create, wait for the count to include it), so the limit holds under
    /// concurrency. Unlimited accounts skip this.
    gates: Arc<parking_lot::Mutex<std::collections::HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Server-chosen lease IDs, increasing like etcd's: the wall-clock
/// millisecond at start-up in the high bits, a counter in the low 20. New
/// lease streams then sort after the existing ones, so creating one appends
/// to the end of the store's stream index instead of touching a random page.
/// Uniqueness does not rest on this: a grant on a taken ID conflicts and is
/// retried with a random one.
struct LeaseIds {
    next: std::sync::atomic::AtomicI64,
}

impl LeaseIds {
    fn new() -> LeaseIds {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        LeaseIds {
            next: std::sync::atomic::AtomicI64::new(((ms & ((1 << 43) - 1)) << 20).max(1)),
        }
    }

    fn next(&self) -> LeaseId {
        let raw = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LeaseId::new(raw).unwrap_or_else(LeaseId::random)
    }
}

impl Control {
    pub fn new(hub: Arc<Hub>, auth: Authenticator) -> Control {
        Control {
            hub,
            auth: Arc::new(auth),
            in_flight: Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT_MAX)),
            lease_ids: Arc::new(LeaseIds::new()),
            gates: Arc::default(),
        }
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Who sent a request with this `Authorization` header value. A token
    /// not in the directory is looked up again once the directory has
    /// applied everything durable, so a token works as soon as its creation
    /// is acknowledged.
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        let projections = &self.hub.projections;
        let store = &self.hub.store;
        self.auth
            .authenticate(header, |hash| async move {
                let find = || {
                    projections
                        .directory
                        .read()
                        .token(&hash)
                        .map(|(account, id)| (account.clone(), id.to_owned()))
                };
                match find() {
                    Some(found) => Some(found),
                    None => {
                        projections.caught_up(store.head()).await;
                        find()
                    }
                }
            })
            .await
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    async fn call<T: Send + 'static>(&self, send: impl FnOnce(Reply<T>)) -> Result<T, CommandError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| CommandError::Unavailable("the server is shutting down".into()))?;
        let (reply, answer) = Reply::oneshot();
        send(reply);
        answer
            .await
            .map_err(|_| CommandError::Unavailable("the entity stopped before answering; retry".into()))?
    }

    /// Reads the projections once they have applied everything durable
    /// when this is called, so a caller reads its own acknowledged writes.
    async fn read<T>(&self, read: impl FnOnce(&crate::actors::Projections) -> T) -> T {
        self.hub.projections.caught_up(self.hub.store.head()).await;
        read(&self.hub.projections)
    }

    fn lease_key(account: &AccountId, lease: LeaseId) -> LeaseKey {
        LeaseKey {
            account: account.clone(),
            lease,
        }
    }

    /// Runs `create` unless the account is at `limit`: for an account with
    /// that limit, creations pass its gate one at a time (count, create,
    /// let the projections count it too); unlimited accounts go straight
    /// through.
    async fn within_limit<T, Fut>(
        &self,
        account: &AccountId,
        limit: Limit,
        count: impl Fn(&crate::actors::Projections) -> usize,
        create: impl FnOnce() -> Fut,
    ) -> Result<T, CommandError>
    where
        Fut: std::future::Future<Output = Result<T, CommandError>>,
    {
        let projections = &self.hub.projections;
        if (limit.pick)(&projections.directory.read().limits(account)) < 0 {
            return create().await;
        }
        let gate = Arc::clone(self.gates.lock().entry(account.clone()).or_default());
        let _turn = gate.lock().await;
        projections.caught_up(self.hub.store.head()).await;
        let max = (limit.pick)(&projections.directory.read().limits(account));
        if !tenure_events::allows_one_more(max, count(projections)) {
            return Err(LimitReached {
                account: account.clone(),
                limit: limit.name,
                what: limit.what,
                max,
            }
            .into());
        }
        let created = create().await;
        // The next creation through the gate must count this one.
        projections.caught_up(self.hub.store.head()).await;
        created
    }

    /// Grants a lease; with `lease: None` the server picks a random ID.
    /// Refused if the account is at its `max_leases` limit.
    pub async fn grant(&self, meta: Metadata, lease: Option<LeaseId>, ttl_s: i64) -> Result<Granted, CommandError> {
        let account = meta.account.clone();
        let count = |p: &crate::actors::Projections| p.expiry.lock().count(&account);
        self.within_limit(&account, Limit::LEASES, count, || {
            self.grant_unchecked(meta, lease, ttl_s)
        })
        .await
    }

    async fn grant_unchecked(
        &self,
        meta: Metadata,
        lease: Option<LeaseId>,
        ttl_s: i64,
    ) -> Result<Granted, CommandError> {
        let hub = &self.hub;
        if let Some(id) = lease {
            let key = Self::lease_key(&meta.account, id);
            let cmd = Cmd::new(meta);
            return self
                .call(|reply| {
                    hub.leases
                        .route(hub, &key, Activation::Load, lease::Grant { ttl_s, cmd, reply })
                })
                .await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let id = if attempt == 1 {
                self.lease_ids.next()
            } else {
                LeaseId::random()
            };
            let key = Self::lease_key(&meta.account, id);
            let cmd = Cmd::new(meta.clone());
            let granted = self
                .call(|reply| {
                    hub.leases
                        .route(hub, &key, Activation::Fresh, lease::Grant { ttl_s, cmd, reply })
                })
                .await;
            match granted {
                Err(CommandError::Lease(LeaseRejection::AlreadyExists(_))) if attempt < FRESH_ID_ATTEMPTS => continue,
                other => return other,
            }
        }
    }

    /// Resets the lease's TTL; answers the granted TTL.
    pub async fn keep_alive(&self, meta: Metadata, lease: LeaseId) -> Result<i64, CommandError> {
        let (hub, key, cmd) = (&self.hub, Self::lease_key(&meta.account, lease), Cmd::new(meta));
        self.call(|reply| {
            hub.leases
                .route(hub, &key, Activation::Load, lease::KeepAlive { cmd, reply })
        })
        .await
    }

    /// Revokes the lease; answers once its keys are deleted.
    pub async fn revoke(&self, meta: Metadata, lease: LeaseId) -> Result<Deleted, CommandError> {
        let (hub, key, cmd) = (&self.hub, Self::lease_key(&meta.account, lease), Cmd::new(meta));
        self.call(|reply| {
            hub.leases
                .route(hub, &key, Activation::Load, lease::Revoke { cmd, reply })
        })
        .await
    }

    pub async fn time_to_live(
        &self,
        account: &AccountId,
        lease: LeaseId,
        keys: bool,
    ) -> Result<LeaseInfo, CommandError> {
        let (hub, key) = (&self.hub, Self::lease_key(account, lease));
        let ttl = self
            .call(|reply| {
                hub.leases
                    .route(hub, &key, Activation::Load, lease::GetTimeToLive { reply })
            })
            .await?;
        let keys = if keys {
            self.call(|reply| {
                hub.keyspaces
                    .route(hub, account, Activation::Load, keyspace::LeaseKeys { lease, reply })
            })
            .await?
        } else {
            Vec::new()
        };
        Ok(LeaseInfo {
            lease,
            granted_ttl_s: ttl.granted_ttl_s,
            remaining_s: ttl.remaining_s,
            keys,
        })
    }

    /// The account's live leases, in ID order, including every lease whose
    /// grant was acknowledged before this call.
    pub async fn leases(&self, account: &AccountId) -> Result<Vec<LeaseId>, CommandError> {
        Ok(self.read(|p| p.expiry.lock().leases(account)).await)
    }

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

    /// Start-up recovery: deletes the keys still attached to leases that
    /// have ended (the server stopped between a lease's end and the deletion
    /// of its keys). Runs after the projections have caught up with the log
    /// and before the server takes requests. Answers how many leases it
    /// cleaned up.
    pub async fn recover_lease_keys(&self) -> Result<usize, CommandError> {
        let hub = &self.hub;
        let accounts: Vec<AccountId> = hub.projections.catalog.lock().keyspaces().cloned().collect();
        let mut cleaned = 0;
        for account in accounts {
            let leases = self
                .call(|reply| {
                    hub.keyspaces
                        .route(hub, &account, Activation::Load, keyspace::LeasesWithKeys { reply })
                })
                .await?;
            for lease in leases {
                if hub.projections.expiry.lock().is_live(&Self::lease_key(&account, lease)) {
                    continue;
                }
                let span = tracing::info_span!("recover", lease = %lease, account = %account);
                let cmd = Cmd {
                    meta: Metadata::new(account.clone()),
                    span,
                };
                let cause = tenure_events::DeleteCause::LeaseEnded { lease };
                let deleted = self
                    .call(|reply| {
                        let msg = keyspace::DeleteLeaseKeys {
                            lease,
                            cause,
                            cmd,
                            reply,
                        };
                        hub.keyspaces.route(hub, &account, Activation::Load, msg)
                    })
                    .await?;
                tracing::warn!(lease = %lease, account = %account, keys = deleted.count,
                    "deleted keys left on an ended lease by an interrupted revoke or expiry");
                cleaned += 1;
            }
        }
        Ok(cleaned)
    }

    /// The account's key space revision (etcd's header revision): at least
    /// the revision of every change acknowledged before this call.
    pub fn revision(&self, account: &AccountId) -> i64 {
        self.hub.revisions.get(account)
    }

    /// Routes a command to an entity actor, waits for its answer (the
    /// events it recorded are durable by then), then for the projections
    /// to apply them, so what the caller reads next includes them.
    async fn entity_command<A, M>(
        &self,
        registry: &crate::actors::Registry<A>,
        key: &A::Key,
        activation: Activation,
        message: impl FnOnce(Reply<usize>) -> M,
    ) -> Result<usize, CommandError>
    where
        A: crate::actors::registry::Entity + actix::Handler<M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        let hub = &self.hub;
        let recorded = self
            .call(|reply| registry.route(hub, key, activation, message(reply)))
            .await?;
        hub.projections.caught_up(hub.store.head()).await;
        Ok(recorded)
    }

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
            command,
            cmd,
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

    async fn share_command(&self, token: &str, meta: Metadata, command: ShareCommand) -> Result<usize, CommandError> {
        let cmd = Cmd::new(meta);
        let key = token.to_owned();
        self.entity_command(&self.hub.shares, &key, Activation::Load, |reply| {
            crate::actors::share::Execute { command, cmd, reply }
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

    async fn workload_command(
        &self,
        id: Uuid,
        activation: Activation,
        meta: Metadata,
        command: WorkloadCommand,
    ) -> Result<usize, CommandError> {
        let cmd = Cmd::new(meta);
        self.entity_command(&self.hub.workloads, &id, activation, |reply| {
            crate::actors::workload::Execute { command, cmd, reply }
        })
        .await
    }

    /// Reserves a workload signed by the caller (the owner in `signed` is
    /// the caller), checked against the caller's registered public key.
    pub async fn reserve_workload(
        &self,
        meta: Metadata,
        signed: Signed,
        signature: String,
    ) -> Result<WorkloadView, CommandError> {
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let public_key = projections
            .directory
            .read()
            .account(&meta.account)
            .and_then(|a| a.public_key.as_ref().map(|(key, _)| key.clone()));
        let uuid = Uuid::new_v4();
        let command = WorkloadCommand::Reserve {
            signed,
            signature,
            public_key,
        };
        self.workload_command(uuid, Activation::Fresh, meta, command).await?;
        let view = projections.workloads.lock().by_uuid(uuid).cloned();
        view.ok_or_else(|| CommandError::Unavailable("the reservation is not visible yet; retry".into()))
    }

    /// One of the account's workload reservations; another account's is
    /// not found.
    pub async fn workload(&self, account: &AccountId, id: u64) -> Result<WorkloadView, CommandError> {
        let found = self
            .read(|p| p.workloads.lock().get(id).filter(|w| w.owner == *account).cloned())
            .await;
        found.ok_or(CommandError::Workload(WorkloadRejection::NotFound))
    }

    /// The account's workload reservations, by ID.
    pub async fn workloads(&self, account: &AccountId) -> Vec<WorkloadView> {
        self.read(|p| p.workloads.lock().owned_by(account).cloned().collect())
            .await
    }

    /// The owner deletes a reservation before it expires: it becomes
    /// to-delete, and its node sees that on its next poll.
    pub async fn delete_workload(&self, meta: Metadata, id: u64) -> Result<WorkloadView, CommandError> {
        let uuid = self.workload(&meta.account, id).await?.uuid;
        let command = WorkloadCommand::Delete {
            caller: meta.account.clone(),
        };
        self.workload_command(uuid, Activation::Load, meta.clone(), command)
            .await?;
        self.workload(&meta.account, id).await
    }

    /// A node reports what it did with a reservation (any reservation: nodes
    /// are operated by the admin). The event belongs to the owner's account.
    pub async fn report_result(
        &self,
        request_id: Option<Uuid>,
        id: u64,
        state: ResultState,
        error: String,
        data: serde_json::Value,
    ) -> Result<WorkloadView, CommandError> {
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let found = projections.workloads.lock().get(id).map(|w| (w.uuid, w.owner.clone()));
        let (uuid, owner) = found.ok_or(CommandError::Workload(WorkloadRejection::NotFound))?;
        let meta = Metadata {
            account: owner.clone(),
            request_id,
            causation_id: None,
        };
        let command = WorkloadCommand::ReportResult { state, error, data };
        self.workload_command(uuid, Activation::Load, meta, command).await?;
        self.workload(&owner, id).await
    }

    /// A node's feed from `from` on (see `Workloads`): at most `max`
    /// reservations, waiting up to `wait` for one when there are none.
    pub async fn poll(&self, node: &str, from: u64, max: usize, wait: std::time::Duration) -> Vec<WorkloadView> {
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = projections.workload_events.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let found: Vec<WorkloadView> = projections
                .workloads
                .lock()
                .poll(node, from, max)
                .into_iter()
                .cloned()
                .collect();
            if !found.is_empty() {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Vec::new();
            }
        }
    }

    async fn service_command(
        &self,
        meta: Metadata,
        name: &str,
        command: ServiceCommand,
    ) -> Result<usize, CommandError> {
        let key = (meta.account.clone(), name.to_owned());
        let cmd = Cmd::new(meta);
        self.entity_command(&self.hub.services, &key, Activation::Load, |reply| {
            crate::actors::service::ExecuteService { command, cmd, reply }
        })
        .await
    }

    async fn instance_command(
        &self,
        meta: Metadata,
        name: &str,
        command: InstanceCommand,
    ) -> Result<usize, CommandError> {
        let key = (meta.account.clone(), name.to_owned());
        let cmd = Cmd::new(meta);
        self.entity_command(&self.hub.instances, &key, Activation::Load, |reply| {
            crate::actors::service::ExecuteInstance { command, cmd, reply }
        })
        .await
    }

    /// Creates a service: FQDN `NAME-xxxxxxxx.DOMAIN`. Refused at the
    /// account's `max_services`.
    pub async fn create_service(
        &self,
        meta: Metadata,
        name: String,
        ports: Vec<PortRule>,
        soft_limit: Option<u16>,
        hard_limit: Option<u16>,
        auto: bool,
    ) -> Result<ServiceView, CommandError> {
        let account = meta.account.clone();
        let count = |p: &crate::actors::Projections| p.services.lock().count(&account);
        self.within_limit(&account, Limit::SERVICES, count, || async {
            let suffix = crate::auth::random_chars(crate::domain::service::FQDN_SUFFIX_LEN)
                .map_err(|e| CommandError::Unavailable(e.to_string()))?;
            let created = ServiceCreated {
                uuid: Uuid::new_v4(),
                fqdn: format!("{name}-{suffix}.{}", self.hub.config.domain),
                name: name.clone(),
                ports,
                soft_limit,
                hard_limit,
                auto,
            };
            self.service_command(meta, &name, ServiceCommand::Create(created))
                .await?;
            self.service(&account, &name).await
        })
        .await
    }

    pub async fn service(&self, account: &AccountId, name: &str) -> Result<ServiceView, CommandError> {
        let found = self.read(|p| p.services.lock().service(account, name).cloned()).await;
        found.ok_or(CommandError::Service(ServiceRejection::NotFound))
    }

    /// The account's services with their instances, by name.
    pub async fn services(&self, account: &AccountId) -> Vec<(ServiceView, Vec<InstanceView>)> {
        self.read(|p| {
            let services = p.services.lock();
            services
                .services(account)
                .map(|s| (s.clone(), services.attached(account, &s.name).cloned().collect()))
                .collect()
        })
        .await
    }

    /// The account's instances, by name.
    pub async fn instances(&self, account: &AccountId) -> Vec<InstanceView> {
        self.read(|p| p.services.lock().instances(account).cloned().collect())
            .await
    }

    /// Whether an instance's lease is live (it serves).
    pub fn instance_live(&self, account: &AccountId, instance: &InstanceView) -> bool {
        self.hub
            .projections
            .expiry
            .lock()
            .is_live(&Self::lease_key(account, instance.lease))
    }

    /// Removes a service; with instances attached only with `force`, which
    /// removes them first.
    pub async fn delete_service(&self, meta: Metadata, name: &str, force: bool) -> Result<(), CommandError> {
        let attached: Vec<String> = {
            self.service(&meta.account, name).await?;
            let services = self.hub.projections.services.lock();
            services.attached(&meta.account, name).map(|i| i.name.clone()).collect()
        };
        let command = ServiceCommand::Delete {
            reason: ServiceDeleteReason::Request,
            attached: attached.len(),
            force,
        };
        if !attached.is_empty() && !force {
            return self.service_command(meta, name, command).await.map(drop);
        }
        for instance in &attached {
            match self
                .instance_command(meta.clone(), instance, InstanceCommand::Remove)
                .await
            {
                Ok(_) | Err(CommandError::Instance(InstanceRejection::NotFound)) => {}
                Err(e) => return Err(e),
            }
        }
        self.service_command(meta, name, command).await.map(drop)
    }

    /// Attaches an instance at `address` to a service, serving while the
    /// caller's live `lease` lives. With `ports` instead of a service, creates
    /// an automatic service (named after the instance) that is deleted with
    /// its last instance.
    pub async fn register_instance(
        &self,
        meta: Metadata,
        name: String,
        service: Option<String>,
        ports: Vec<PortRule>,
        address: String,
        lease: LeaseId,
    ) -> Result<(InstanceView, ServiceView), CommandError> {
        let account = meta.account.clone();
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        if !projections.expiry.lock().is_live(&Self::lease_key(&account, lease)) {
            return Err(LeaseRejection::NotFound(lease).into());
        }
        crate::domain::service::check_name("name", &name)
            .map_err(|e| CommandError::Instance(InstanceRejection::Invalid(e)))?;
        let service = match service {
            Some(service) => self.service(&account, &service).await?,
            None => {
                self.create_service(meta.clone(), name.clone(), ports, None, None, true)
                    .await?
            }
        };
        let registered = InstanceRegistered {
            uuid: Uuid::new_v4(),
            name: name.clone(),
            service: service.name.clone(),
            address,
            lease,
        };
        let outcome = self
            .instance_command(meta.clone(), &name, InstanceCommand::Register(registered))
            .await;
        if let Err(e) = outcome {
            let unused = projections
                .services
                .lock()
                .attached(&account, &service.name)
                .next()
                .is_none();
            if service.auto && unused {
                let _ = self.delete_auto_service(meta, &service.name).await;
            }
            return Err(e);
        }
        let instance = projections.services.lock().instance(&account, &name).cloned();
        let instance = instance.ok_or_else(|| CommandError::Unavailable("the instance is not visible yet".into()))?;
        Ok((instance, service))
    }

    /// Removes an instance; an automatic service goes with its last one.
    pub async fn remove_instance(&self, meta: Metadata, name: &str) -> Result<Option<String>, CommandError> {
        let account = meta.account.clone();
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let service = projections
            .services
            .lock()
            .instance(&account, name)
            .map(|i| i.service.clone());
        self.instance_command(meta.clone(), name, InstanceCommand::Remove)
            .await?;
        let removed_service = service.filter(|service| {
            let services = projections.services.lock();
            services.service(&account, service).is_some_and(|s| s.auto)
                && services.attached(&account, service).next().is_none()
        });
        if let Some(service) = &removed_service {
            self.delete_auto_service(meta, service).await?;
        }
        Ok(removed_service)
    }

    async fn delete_auto_service(&self, meta: Metadata, name: &str) -> Result<(), CommandError> {
        let command = ServiceCommand::Delete {
            reason: ServiceDeleteReason::LastInstanceRemoved,
            attached: 0,
            force: false,
        };
        match self.service_command(meta, name, command).await {
            Ok(_) | Err(CommandError::Service(ServiceRejection::NotFound)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the store still takes writes.
    pub fn health(&self) -> Result<(), StoreError> {
        self.hub.store.health()
    }
}
