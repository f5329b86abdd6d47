//! Big B-trees rebuilt with full nodes now and then.
//!
//! Rust's `BTreeMap` splits a full node in the middle, so entries inserted
//! in increasing order (lease IDs, which the server hands out in order, and
//! keys written in order) leave each node about half full (6 of its 11
//! slots), and random inserts about two thirds: a million leases then take
//! close to twice the memory of the same map built in one pass (`collect`
//! of sorted entries fills every node, and is how a snapshot restores one).
//!
//! A structure that holds such maps counts the entries it inserts
//! ([`Inserts`]) and, at a moment it walks every entry anyway (taking a
//! snapshot), rebuilds them ([`rebuild`]) once the inserts since the last
//! rebuild reach an eighth of the map and the map is big enough to matter:
//! O(n) work per n/8 inserts, like the snapshot itself. Removals need no
//! count: a B-tree merges nodes that fall below half full.

use std::collections::{BTreeMap, BTreeSet};

/// Entries a map must hold before a rebuild is worth it (a few hundred
/// KiB of nodes at most below it).
pub const MIN_LEN: usize = 4096;

/// Entries inserted since the last rebuild. Bookkeeping, not state: two
/// structures holding the same entries are equal whatever their counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inserts(usize);

impl Inserts {
    /// One more entry inserted (not one replaced).
    pub fn add(&mut self) {
        self.0 = self.0.saturating_add(1);
    }

    /// Whether maps of `len` entries are due a rebuild; if so, starts
    /// counting again (the caller rebuilds them).
    pub fn due(&mut self, len: usize) -> bool {
        let due = len >= MIN_LEN && self.0 >= len / 8;
        if due {
            self.0 = 0;
        }
        due
    }
}

impl PartialEq for Inserts {
    fn eq(&self, _: &Inserts) -> bool {
        true
    }
}

impl Eq for Inserts {}

/// `map` with the same entries in full nodes (its entries moved once,
/// through a vector).
pub fn rebuild<K: Ord, V>(map: &mut BTreeMap<K, V>) {
    *map = std::mem::take(map).into_iter().collect();
}

/// [`rebuild`] for a set.
pub fn rebuild_set<K: Ord>(set: &mut BTreeSet<K>) {
    *set = std::mem::take(set).into_iter().collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_is_due_after_an_eighth_of_a_big_map_was_inserted() {
        let mut inserts = Inserts::default();
        for _ in 0..MIN_LEN / 8 {
            inserts.add();
        }
        assert!(!inserts.due(MIN_LEN - 1), "a small map is never rebuilt");
        assert!(
            !inserts.due(MIN_LEN * 2),
            "an eighth of a map twice as big is not reached"
        );
        assert!(inserts.due(MIN_LEN));
        assert!(!inserts.due(MIN_LEN), "the count starts again after a rebuild");
    }

    #[test]
    fn a_rebuilt_map_holds_the_same_entries() {
        let mut map: BTreeMap<u64, u64> = (0..10_000).map(|i| (i, i * 3)).collect();
        map.retain(|k, _| k % 7 != 0);
        let before: Vec<(u64, u64)> = map.iter().map(|(k, v)| (*k, *v)).collect();
        rebuild(&mut map);
        assert_eq!(map.into_iter().collect::<Vec<_>>(), before);
        let mut set: BTreeSet<u64> = (0..5000).rev().collect();
        rebuild_set(&mut set);
        assert_eq!(set.into_iter().collect::<Vec<_>>(), (0..5000).collect::<Vec<_>>());
    }
}
