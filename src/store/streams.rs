//! What a writer (SQLite's, PostgreSQL's) remembers of the streams it
//! wrote lately: row id and version, so that an append to a stream it
//! knows needs no read before its insert.
//!
//! **Memory.** Only the streams written lately are kept, in two
//! generations of at most [`GENERATION`] streams each: when the young one
//! is full it becomes the old one and the old one is dropped. A lease's
//! stream gets two events in its life (granted, then revoked or expired,
//! maybe a day later), so remembering every stream cost a million live
//! leases about 120 bytes each (its name and a slot of a table sized for
//! all of them) to save one indexed read when each ends. Streams written
//! again and again (a key space, an account) stay young.

use std::collections::HashMap;

use tenure_events::StreamId;

/// Streams in one generation of the cache.
pub const GENERATION: usize = 1 << 14;

/// Stream name -> state, hashed with foldhash (randomly seeded, and much
/// cheaper than SipHash on the writer's hot path).
pub type StreamMap = HashMap<StreamId, StreamState, foldhash::fast::RandomState>;

/// What the writer knows of a stream: its row id (once it has one) and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamState {
    pub id: Option<i64>,
    pub version: u64,
}

/// The streams written lately (see the module's doc).
#[derive(Default)]
pub struct StreamCache {
    young: StreamMap,
    old: StreamMap,
}

impl StreamCache {
    pub fn get(&self, stream: &StreamId) -> Option<StreamState> {
        self.young.get(stream).or_else(|| self.old.get(stream)).copied()
    }

    pub fn contains(&self, stream: &StreamId) -> bool {
        self.young.contains_key(stream) || self.old.contains_key(stream)
    }

    /// Remembers what a committed transaction wrote (or found).
    pub fn remember(&mut self, touched: StreamMap) {
        if self.young.len() + touched.len() > GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        // A stream also in the old generation is read from the young one
        // first; its old entry goes with that generation.
        self.young.extend(touched);
    }

    /// Forgets every stream (another writer may have written them).
    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    /// Streams remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(i: usize) -> StreamId {
        StreamId::new(format!("lease/a/{i}")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn one(i: usize, version: u64) -> StreamMap {
        let mut map = StreamMap::default();
        map.insert(
            stream(i),
            StreamState {
                id: Some(i as i64),
                version,
            },
        );
        map
    }

    #[test]
    fn streams_written_again_stay_and_the_others_go_after_two_generations() {
        let mut cache = StreamCache::default();
        cache.remember(one(0, 1));
        for i in 1..=2 * GENERATION {
            cache.remember(one(i, 1));
            // Stream 0 is written again every 1,000 streams.
            if i % 1000 == 0 {
                let version = cache.get(&stream(0)).map(|s| s.version).unwrap_or_default();
                assert!(version > 0, "stream 0 was forgotten after {i} streams");
                cache.remember(one(0, version + 1));
            }
        }
        assert_eq!(
            cache.get(&stream(0)).map(|s| s.version),
            Some(1 + 2 * GENERATION as u64 / 1000)
        );
        assert!(
            !cache.contains(&stream(1)),
            "a stream not written for two generations is forgotten"
        );
        assert_eq!(
            cache.get(&stream(2 * GENERATION)),
            Some(StreamState {
                id: Some(2 * GENERATION as i64),
                version: 1
            })
        );
        assert!(cache.len() <= 2 * GENERATION, "{} streams remembered", cache.len());
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
