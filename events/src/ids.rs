use std::fmt;
use std::num::NonZeroI64;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("lease ID must be 1 to 16 hexadecimal digits and not zero, got {0:?}")]
    Lease(String),
    #[error(
        "account name must be 1 to 63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit, got {0:?}"
    )]
    Account(String),
    #[error("stream name must be 1 to 512 characters, got {0} characters")]
    Stream(usize),
}

/// A lease's ID: a positive 64-bit integer, shown as 16 hexadecimal digits
/// (as etcd shows it: `525b80fbbf3b906e`). Zero means "no lease" in etcd's API
/// and is therefore never a lease ID, which lets `Option<LeaseId>` take
/// 8 bytes, not 16 (a key's lease, in every key of every key space).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(NonZeroI64);

impl LeaseId {
    /// The ID for a raw etcd lease number, if it is one (positive).
    pub fn new(raw: i64) -> Option<LeaseId> {
        if raw > 0 {
            NonZeroI64::new(raw).map(LeaseId)
        } else {
            None
        }
    }

    /// A fresh random ID (63 random bits, never zero).
    pub fn random() -> LeaseId {
        loop {
            let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
            if let Some(id) = LeaseId::new((high >> 1) as i64) {
                return id;
            }
        }
    }

    pub fn get(self) -> i64 {
        self.0.get()
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({self})")
    }
}

impl FromStr for LeaseId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<LeaseId, IdError> {
        let err = || IdError::Lease(s.to_owned());
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let raw = u64::from_str_radix(s, 16).map_err(|_| err())?;
        i64::try_from(raw).ok().and_then(LeaseId::new).ok_or_else(err)
    }
}

impl Serialize for LeaseId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LeaseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LeaseId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The account (tenant) an entity and its events belong to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(Arc<str>);

impl AccountId {
    /// The account used when the server runs without authentication.
    pub const DEFAULT: &'static str = "default";

    pub fn default_account() -> AccountId {
        AccountId(Arc::from(Self::DEFAULT))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccountId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<AccountId, IdError> {
        let valid = (1..=63).contains(&s.len())
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(AccountId(Arc::from(s)))
        } else {
            Err(IdError::Account(s.to_owned()))
        }
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.0)
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AccountId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The name of a stream: `{category}/{account}/{entity}` for entity streams.
///
/// The category (the part before the first `/`) says which kind of entity
/// owns the stream: `lease/default/525b80fbbf3b906e`, `keyspace/default`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(Arc<str>);

impl StreamId {
    pub const MAX_LEN: usize = 512;

    pub fn new(name: impl Into<String>) -> Result<StreamId, IdError> {
        let name = name.into();
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(IdError::Stream(name.len()));
        }
        Ok(StreamId(Arc::from(name)))
    }

    /// The stream of one lease of an account.
    pub fn lease(account: &AccountId, lease: LeaseId) -> StreamId {
        StreamId(Arc::from(format!("lease/{account}/{lease}")))
    }

    /// The stream of an account's key space (all of its etcd-style keys).
    pub fn keyspace(account: &AccountId) -> StreamId {
        StreamId(Arc::from(format!("keyspace/{account}")))
    }

    /// The stream of an account itself: its tokens, public key and limits.
    pub fn account(account: &AccountId) -> StreamId {
        StreamId(Arc::from(format!("account/{account}")))
    }

    /// The stream of a share reservation. Share tokens are global (the
    /// frontend routes by them), so the owner is not part of the name.
    pub fn share(token: &str) -> StreamId {
        StreamId(Arc::from(format!("share/{token}")))
    }

    /// The stream of a workload reservation, named by its UUID (its public
    /// ID is the log position of its creation).
    pub fn workload(id: uuid::Uuid) -> StreamId {
        StreamId(Arc::from(format!("workload/{id}")))
    }

    /// The stream of an account's service, by its name (unique per account).
    pub fn service(account: &AccountId, name: &str) -> StreamId {
        StreamId(Arc::from(format!("service/{account}/{name}")))
    }

    /// The stream of an account's instance, by its name.
    pub fn instance(account: &AccountId, name: &str) -> StreamId {
        StreamId(Arc::from(format!("instance/{account}/{name}")))
    }

    /// The kind of entity the stream belongs to: the part before the first `/`.
    pub fn category(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = IdError;
    fn try_from(s: String) -> Result<StreamId, IdError> {
        StreamId::new(s)
    }
}

impl From<StreamId> for String {
    fn from(s: StreamId) -> String {
        s.0.to_string()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_parse_and_print_as_16_hex_digits() {
        let check = |input: &str, expect: Option<&str>| {
            let got = input.parse::<LeaseId>().ok().map(|id| id.to_string());
            assert_eq!(got.as_deref(), expect, "input {input:?}");
        };
        check("525b80fbbf3b906e", Some("525b80fbbf3b906e"));
        check("1", Some("0000000000000001"));
        check("7fffffffffffffff", Some("7fffffffffffffff"));
        check("8000000000000000", None); // does not fit a positive int64
        check("0", None);
        check("", None);
        check("xyz", None);
        check("+1", None);
        check("00000000000000001", None); // 17 digits
    }

    #[test]
    fn only_positive_numbers_are_lease_ids_and_an_optional_one_takes_8_bytes() {
        assert_eq!(LeaseId::new(1).map(LeaseId::get), Some(1));
        assert_eq!(LeaseId::new(i64::MAX).map(LeaseId::get), Some(i64::MAX));
        assert_eq!(LeaseId::new(0), None);
        assert_eq!(LeaseId::new(-5), None);
        assert_eq!(LeaseId::new(i64::MIN), None);
        assert_eq!(std::mem::size_of::<Option<LeaseId>>(), 8);
    }

    #[test]
    fn account_names_are_checked() {
        assert!("default".parse::<AccountId>().is_ok());
        assert!("team-7_a".parse::<AccountId>().is_ok());
        assert!("".parse::<AccountId>().is_err());
        assert!("-a".parse::<AccountId>().is_err());
        assert!("A".parse::<AccountId>().is_err());
        assert!("a/b".parse::<AccountId>().is_err());
    }

    #[test]
    fn stream_names_carry_their_category() {
        let account = AccountId::default_account();
        let lease = LeaseId::new(0x525b80fbbf3b906e).expect("positive");
        assert_eq!(
            StreamId::lease(&account, lease).as_str(),
            "lease/default/525b80fbbf3b906e"
        );
        assert_eq!(StreamId::lease(&account, lease).category(), "lease");
        assert_eq!(StreamId::keyspace(&account).as_str(), "keyspace/default");
        assert_eq!(StreamId::account(&account).as_str(), "account/default");
        assert_eq!(StreamId::account(&account).category(), "account");
        assert!(StreamId::new("").is_err());
    }

    #[test]
    fn random_lease_ids_are_positive() {
        for _ in 0..1000 {
            assert!(LeaseId::random().get() > 0);
        }
    }
}
