//! The in-memory test helper passes the same conformance suite, which shows
//! the suite assumes nothing backend specific.

use std::sync::Arc;

use tenure::store::{EventStore, MemoryStore};

fn make() -> (Arc<dyn EventStore>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

tenure::store_conformance_suite!(make());
