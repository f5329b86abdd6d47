//! Who is calling and what they may touch: the one place authorization is
//! decided.
//!
//! - **Authentication** ([`Authenticator::authenticate`]) turns an
//!   `Authorization: Bearer ...` header into a [`Principal`]: the admin, an
//!   account (by the SHA-256 of its token, looked up in the directory
//!   projection), or, in local mode, the local user.
//! - **Authorization** is [`Principal::account`] (the account whose entities
//!   a request acts on) and [`Principal::require_admin`]. Entities are keyed
//!   by account everywhere below this point (streams, actors, projections), so
//!   a request can only reach its own account's entities: another account's
//!   lease is simply not found.
//!
//! Tokens are random (at least 206 bits), so a plain SHA-256 is the right
//! hash for them: no salt or slow hash is needed against guessing, and only
//! the hash is ever stored or compared. A token never reaches the log, the
//! event log or an error message.

use std::path::Path;

use sha2::{Digest, Sha256};
use tenure_events::AccountId;

use crate::history::filter::HistoryScope;

/// Every token starts with this, so leaked tokens are easy to scan for.
pub const TOKEN_PREFIX: &str = "tnr_";

/// The longest `Authorization` header value read.
const MAX_HEADER_LEN: usize = 512;

/// Characters of a token's ID and secret.
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Length of a token's public ID and of its secret part.
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 40;

/// The file (in the data directory) holding the SHA-256 of the admin token
/// generated at first start.
pub const ADMIN_HASH_FILE: &str = "admin-token.sha256";

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Local mode (no `--auth`): the one `default` account, and the admin.
    Local,
    /// The admin token: manages accounts, owns no entities.
    Admin,
    /// An account's token.
    Account { account: AccountId, token: String },
}

/// Why a request is not authenticated (401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send 'Authorization: Bearer TOKEN'")]
    Missing,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("invalid or revoked token")]
    Invalid,
}

/// Why an authenticated caller may not do something (403). Never said
/// about another account's entity, which is simply not found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the admin token manages accounts and owns no leases or keys; use an account's token")]
    AdminOwnsNothing,
    #[error("this endpoint needs the admin token")]
    AdminOnly,
}

impl Principal {
    /// The account whose entities this caller acts on.
    pub fn account(&self) -> Result<AccountId, Denied> {
        match self {
            Principal::Local => Ok(AccountId::default_account()),
            Principal::Account { account, .. } => Ok(account.clone()),
            Principal::Admin => Err(Denied::AdminOwnsNothing),
        }
    }

    /// Whose events this caller may read: all of them (the admin, local
    /// mode), or its own account's.
    pub fn history_scope(&self) -> HistoryScope {
        match self {
            Principal::Local | Principal::Admin => HistoryScope::All,
            Principal::Account { account, .. } => HistoryScope::Account(account.clone()),
        }
    }

    /// Succeeds for callers allowed to manage accounts.
    pub fn require_admin(&self) -> Result<(), Denied> {
        match self {
            Principal::Local | Principal::Admin => Ok(()),
            Principal::Account { .. } => Err(Denied::AdminOnly),
        }
    }
}

/// The server's authentication settings.
#[derive(Clone, Debug)]
pub enum Authenticator {
    /// No tokens: everyone is [`Principal::Local`]. Loopback only.
    Local,
    /// Bearer tokens; `admin_sha256` is the admin token's hash.
    Tokens { admin_sha256: String },
}

impl Authenticator {
    pub fn is_local(&self) -> bool {
        matches!(self, Authenticator::Local)
    }

    /// Reads the bearer token of an `Authorization` header value, then asks
    /// `lookup` for the account of a token that is not the admin's (by its
    /// SHA-256).
    pub async fn authenticate<F, Fut>(&self, header: Option<&[u8]>, lookup: F) -> Result<Principal, AuthError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Option<(AccountId, String)>>,
    {
        let Authenticator::Tokens { admin_sha256 } = self else {
            return Ok(Principal::Local);
        };
        let token = bearer_token(header.ok_or(AuthError::Missing)?)?;
        let hash = sha256_hex(token);
        if hash == *admin_sha256 {
            return Ok(Principal::Admin);
        }
        match lookup(hash).await {
            Some((account, token)) => Ok(Principal::Account { account, token }),
            None => Err(AuthError::Invalid),
        }
    }
}

/// The token of a `Bearer` header value.
fn bearer_token(value: &[u8]) -> Result<&str, AuthError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(AuthError::Malformed("too long"));
    }
    let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed("not ASCII"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected 'Bearer TOKEN'"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("the scheme must be Bearer"));
    }
    let token = token.trim_start();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::Malformed("the token must be one word of visible ASCII"));
    }
    Ok(token)
}

/// Lowercase hex SHA-256 of a token.
pub fn sha256_hex(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for b in digest.iter() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// `n` random lowercase letters and digits, from the OS's CSPRNG.
pub fn random_chars(n: usize) -> anyhow::Result<String> {
    // 252 is the largest multiple of 36 below 256: reject above it, so every
    // character is equally likely.
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
        for b in buf {
            if b < 252 && out.len() < n {
                out.push(ALPHABET[usize::from(b % 36)] as char);
            }
        }
    }
    Ok(out)
}

/// A new token: its public ID and the whole token (`tnr_{id}_{secret}`).
pub fn new_token() -> anyhow::Result<(String, String)> {
    let id = random_chars(ID_LEN)?;
    let secret = random_chars(SECRET_LEN)?;
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    Ok((id, token))
}

/// The admin token's hash: from the given token, or else from the data
/// directory, where the first start with `--auth` writes the hash of a
/// generated token. Answers the hash and the generated token, if one was
/// generated now (to be shown once).
pub fn admin_token(given: Option<&str>, data_dir: &Path) -> anyhow::Result<(String, Option<String>)> {
    use anyhow::Context as _;
    if let Some(token) = given {
        let token = token.trim();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!("the admin token must be at least 16 characters of visible ASCII without spaces");
        }
        return Ok((sha256_hex(token), None));
    }
    let path = data_dir.join(ADMIN_HASH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(hash) => {
            let hash = hash.trim().to_owned();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("{} does not hold a SHA-256 in hex", path.display());
            }
            Ok((hash, None))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (_, token) = new_token()?;
            let token = token.replacen(TOKEN_PREFIX, "tnr_admin_", 1);
            let hash = sha256_hex(&token);
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            write_durably(&path, &hash).with_context(|| format!("writing {}", path.display()))?;
            Ok((hash, Some(token)))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `text` to `path` atomically and durably (temporary file, fsync,
/// rename, fsync of the directory), readable by the owner only.
fn write_durably(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticate(auth: &Authenticator, header: Option<&str>) -> Result<Principal, AuthError> {
        let alice: AccountId = "alice".parse().expect("valid");
        let alice_hash = sha256_hex("tnr_alice_token");
        futures::executor::block_on(auth.authenticate(header.map(str::as_bytes), |hash| {
            let found = (hash == alice_hash).then(|| (alice.clone(), "t1".to_owned()));
            std::future::ready(found)
        }))
    }

    #[test]
    fn bearer_tokens_resolve_to_the_admin_or_an_account() {
        let auth = Authenticator::Tokens {
            admin_sha256: sha256_hex("admin-token-0123456789"),
        };
        assert_eq!(
            authenticate(&auth, Some("Bearer admin-token-0123456789")),
            Ok(Principal::Admin)
        );
        assert_eq!(
            authenticate(&auth, Some("bearer  tnr_alice_token")),
            Ok(Principal::Account {
                account: "alice".parse().expect("valid"),
                token: "t1".into()
            })
        );
        assert_eq!(authenticate(&auth, None), Err(AuthError::Missing));
        assert_eq!(authenticate(&auth, Some("Bearer nope")), Err(AuthError::Invalid));
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "tnr_alice_token",
            "Bearer a b",
        ] {
            assert!(
                matches!(authenticate(&auth, Some(bad)), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(authenticate(&Authenticator::Local, None), Ok(Principal::Local));
    }

    #[test]
    fn only_accounts_and_local_callers_own_entities_and_only_admins_manage() {
        let alice = Principal::Account {
            account: "alice".parse().expect("valid"),
            token: "t1".into(),
        };
        assert_eq!(alice.account().map(|a| a.to_string()), Ok("alice".into()));
        assert_eq!(alice.require_admin(), Err(Denied::AdminOnly));
        assert_eq!(Principal::Admin.account(), Err(Denied::AdminOwnsNothing));
        assert_eq!(Principal::Admin.require_admin(), Ok(()));
        assert_eq!(Principal::Local.account(), Ok(AccountId::default_account()));
        assert_eq!(Principal::Local.require_admin(), Ok(()));
    }

    #[test]
    fn tokens_are_random_and_shaped() {
        let (id, token) = new_token().expect("random source");
        assert_eq!(id.len(), ID_LEN);
        assert!(token.starts_with(&format!("{TOKEN_PREFIX}{id}_")));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
        assert_ne!(new_token().expect("random source").1, token);
        assert_eq!(
            sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn a_generated_admin_token_is_kept_as_its_hash_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (hash, token) = admin_token(None, dir.path()).expect("generated");
        let token = token.expect("shown on first start");
        assert_eq!(sha256_hex(&token), hash);
        let stored = std::fs::read_to_string(dir.path().join(ADMIN_HASH_FILE)).expect("written");
        assert!(!stored.contains(&token));
        // The next start reads the hash and shows nothing.
        assert_eq!(admin_token(None, dir.path()).expect("read"), (hash, None));
        assert!(admin_token(Some("short"), dir.path()).is_err());
    }
}
