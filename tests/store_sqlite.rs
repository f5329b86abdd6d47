//! The SQLite backend against the store conformance suite, plus what only a
//! disk backend promises: durability across reopen and group commit.

use std::sync::Arc;

use tenure::store::conformance::{assert_chained, event};
use tenure::store::{EventStore, ExpectedVersion, SqliteStore};
use tenure_events::StreamId;

fn make() -> (Arc<dyn EventStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    (Arc::new(store), dir)
}

tenure::store_conformance_suite!(make());

fn stream(n: u64) -> StreamId {
    StreamId::new(format!("test/{n}")).expect("valid stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = SqliteStore::open(dir.path()).expect("open");
        for n in 0..50 {
            store
                .append(stream(n % 5), ExpectedVersion::Any, vec![event(n)])
                .await
                .expect("append");
        }
        store.close();
    }
    let store = SqliteStore::open(dir.path()).expect("reopen");
    assert_eq!(store.head(), 50);
    let all = store.read_all(1, 1000).await.expect("read");
    assert_eq!(all.len(), 50);
    // New appends continue the positions, versions and the hash chain.
    let appended = store
        .append(stream(0), ExpectedVersion::Exact(10), vec![event(99)])
        .await
        .expect("append");
    assert_eq!((appended.last_position, appended.version), (51, 11));
    let all = store.read_all(1, 1000).await.expect("read");
    assert_eq!(store.chain_head().hash, assert_chained(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_arrive_together_share_a_commit() {
    let (dir, appends) = (tempfile::tempdir().expect("temp dir"), 1000u64);
    let store = SqliteStore::open(dir.path()).expect("open");
    // Every append is queued before any is awaited: they arrive together.
    let pending: Vec<_> = (0..appends)
        .map(|n| store.append(stream(n), ExpectedVersion::Exact(0), vec![event(n)]))
        .collect();
    for result in futures::future::join_all(pending).await {
        result.expect("append");
    }
    let stats = store.stats();
    assert_eq!(stats.events, appends);
    assert!(
        stats.commits * 10 <= appends,
        "{} appends took {} commits; group commit should need far fewer",
        appends,
        stats.commits
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_refuses_appends_and_ends_subscriptions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    store
        .append(stream(1), ExpectedVersion::Any, vec![event(1)])
        .await
        .expect("append");
    let mut sub = store.subscribe_all(1);
    store.close();
    // The subscription ends without an error (it may deliver what was
    // committed before the close first).
    let mut delivered = 0;
    while let Some(batch) = sub.next_batch().await.expect("ends cleanly") {
        delivered += batch.len();
        assert!(delivered <= 1);
    }
    assert!(store
        .append(stream(1), ExpectedVersion::Any, vec![event(2)])
        .await
        .is_err());
    assert!(store.health().is_err());
}

#[test]
fn a_data_dir_that_cannot_be_created_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let err = SqliteStore::open(&file.path().join("sub"))
        .err()
        .expect("cannot open under a file");
    assert!(err.to_string().contains("cannot create data directory"), "{err}");
}
