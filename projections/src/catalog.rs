use std::collections::BTreeSet;

use tenure_events::{AccountId, RecordedEvent};

use crate::Projection;

/// Which accounts have a key space stream: the entities the server must
/// activate at start-up to check that no key is left on an ended lease.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Catalog {
    checkpoint: u64,
    keyspaces: BTreeSet<AccountId>,
}

impl Catalog {
    pub fn keyspaces(&self) -> impl Iterator<Item = &AccountId> {
        self.keyspaces.iter()
    }

    pub fn snapshot(&self) -> Vec<AccountId> {
        self.keyspaces.iter().cloned().collect()
    }

    pub fn restore(keyspaces: Vec<AccountId>, checkpoint: u64) -> Catalog {
        Catalog {
            checkpoint,
            keyspaces: keyspaces.into_iter().collect(),
        }
    }
}

impl Projection for Catalog {
    const NAME: &'static str = "catalog";

    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn apply(&mut self, event: &RecordedEvent) {
        if !crate::advance(&mut self.checkpoint, event) {
            return;
        }
        if event.stream.category() == "keyspace" && !self.keyspaces.contains(&event.account) {
            self.keyspaces.insert(event.account.clone());
        }
    }
}
