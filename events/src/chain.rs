//! The hash chain that makes the log tamper-evident.
//!
//! Every stored event carries `hash(n) = SHA-256(hash(n-1) || canonical(n))`,
//! where `hash(0)` is 32 zero bytes and `canonical(n)` is the event's whole
//! envelope in the byte form defined here, once, for every backend. Editing,
//! removing, reordering or inserting an event changes its link and every
//! link after it; only the head (the last position and its hash), recorded
//! somewhere else, also detects a cut-off tail.
//!
//! **Canonical bytes, format 1.** Integers are big-endian; a string is its
//! length (u32) then its UTF-8 bytes; an optional UUID is `0x00`, or `0x01`
//! then its 16 bytes:
//!
//! | field | encoding |
//! |---|---|
//! | format | u8, `1` |
//! | position | u64 |
//! | stream | string |
//! | version | u64 |
//! | event id | 16 bytes |
//! | event type | string |
//! | schema version | u32 |
//! | time | i64, microseconds since 1970-01-01T00:00:00Z |
//! | account | string |
//! | request id | optional UUID |
//! | causation id | optional UUID |
//! | payload | string, the JSON text exactly as stored |
//!
//! The payload is hashed as the text the store keeps: a backend must store
//! it byte for byte (PostgreSQL: `text`, not `jsonb`, which reorders keys).
//! Golden vectors in `events/tests/chain/vectors.json` pin the format.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::{AccountId, NewEvent, RecordedEvent};

/// The version of the canonical byte form, its first byte.
pub const CANONICAL_FORMAT: u8 = 1;

/// One link of the chain: a SHA-256.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainHash(pub [u8; 32]);

/// Why a text is not a chain hash or a chain head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainParseError {
    #[error("a chain hash is 64 hexadecimal digits, got {0:?}")]
    Hash(String),
    #[error("a chain head is POSITION:HASH (a number, a colon, 64 hexadecimal digits), got {0:?}")]
    Head(String),
}

impl ChainHash {
    /// The link before the first event (and the hash of an event not yet
    /// stored, which has none).
    pub const ZERO: ChainHash = ChainHash([0; 32]);

    /// The link of `event`, which follows `self` in the log.
    pub fn next(&self, event: &RecordedEvent) -> ChainHash {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        write_canonical(event, &mut hasher);
        ChainHash(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

impl FromStr for ChainHash {
    type Err = ChainParseError;

    fn from_str(s: &str) -> Result<ChainHash, ChainParseError> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ChainParseError::Hash(s.to_owned()))?;
        Ok(ChainHash(bytes))
    }
}

impl TryFrom<&[u8]> for ChainHash {
    type Error = usize;

    /// The hash in these 32 bytes; the length otherwise.
    fn try_from(bytes: &[u8]) -> Result<ChainHash, usize> {
        <[u8; 32]>::try_from(bytes).map(ChainHash).map_err(|_| bytes.len())
    }
}

impl Serialize for ChainHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ChainHash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The end of the chain: the last position and its hash (`0:000…` for an
/// empty log). Written `POSITION:HASH`, the form `tenure status` prints and
/// `tenure verify --expect-head` reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChainHead {
    pub position: u64,
    pub hash: ChainHash,
}

impl ChainHead {
    pub const EMPTY: ChainHead = ChainHead {
        position: 0,
        hash: ChainHash::ZERO,
    };
}

impl fmt::Display for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.position, self.hash)
    }
}

impl FromStr for ChainHead {
    type Err = ChainParseError;

    fn from_str(s: &str) -> Result<ChainHead, ChainParseError> {
        let err = || ChainParseError::Head(s.to_owned());
        let (position, hash) = s.split_once(':').ok_or_else(err)?;
        if position.is_empty() || !position.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        Ok(ChainHead {
            position: position.parse().map_err(|_| err())?,
            hash: hash.parse().map_err(|_| err())?,
        })
    }
}

impl Serialize for ChainHead {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChainHead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ChainHead, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The canonical bytes of an event's envelope (see the module's table).
pub fn canonical_bytes(event: &RecordedEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + event.payload.len());
    write_canonical(event, &mut out);
    out
}

/// Where canonical bytes go: a buffer, or straight into a hasher (no copy).
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

fn write_canonical(event: &RecordedEvent, out: &mut impl Sink) {
    out.put(&[CANONICAL_FORMAT]);
    out.put(&event.position.to_be_bytes());
    write_string(out, event.stream.as_str());
    out.put(&event.version.to_be_bytes());
    write_body(&Body::from(event), out);
}

fn write_string(out: &mut impl Sink, s: &str) {
    // Every string of an envelope is far below 4 GiB (payloads are
    // bounded by the API's body limit), so the length fits.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.put(&len.to_be_bytes());
    out.put(s.as_bytes());
}

fn write_body(body: &Body<'_>, out: &mut impl Sink) {
    fn optional_uuid(out: &mut impl Sink, id: Option<&uuid::Uuid>) {
        match id {
            None => out.put(&[0]),
            Some(id) => {
                out.put(&[1]);
                out.put(id.as_bytes());
            }
        }
    }
    out.put(body.event_id.as_bytes());
    write_string(out, body.event_type);
    out.put(&body.schema_version.to_be_bytes());
    out.put(&body.time.timestamp_micros().to_be_bytes());
    write_string(out, body.account.as_str());
    optional_uuid(out, body.request_id);
    optional_uuid(out, body.causation_id);
    write_string(out, body.payload);
}

/// What an event is, apart from where the log places it (position, stream
/// and version): the fields a [`NewEvent`] and a [`RecordedEvent`] share.
#[derive(Clone, Copy, Debug)]
pub struct Body<'a> {
    pub event_id: &'a uuid::Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub time: &'a chrono::DateTime<chrono::Utc>,
    pub account: &'a AccountId,
    pub request_id: Option<&'a uuid::Uuid>,
    pub causation_id: Option<&'a uuid::Uuid>,
    pub payload: &'a str,
}

/// Both envelopes hold a body's fields under the same names.
macro_rules! body_of {
    ($envelope:ty) => {
        impl<'a> From<&'a $envelope> for Body<'a> {
            fn from(e: &'a $envelope) -> Body<'a> {
                Body {
                    event_id: &e.event_id,
                    event_type: &e.event_type,
                    schema_version: e.schema_version,
                    time: &e.time,
                    account: &e.account,
                    request_id: e.request_id.as_ref(),
                    causation_id: e.causation_id.as_ref(),
                    payload: &e.payload,
                }
            }
        }
    };
}
body_of!(NewEvent);
body_of!(RecordedEvent);

/// The canonical bytes are, in order: the format byte, the position (u64),
/// [`canonical_string`] of the stream, the version (u64), then
/// [`canonical_body`]. A store that places events itself (PostgreSQL's
/// rebasing append) is given the two variable parts and joins them.
pub fn canonical_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + s.len());
    write_string(&mut out, s);
    out
}

/// The canonical bytes after the version (see [`canonical_string`]).
pub fn canonical_body(body: &Body<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + body.payload.len());
    write_body(body, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_hashes_parse_and_print() {
        let head: ChainHead = format!("17:{}", "ab".repeat(32)).parse().expect("valid head");
        assert_eq!(head.position, 17);
        assert_eq!(head.to_string(), format!("17:{}", "ab".repeat(32)));
        assert_eq!(ChainHead::EMPTY.to_string(), format!("0:{}", "0".repeat(64)));
        for bad in [
            "",
            "17",
            "17:",
            ":abab",
            "x:00",
            "-1:00",
            &format!("17:{}", "ab".repeat(31)),
        ] {
            assert!(bad.parse::<ChainHead>().is_err(), "{bad:?}");
        }
        assert!("zz".repeat(32).parse::<ChainHash>().is_err());
    }

    /// The parts a store that places events itself joins make the same
    /// canonical bytes (the layout `canonical_string` documents).
    #[test]
    fn the_parts_join_into_the_canonical_bytes() {
        let account = AccountId::default_account();
        let new = NewEvent {
            event_id: uuid::Uuid::from_u128(7),
            event_type: "LeaseGranted".into(),
            schema_version: 3,
            time: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("a valid time"),
            account,
            request_id: Some(uuid::Uuid::from_u128(9)),
            causation_id: None,
            payload: r#"{"ttl":"10","ü":1}"#.into(),
        };
        let stream = crate::StreamId::new("lease-ü/42").expect("a valid stream");
        let recorded = RecordedEvent::from_new(new.clone(), stream.clone(), 5, 1234);
        let mut joined = vec![CANONICAL_FORMAT];
        joined.extend(1234u64.to_be_bytes());
        joined.extend(canonical_string(stream.as_str()));
        joined.extend(5u64.to_be_bytes());
        joined.extend(canonical_body(&Body::from(&new)));
        assert_eq!(joined, canonical_bytes(&recorded));
        assert_eq!(
            canonical_body(&Body::from(&new)),
            canonical_body(&Body::from(&recorded))
        );
    }
}
