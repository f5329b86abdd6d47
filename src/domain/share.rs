//! A share reservation (zrok's reserved share): a token held by an account
//! until released, at most one live backend session at a time, and access
//! grants for private shares.
//!
//! Whether the current session's lease is still live is not in this state
//! (the lease has its own stream): the actor passes it in with the command.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use tenure_events::{
    AccountId, BackendMode, LeaseId, SessionEnd, ShareAccessGranted, ShareEvent, ShareMode, ShareReleased,
    ShareReserved, ShareSessionEnded, ShareSessionStarted,
};
use uuid::Uuid;

use super::Aggregate;

/// Characters of a generated share token, and its length (zrok's).
pub const TOKEN_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
pub const TOKEN_LEN: usize = 12;

/// The longest target (URL or directory), in bytes.
pub const MAX_TARGET_BYTES: usize = 2048;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Share {
    /// Never reserved, or released: the token is free.
    #[default]
    Free,
    Reserved {
        owner: AccountId,
        mode: ShareMode,
        backend_mode: BackendMode,
        session: Option<(Uuid, LeaseId)>,
        grants: BTreeSet<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareCommand {
    Reserve {
        caller: AccountId,
        token: String,
        mode: ShareMode,
        backend_mode: BackendMode,
        target: String,
        unique_name: bool,
    },
    /// Start a backend session held by the caller's live `lease`; a web
    /// share's backend says where it serves the files (`address`).
    /// `current_live`: whether the current session's lease is still live.
    StartSession {
        caller: AccountId,
        session: Uuid,
        lease: LeaseId,
        address: Option<String>,
        replace: bool,
        current_live: bool,
    },
    StopSession {
        caller: AccountId,
        session: Uuid,
    },
    GrantAccess {
        caller: AccountId,
        grant: String,
        sha256: String,
    },
    Release {
        caller: AccountId,
        token: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareRejection {
    /// Not reserved, or reserved by another account: the same answer, so a
    /// share's owner stays private.
    #[error("share not found")]
    NotFound,
    #[error("the token is already reserved")]
    AlreadyReserved,
    #[error("the share already has a live backend session; stop it first or use --replace")]
    SessionActive,
    #[error("session {0} is not the share's current session")]
    SessionNotFound(Uuid),
    #[error("the share is public: it needs no access grant")]
    PublicShare,
    #[error("target: {0}")]
    InvalidTarget(String),
    /// The session's address is missing (web share), not wanted (proxy
    /// share), or not `HOST:PORT`.
    #[error("{0}")]
    InvalidAddress(String),
}

/// Checks a share's target: an http(s) URL with a host for `proxy`, a
/// directory path for `web`.
pub fn check_target(backend_mode: BackendMode, target: &str) -> Result<(), ShareRejection> {
    let bad = |why: &str| Err(ShareRejection::InvalidTarget(why.to_owned()));
    if target.is_empty() || target.len() > MAX_TARGET_BYTES || target.chars().any(char::is_control) {
        return bad(&format!(
            "must be 1 to {MAX_TARGET_BYTES} bytes without control characters"
        ));
    }
    match backend_mode {
        BackendMode::Proxy => match url::Url::parse(target) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
            Ok(_) => bad("a proxy target must be an http or https URL with a host"),
            Err(e) => bad(&format!(
                "not a URL ({e}); a proxy target looks like http://localhost:9090"
            )),
        },
        BackendMode::Web if target.starts_with('/') => Ok(()),
        BackendMode::Web => bad("a web target is an absolute directory path"),
    }
}

/// Checks a unique name: `^[a-z0-9-]{3,32}$`.
pub fn check_unique_name(name: &str) -> Result<(), String> {
    let ok = (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unique_name: must be 3 to 32 characters of a-z, 0-9 or '-', got {name:?}"
        ))
    }
}

impl Share {
    /// Whether the share is reserved by `caller`.
    fn owned_by(&self, caller: &AccountId) -> bool {
        matches!(self, Share::Reserved { owner, .. } if owner == caller)
    }
}

impl Aggregate for Share {
    type Command = ShareCommand;
    type Event = ShareEvent;
    type Rejection = ShareRejection;

    fn decide(&self, command: ShareCommand, _now: DateTime<Utc>) -> Result<Vec<ShareEvent>, ShareRejection> {
        match command {
            ShareCommand::Reserve {
                caller,
                token,
                mode,
                backend_mode,
                target,
                unique_name,
            } => {
                if matches!(self, Share::Reserved { .. }) {
                    return Err(ShareRejection::AlreadyReserved);
                }
                check_target(backend_mode, &target)?;
                Ok(vec![ShareReserved {
                    token,
                    owner: caller,
                    mode,
                    backend_mode,
                    target,
                    unique_name,
                }
                .into()])
            }
            ShareCommand::StartSession {
                caller,
                session,
                lease,
                address,
                replace,
                current_live,
            } => {
                let Share::Reserved {
                    session: current,
                    backend_mode,
                    ..
                } = self
                else {
                    return Err(ShareRejection::NotFound);
                };
                if !self.owned_by(&caller) {
                    return Err(ShareRejection::NotFound);
                }
                match (backend_mode, &address) {
                    (BackendMode::Web, None) => {
                        return Err(ShareRejection::InvalidAddress(
                            "address: a web share's session says where its files are served (HOST:PORT)".into(),
                        ))
                    }
                    (BackendMode::Web, Some(address)) => {
                        super::service::check_address(address).map_err(ShareRejection::InvalidAddress)?
                    }
                    (BackendMode::Proxy, Some(_)) => {
                        return Err(ShareRejection::InvalidAddress(
                            "address: only a web share's session has one; a proxy share is served at its target".into(),
                        ))
                    }
                    (BackendMode::Proxy, None) => {}
                }
                let mut events = Vec::new();
                if let Some((old, _)) = current {
                    if current_live && !replace {
                        return Err(ShareRejection::SessionActive);
                    }
                    if current_live {
                        events.push(
                            ShareSessionEnded {
                                session: *old,
                                cause: SessionEnd::Replaced,
                            }
                            .into(),
                        );
                    }
                }
                events.push(
                    ShareSessionStarted {
                        session,
                        lease,
                        address,
                    }
                    .into(),
                );
                Ok(events)
            }
            ShareCommand::StopSession { caller, session } => {
                if !self.owned_by(&caller) {
                    return Err(ShareRejection::NotFound);
                }
                match self {
                    Share::Reserved {
                        session: Some((current, _)),
                        ..
                    } if *current == session => Ok(vec![ShareSessionEnded {
                        session,
                        cause: SessionEnd::Stopped,
                    }
                    .into()]),
                    _ => Err(ShareRejection::SessionNotFound(session)),
                }
            }
            ShareCommand::GrantAccess { caller, grant, sha256 } => match self {
                Share::Free => Err(ShareRejection::NotFound),
                Share::Reserved {
                    mode: ShareMode::Public,
                    ..
                } => Err(ShareRejection::PublicShare),
                Share::Reserved { .. } => Ok(vec![ShareAccessGranted {
                    grant,
                    account: caller,
                    sha256,
                }
                .into()]),
            },
            ShareCommand::Release { caller, token } => {
                if !self.owned_by(&caller) {
                    return Err(ShareRejection::NotFound);
                }
                Ok(vec![ShareReleased { token }.into()])
            }
        }
    }

    fn evolve(&mut self, event: &ShareEvent, _at: DateTime<Utc>) {
        match event {
            ShareEvent::Reserved(e) => {
                *self = Share::Reserved {
                    owner: e.owner.clone(),
                    mode: e.mode,
                    backend_mode: e.backend_mode,
                    session: None,
                    grants: BTreeSet::new(),
                }
            }
            ShareEvent::Released(_) => *self = Share::Free,
            ShareEvent::SessionStarted(e) => {
                if let Share::Reserved { session, .. } = self {
                    *session = Some((e.session, e.lease));
                }
            }
            ShareEvent::SessionEnded(e) => {
                if let Share::Reserved { session, .. } = self {
                    if session.is_some_and(|(id, _)| id == e.session) {
                        *session = None;
                    }
                }
            }
            ShareEvent::AccessGranted(e) => {
                if let Share::Reserved { grants, .. } = self {
                    grants.insert(e.grant.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;

    fn account(name: &str) -> AccountId {
        name.parse().expect("valid name")
    }

    fn reserve(caller: &str, mode: ShareMode) -> ShareCommand {
        ShareCommand::Reserve {
            caller: account(caller),
            token: "x88xujrpk4k3".into(),
            mode,
            backend_mode: BackendMode::Proxy,
            target: "http://localhost:9090".into(),
            unique_name: false,
        }
    }

    fn reserved(owner: &str, mode: ShareMode) -> ShareEvent {
        ShareReserved {
            token: "x88xujrpk4k3".into(),
            owner: account(owner),
            mode,
            backend_mode: BackendMode::Proxy,
            target: "http://localhost:9090".into(),
            unique_name: false,
        }
        .into()
    }

    fn session(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn lease(n: i64) -> LeaseId {
        LeaseId::new(n).expect("positive")
    }

    fn started(n: u128) -> ShareEvent {
        ShareSessionStarted {
            session: session(n),
            lease: lease(n as i64),
            address: None,
        }
        .into()
    }

    fn start(caller: &str, n: u128, replace: bool, current_live: bool) -> ShareCommand {
        ShareCommand::StartSession {
            caller: account(caller),
            session: session(n),
            lease: lease(n as i64),
            address: None,
            replace,
            current_live,
        }
    }

    fn released() -> ShareEvent {
        ShareReleased {
            token: "x88xujrpk4k3".into(),
        }
        .into()
    }

    #[test]
    fn a_token_is_reserved_once_until_released() {
        given::<Share>([])
            .when(reserve("alice", ShareMode::Public))
            .then([reserved("alice", ShareMode::Public)]);
        // Held: by anyone, a 409.
        given::<Share>([reserved("alice", ShareMode::Public)])
            .when(reserve("bob", ShareMode::Private))
            .then_rejects(ShareRejection::AlreadyReserved);
        given::<Share>([reserved("alice", ShareMode::Public)])
            .when(reserve("alice", ShareMode::Public))
            .then_rejects(ShareRejection::AlreadyReserved);
        // Released: free again, for anyone.
        given::<Share>([reserved("alice", ShareMode::Public), released()])
            .when(reserve("bob", ShareMode::Private))
            .then([reserved("bob", ShareMode::Private)]);
    }

    #[test]
    fn targets_are_checked_by_backend_mode() {
        let with_target = |backend_mode, target: &str| ShareCommand::Reserve {
            caller: account("alice"),
            token: "t".into(),
            mode: ShareMode::Public,
            backend_mode,
            target: target.into(),
            unique_name: false,
        };
        for (mode, target) in [
            (BackendMode::Proxy, "localhost:9090"),
            (BackendMode::Proxy, "ftp://host/"),
            (BackendMode::Proxy, ""),
            (BackendMode::Web, "relative/dir"),
        ] {
            let outcome = Share::Free.decide(with_target(mode, target), crate::domain::testing::t(0));
            assert!(
                matches!(outcome, Err(ShareRejection::InvalidTarget(_))),
                "{mode:?} {target:?}: {outcome:?}"
            );
        }
        assert!(Share::Free
            .decide(with_target(BackendMode::Web, "/srv/www"), crate::domain::testing::t(0))
            .is_ok());
        assert_eq!(check_unique_name("my-share"), Ok(()));
        assert!(check_unique_name("My_Share").is_err());
        assert!(check_unique_name("ab").is_err());
    }

    #[test]
    fn a_web_share_session_says_where_its_files_are_served_and_only_it_does() {
        let web = ShareReserved {
            token: "x88xujrpk4k3".into(),
            owner: account("alice"),
            mode: ShareMode::Public,
            backend_mode: BackendMode::Web,
            target: "/srv/www".into(),
            unique_name: false,
        };
        let at = |address: Option<&str>| ShareCommand::StartSession {
            caller: account("alice"),
            session: session(1),
            lease: lease(1),
            address: address.map(str::to_owned),
            replace: false,
            current_live: false,
        };
        given::<Share>([web.clone().into()])
            .when(at(Some("127.0.0.1:41234")))
            .then([ShareSessionStarted {
                session: session(1),
                lease: lease(1),
                address: Some("127.0.0.1:41234".into()),
            }
            .into()]);
        for address in [None, Some("127.0.0.1"), Some("127.0.0.1:0"), Some("host:port")] {
            let outcome = given::<Share>([web.clone().into()]).when(at(address)).outcome();
            assert!(
                matches!(&outcome, Err(ShareRejection::InvalidAddress(m)) if m.starts_with("address: ")),
                "{address:?}: {outcome:?}"
            );
        }
        let outcome = given::<Share>([reserved("alice", ShareMode::Public)])
            .when(at(Some("127.0.0.1:41234")))
            .outcome();
        assert!(matches!(outcome, Err(ShareRejection::InvalidAddress(_))), "{outcome:?}");
    }

    #[test]
    fn one_live_session_at_a_time_unless_replaced() {
        given::<Share>([reserved("alice", ShareMode::Public)])
            .when(start("alice", 1, false, false))
            .then([started(1)]);
        given::<Share>([reserved("alice", ShareMode::Public), started(1)])
            .when(start("alice", 2, false, true))
            .then_rejects(ShareRejection::SessionActive);
        given::<Share>([reserved("alice", ShareMode::Public), started(1)])
            .when(start("alice", 2, true, true))
            .then([
                ShareSessionEnded {
                    session: session(1),
                    cause: SessionEnd::Replaced,
                }
                .into(),
                started(2),
            ]);
        // The old session's lease ended (a killed backend): no need to replace.
        given::<Share>([reserved("alice", ShareMode::Public), started(1)])
            .when(start("alice", 2, false, false))
            .then([started(2)]);
    }

    #[test]
    fn sessions_stop_and_the_share_stays() {
        let stopped: ShareEvent = ShareSessionEnded {
            session: session(1),
            cause: SessionEnd::Stopped,
        }
        .into();
        given::<Share>([reserved("alice", ShareMode::Public), started(1)])
            .when(ShareCommand::StopSession {
                caller: account("alice"),
                session: session(1),
            })
            .then([stopped.clone()]);
        given::<Share>([reserved("alice", ShareMode::Public), started(1), stopped.clone()])
            .when(ShareCommand::StopSession {
                caller: account("alice"),
                session: session(1),
            })
            .then_rejects(ShareRejection::SessionNotFound(session(1)));
        given::<Share>([reserved("alice", ShareMode::Public), started(1), stopped])
            .when(start("alice", 2, false, false))
            .then([started(2)]);
    }

    #[test]
    fn only_the_owner_starts_stops_or_releases_and_others_see_not_found() {
        let reserved_events = || [reserved("alice", ShareMode::Private), started(1)];
        given::<Share>(reserved_events())
            .when(start("bob", 2, true, false))
            .then_rejects(ShareRejection::NotFound);
        given::<Share>(reserved_events())
            .when(ShareCommand::StopSession {
                caller: account("bob"),
                session: session(1),
            })
            .then_rejects(ShareRejection::NotFound);
        given::<Share>(reserved_events())
            .when(ShareCommand::Release {
                caller: account("bob"),
                token: "x88xujrpk4k3".into(),
            })
            .then_rejects(ShareRejection::NotFound);
        given::<Share>(reserved_events())
            .when(ShareCommand::Release {
                caller: account("alice"),
                token: "x88xujrpk4k3".into(),
            })
            .then([released()]);
        given::<Share>([reserved("alice", ShareMode::Public), released()])
            .when(start("alice", 2, false, false))
            .then_rejects(ShareRejection::NotFound);
    }

    #[test]
    fn access_grants_are_for_private_shares_by_any_account_holding_the_token() {
        let grant = |caller: &str| ShareCommand::GrantAccess {
            caller: account(caller),
            grant: "g1".into(),
            sha256: "ab".repeat(32),
        };
        given::<Share>([reserved("alice", ShareMode::Private)])
            .when(grant("bob"))
            .then([ShareAccessGranted {
                grant: "g1".into(),
                account: account("bob"),
                sha256: "ab".repeat(32),
            }
            .into()]);
        given::<Share>([reserved("alice", ShareMode::Public)])
            .when(grant("bob"))
            .then_rejects(ShareRejection::PublicShare);
        given::<Share>([])
            .when(grant("bob"))
            .then_rejects(ShareRejection::NotFound);
    }
}
