use std::fmt;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A byte string (an etcd key or value).
///
/// Serialized as a JSON string when it is valid UTF-8, which keeps the log
/// readable, and as `{"base64": "..."}` otherwise, which keeps it exact.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The bytes as text, with invalid UTF-8 replaced (for display only).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl std::borrow::Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Bytes {
    fn from(s: &str) -> Bytes {
        Bytes(s.as_bytes().to_vec())
    }
}

impl From<String> for Bytes {
    fn from(s: String) -> Bytes {
        Bytes(s.into_bytes())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(
                f,
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(&self.0)
            ),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Binary(Base64),
}

/// `{"base64": "..."}` and nothing else: a field we do not know is a
/// mistake, not something to drop.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Base64 {
    base64: String,
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => Repr::Binary(Base64 {
                base64: base64::engine::general_purpose::STANDARD.encode(&self.0),
            })
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(text) => Ok(Bytes(text.into_bytes())),
            Repr::Binary(Base64 { base64 }) => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map(Bytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_a_string_and_binary_is_base64() {
        let check = |bytes: &[u8], json: &str| {
            let b = Bytes(bytes.to_vec());
            assert_eq!(serde_json::to_string(&b).expect("serializes"), json);
            let back: Bytes = serde_json::from_str(json).expect("deserializes");
            assert_eq!(back, b);
        };
        check(b"key1", r#""key1""#);
        check(b"", r#""""#);
        check("日本".as_bytes(), r#""日本""#);
        check(&[0xff, 0x00], r#"{"base64":"/wA="}"#);
    }

    #[test]
    fn bad_base64_is_an_error() {
        assert!(serde_json::from_str::<Bytes>(r#"{"base64":"!!"}"#).is_err());
        assert!(serde_json::from_str::<Bytes>("12").is_err());
        assert!(serde_json::from_str::<Bytes>(r#"{"base64":"/wA=","x":1}"#).is_err());
        assert!(serde_json::from_str::<Bytes>("{}").is_err());
    }
}
