//! Fingerprints of projections, to compare one folded by a running server
//! with one rebuilt from the log (`tenure verify --endpoint`).
//!
//! A digest is the SHA-256 of the canonical JSON of what a projection
//! holds: its entries in a fixed order, leaving out what only serves
//! speed (heaps, secondary indexes) and what the log does not determine:
//! lease deadlines count from the process start and keep-alives move them
//! in memory only, so the expiry queue's digest covers the live lease set
//! and TTLs, never deadlines or *ending* marks. A server whose leases are
//! being kept alive digests the same as a rebuild from its log.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{Catalog, Directory, ExpiryQueue, Projection, RoutingTable, Services, Shares, Workloads};

/// A projection whose state can be compared across processes.
pub trait Digest: Projection {
    /// Lowercase hex SHA-256 of the projection's canonical JSON.
    fn digest(&self) -> String;
}

fn of(value: &impl Serialize) -> String {
    // Views hold strings, numbers, times and string-keyed maps only, which
    // always serialize; an empty input still gives a digest that can differ.
    let json = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

impl Digest for ExpiryQueue {
    fn digest(&self) -> String {
        of(&self.live_leases())
    }
}

impl Digest for Catalog {
    fn digest(&self) -> String {
        of(&self.keyspaces().collect::<Vec<_>>())
    }
}

impl Digest for Directory {
    fn digest(&self) -> String {
        of(&self.accounts().collect::<Vec<_>>())
    }
}

impl Digest for Shares {
    fn digest(&self) -> String {
        of(&self.all().collect::<Vec<_>>())
    }
}

impl Digest for Services {
    fn digest(&self) -> String {
        of(&(
            self.all_services().collect::<Vec<_>>(),
            self.all_instances().collect::<Vec<_>>(),
        ))
    }
}

impl Digest for Workloads {
    fn digest(&self) -> String {
        of(&self.all().collect::<Vec<_>>())
    }
}

impl Digest for RoutingTable {
    fn digest(&self) -> String {
        of(&self.routes())
    }
}
