//! The store conformance suite on EventStoreDB / KurrentDB (cargo feature
//! `esdb`), against the server at `TENURE_ESDB_URL`
//! (`esdb://127.0.0.1:2113?tls=false`). No such server can be installed on
//! the machines this project is built on: there every test here says it
//! skipped and why.

#[cfg(feature = "esdb")]
mod esdb {
    use std::sync::Arc;

    use tenure::store::{EsdbStore, EventStore};

    /// A store on a fresh log stream, or `None` (skipped) without a server.
    fn store() -> Option<(Arc<dyn EventStore>, ())> {
        let Ok(url) = std::env::var("TENURE_ESDB_URL") else {
            eprintln!("skipped: TENURE_ESDB_URL is not set (no EventStoreDB server on this machine)");
            return None;
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}stream=tenure-test-{}", uuid::Uuid::new_v4().simple());
        let store = EsdbStore::open(&url).unwrap_or_else(|e| panic!("EventStoreDB at {url}: {e}"));
        Some((Arc::new(store), ()))
    }

    tenure::store_conformance_suite!(match store() {
        Some(made) => made,
        None => return,
    });
}

#[cfg(not(feature = "esdb"))]
#[test]
fn eventstoredb_conformance_is_skipped_without_the_esdb_feature() {
    eprintln!(
        "skipped: built without the `esdb` feature; run \
         `TENURE_ESDB_URL=esdb://HOST:2113?tls=false cargo nextest run --features esdb -E 'binary(store_esdb)'`"
    );
}
