//! The payloads of an account's stream (`account/{name}`).

use serde::{Deserialize, Serialize};

use crate::AccountId;

/// What a limit of -1 means: no limit (as in zrok).
pub const UNLIMITED: i64 = -1;

/// An account's limits. Each is a count, or [`UNLIMITED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Live leases at once.
    pub max_leases: i64,
    /// Keys in the account's key space at once.
    pub max_keys: i64,
    /// Reserved shares at once.
    pub max_reserved_shares: i64,
    /// Services at once.
    pub max_services: i64,
}

impl Limits {
    pub const UNLIMITED: Limits = Limits {
        max_leases: UNLIMITED,
        max_keys: UNLIMITED,
        max_reserved_shares: UNLIMITED,
        max_services: UNLIMITED,
    };

    /// Each limit with its name, as users write it.
    pub fn named(&self) -> [(&'static str, i64); 4] {
        [
            ("max_leases", self.max_leases),
            ("max_keys", self.max_keys),
            ("max_reserved_shares", self.max_reserved_shares),
            ("max_services", self.max_services),
        ]
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::UNLIMITED
    }
}

/// Whether a limit allows one more when `used` are taken.
pub fn allows_one_more(limit: i64, used: usize) -> bool {
    limit < 0 || i64::try_from(used).is_ok_and(|used| used < limit)
}

/// An account was created by the admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCreated {
    pub name: AccountId,
    pub limits: Limits,
}

/// An API token was issued to the account. Only the token's SHA-256 is
/// kept; the token itself was shown once to whoever created it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTokenCreated {
    /// The token's public ID (also its second part: `tnr_{id}_{secret}`).
    pub token: String,
    /// Lowercase hex SHA-256 of the whole token.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// An API token was revoked: it authenticates nothing from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTokenRevoked {
    pub token: String,
}

/// The account registered (or rotated to) an ed25519 public key, which
/// verifies what the account signs from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountKeyRegistered {
    /// The 32-byte key, standard base64 with padding.
    pub public_key: String,
}

/// The admin changed the account's limits; these are all of them now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLimitsSet {
    pub limits: Limits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_is_unlimited_and_zero_allows_nothing() {
        assert!(allows_one_more(UNLIMITED, usize::MAX));
        assert!(!allows_one_more(0, 0));
        assert!(allows_one_more(2, 1));
        assert!(!allows_one_more(2, 2));
    }
}
