//! A key space in a snapshot: the form it is encoded in
//! ([`KeyspaceSnapshot`], written without copying a key by [`SnapshotOf`])
//! and the checked restore from it.

use std::collections::BTreeMap;

use tenure_events::{Bytes, LeaseId};
use tenure_projections::compact::Inserts;

use super::{Key, KeyValue, Keyspace};

impl Keyspace {
    /// What the key space holds, to be encoded as a [`KeyspaceSnapshot`]
    /// (which it serializes exactly as), without copying a key.
    pub fn snapshot(&self) -> SnapshotOf<'_> {
        SnapshotOf(self)
    }

    /// The key space a snapshot holds, its index by lease rebuilt. Checks
    /// what it reads: a snapshot comes from disk.
    pub fn restore(snapshot: KeyspaceSnapshot) -> Result<Keyspace, String> {
        let revision = snapshot.revision;
        if revision < 1 {
            return Err(format!("revision {revision} is below 1"));
        }
        if snapshot.keys.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err("keys are not in strictly increasing order".into());
        }
        let mut state = Keyspace {
            revision,
            ..Keyspace::default()
        };
        let mut kvs = Vec::with_capacity(snapshot.keys.len());
        for (key, value, create_revision, mod_revision, version, lease) in snapshot.keys {
            let key = key.0;
            if key.as_slice().is_empty() {
                return Err("an empty key".into());
            }
            if !(1 <= create_revision && create_revision <= mod_revision && mod_revision <= revision && version >= 1) {
                return Err(format!(
                    "key {key:?} has revisions {create_revision}..{mod_revision} and version {version} at revision {revision}"
                ));
            }
            let lease = match lease {
                Some(raw) => Some(LeaseId::new(raw).ok_or_else(|| format!("lease ID {raw} is not positive"))?),
                None => None,
            };
            if let Some(lease) = lease {
                state.attach(key.clone(), lease);
            }
            let kv = KeyValue {
                value: Bytes(value.0),
                create_revision,
                mod_revision,
                version,
                lease,
            };
            kvs.push((key, kv));
        }
        // In key order (checked above): built in one pass, not key by key;
        // the index by lease was built key by key, in no order of leases.
        state.kvs = kvs.into_iter().collect();
        tenure_projections::compact::rebuild(&mut state.by_lease);
        state.inserts = Inserts::default();
        Ok(state)
    }
}

/// A key space as a snapshot stores it: its revision and every key with
/// `(key, value, create_revision, mod_revision, version, lease)`, in key
/// order. Changing it changes the encoding: bump
/// `crate::snapshot::FORMAT_VERSION` with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyspaceSnapshot {
    pub revision: i64,
    pub keys: Vec<SnapshotKey>,
}

/// One key of a [`KeyspaceSnapshot`].
pub type SnapshotKey = (KeyBlob, Blob, i64, i64, i64, Option<i64>);

/// A key in a [`KeyspaceSnapshot`]: encoded as a [`Blob`], decoded straight
/// into the form a key space keeps (a short key inline), so that a restore
/// allocates no key only to drop it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyBlob(Key);

impl KeyBlob {
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl From<Vec<u8>> for KeyBlob {
    fn from(key: Vec<u8>) -> KeyBlob {
        KeyBlob(Key::from_vec(key))
    }
}

impl serde::Serialize for KeyBlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_slice())
    }
}

impl<'de> serde::Deserialize<'de> for KeyBlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyBlob, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = KeyBlob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<KeyBlob, E> {
                Ok(KeyBlob(Key::new(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<KeyBlob, E> {
                Ok(KeyBlob::from(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// A borrowed key space that serializes as a [`KeyspaceSnapshot`].
pub struct SnapshotOf<'a>(&'a Keyspace);

impl serde::Serialize for SnapshotOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Keys<'a>(&'a BTreeMap<Key, KeyValue>);
        impl serde::Serialize for Keys<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(k, kv)| {
                    (
                        BlobRef(k.as_slice()),
                        BlobRef(kv.value.as_slice()),
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                        kv.lease.map(LeaseId::get),
                    )
                }))
            }
        }
        let mut st = s.serialize_struct("KeyspaceSnapshot", 2)?;
        st.serialize_field("revision", &self.0.revision)?;
        st.serialize_field("keys", &Keys(&self.0.kvs))?;
        st.end()
    }
}

/// Bytes that a binary encoding writes as one byte string (not a sequence
/// of numbers, one call each).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

struct BlobRef<'a>(&'a [u8]);

impl serde::Serialize for BlobRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}
