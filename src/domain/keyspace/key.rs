//! How a key space keeps a key: short keys inline, longer ones in one
//! allocation of their exact size.

use std::borrow::Borrow;

use tenure_events::Bytes;

/// A key as a key space keeps it: up to [`Key::INLINE_MAX`] bytes in the
/// value itself, a longer one in one allocation of its exact size. Every
/// key with a lease is kept twice (in the map and in its lease's keys), and
/// the keys of a registry are mostly short (`service/web/3`): inline, such
/// a key costs no allocation, where a `Vec<u8>` costs 32 bytes of heap
/// beside its 24. Compared and ordered as its bytes.
#[derive(Clone)]
pub(super) enum Key {
    Inline { len: u8, bytes: [u8; Key::INLINE_MAX] },
    Heap(Box<[u8]>),
}

impl Key {
    /// The longest key kept inline: what fits in 24 bytes with the length
    /// and the variant's tag.
    pub(super) const INLINE_MAX: usize = 22;

    pub(super) fn new(key: &[u8]) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= Key::INLINE_MAX => {
                let mut bytes = [0; Key::INLINE_MAX];
                bytes[..key.len()].copy_from_slice(key);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(key.into()),
        }
    }

    pub(super) fn from_vec(key: Vec<u8>) -> Key {
        if key.len() <= Key::INLINE_MAX {
            Key::new(&key)
        } else {
            Key::Heap(key.into_boxed_slice())
        }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }

    pub(super) fn to_bytes(&self) -> Bytes {
        Bytes(self.as_slice().to_vec())
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_slice()))
    }
}
