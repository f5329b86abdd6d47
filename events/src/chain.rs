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

use crate::RecordedEvent;

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
    fn string(out: &mut impl Sink, s: &str) {
        // Every string of an envelope is far below 4 GiB (payloads are
        // bounded by the API's body limit), so the length fits.
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        out.put(&len.to_be_bytes());
        out.put(s.as_bytes());
    }
    fn optional_uuid(out: &mut impl Sink, id: Option<&uuid::Uuid>) {
        match id {
            None => out.put(&[0]),
            Some(id) => {
                out.put(&[1]);
                out.put(id.as_bytes());
            }
        }
    }
    out.put(&[CANONICAL_FORMAT]);
    out.put(&event.position.to_be_bytes());
    string(out, event.stream.as_str());
    out.put(&event.version.to_be_bytes());
    out.put(event.event_id.as_bytes());
    string(out, &event.event_type);
    out.put(&event.schema_version.to_be_bytes());
    out.put(&event.time.timestamp_micros().to_be_bytes());
    string(out, event.account.as_str());
    optional_uuid(out, event.request_id.as_ref());
    optional_uuid(out, event.causation_id.as_ref());
    string(out, &event.payload);
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
}
