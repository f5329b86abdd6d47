//! The PostgreSQL backend against the store conformance suite, on the
//! machine's real PostgreSQL (`TENURE_PG_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a fresh schema
//! dropped at its end; plus what only a shared store promises: several
//! writers (nodes) on one log, and a follower that never misses an event.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use tenure::store::conformance::{assert_chained, event};
use tenure::store::{AppendError, EventStore, ExpectedVersion, PostgresStore, StoreError};
use tenure_events::StreamId;

use common::pg::Schema;

fn make() -> (Arc<dyn EventStore>, Schema) {
    let schema = Schema::fresh();
    let store = schema.open();
    (Arc::new(store), schema)
}

tenure::store_conformance_suite!(make());

fn stream(n: u64) -> StreamId {
    StreamId::new(format!("test/{n}")).expect("valid stream")
}

/// Appends `events` events round-robin to streams 0..`streams` through a
/// store of its own, closed at the end.
async fn append_and_close(schema: &Schema, events: u64, streams: u64) {
    let store = schema.open();
    for n in 0..events {
        store
            .append(stream(n % streams), ExpectedVersion::Any, vec![event(n)])
            .await
            .expect("append");
    }
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_reopening_and_the_chain_continues() {
    let schema = Schema::fresh();
    append_and_close(&schema, 50, 5).await;
    let store = schema.open();
    assert_eq!(store.head(), 50);
    let appended = store
        .append(stream(0), ExpectedVersion::Exact(10), vec![event(99)])
        .await
        .expect("append");
    assert_eq!((appended.last_position, appended.version), (51, 11));
    let all = store.read_all(1, 1000).await.expect("read");
    assert_eq!(store.chain_head().hash, assert_chained(&all));
    store.close();
}

/// A writer answers most batches in one statement that takes every stream
/// it does not remember as new (`tenure_append_v1`). A reopened store
/// remembers none: an append to an existing stream must still continue
/// its version (the statement fails on the stream's name and the batch is
/// written the long way), an exact expectation must still be checked
/// against the log, and new streams appended at the same moment, possibly
/// in the same batch, must be written once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_writer_takes_no_existing_stream_for_new() {
    let schema = Schema::fresh();
    append_and_close(&schema, 30, 3).await;
    let store = Arc::new(schema.open());
    let appended = store
        .append(stream(0), ExpectedVersion::Any, vec![event(100)])
        .await
        .expect("append to an existing stream the writer does not remember");
    assert_eq!((appended.last_position, appended.version), (31, 11));
    match store
        .append(stream(1), ExpectedVersion::Exact(0), vec![event(101)])
        .await
    {
        Err(AppendError::Conflict { actual: 10, .. }) => {}
        other => panic!("stream 1 holds 10 events: {other:?}"),
    }
    // Twenty new streams and one old one at once.
    let mut appends = Vec::new();
    for n in 10..30 {
        let store = Arc::clone(&store);
        appends.push(tokio::spawn(async move {
            store.append(stream(n), ExpectedVersion::Exact(0), vec![event(n)]).await
        }));
    }
    let old = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.append(stream(2), ExpectedVersion::Any, vec![event(102)]).await })
    };
    for append in appends {
        let appended = append.await.expect("task").expect("a new stream's first append");
        assert_eq!(appended.version, 1);
    }
    let appended = old.await.expect("task").expect("append to stream 2");
    assert_eq!(appended.version, 11);
    for n in 0..30 {
        let events = store.read_stream(&stream(n), 1, 100).await.expect("read");
        let want = match n {
            1 => 10,
            0 | 2 => 11,
            3..10 => 0,
            _ => 1,
        };
        assert_eq!(events.len(), want, "stream {n}");
    }
    assert_eq!(store.head(), 52);
    store.close();
}

/// Two nodes on one log: each sees the other's appends in the stream's
/// version (a stale cache would let both append version 1), and a
/// subscription on one follows what the other writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_versions_and_follow_each_other() {
    let schema = Schema::fresh();
    let (a, b) = (schema.open(), schema.open());
    let s = stream(1);
    a.append(s.clone(), ExpectedVersion::Exact(0), vec![event(1)])
        .await
        .expect("a appends version 1");
    match b.append(s.clone(), ExpectedVersion::Exact(0), vec![event(2)]).await {
        Err(AppendError::Conflict { actual: 1, .. }) => {}
        other => panic!("b must see a's version 1: {other:?}"),
    }
    b.append(s.clone(), ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .expect("b appends version 2");
    // a learned nothing from b directly: its next append must still see 2.
    match a.append(s.clone(), ExpectedVersion::Exact(1), vec![event(3)]).await {
        Err(AppendError::Conflict { actual: 2, .. }) => {}
        other => panic!("a must see b's version 2: {other:?}"),
    }
    let mut follow = a.subscribe_all(1);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), follow.next_batch())
            .await
            .expect("a follows b's append")
            .expect("read")
            .expect("open");
        seen.extend(batch.iter().map(|e| (e.position, e.version)));
    }
    assert_eq!(seen, vec![(1, 1), (2, 2)]);
    assert_eq!(a.head(), 2, "a's head moved with b's append");
    a.close();
    b.close();
}

/// The gap race: 16 writers (16 stores, each its own connection and
/// transactions, as 16 nodes) append 50,000 events at once while a
/// follower on another store, and a plain reader following "position >
/// last seen" in SQL, read along. Both see every position exactly once,
/// in order: no event commits late under a smaller position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_writers_and_a_follower_see_every_position_once_in_order() {
    const WRITERS: u64 = 16;
    const EVENTS: u64 = 50_000;
    const IN_FLIGHT: usize = 64;
    let schema = Schema::fresh();
    let follower = schema.open();
    let writers: Vec<PostgresStore> = (0..WRITERS).map(|_| schema.open()).collect();

    // A plain SQL follower on a thread of its own.
    let url = schema.url().replace(&format!("?schema={}", schema.name), "");
    let table = format!("\"{}\".events", schema.name);
    let sql_follower = std::thread::spawn(move || -> Result<Vec<i64>, String> {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        let mut last = 0i64;
        let started = std::time::Instant::now();
        while last < EVENTS as i64 {
            if started.elapsed() > std::time::Duration::from_secs(300) {
                return Err(format!("stuck at {last}"));
            }
            let rows = client
                .query(
                    &format!("SELECT position FROM {table} WHERE position > $1 ORDER BY position LIMIT 10000"),
                    &[&last],
                )
                .map_err(|e| e.to_string())?;
            for row in rows {
                let p: i64 = row.get(0);
                seen.push(p);
                last = p;
            }
        }
        Ok(seen)
    });

    let mut follow = follower.subscribe_all(1);
    let reading = tokio::spawn(async move {
        let mut positions = Vec::new();
        while (positions.len() as u64) < EVENTS {
            let batch = tokio::time::timeout(std::time::Duration::from_secs(60), follow.next_batch())
                .await
                .map_err(|_| format!("no event for 60 s after {}", positions.len()))?
                .map_err(|e: StoreError| e.to_string())?
                .ok_or("closed")?;
            positions.extend(batch.iter().map(|e| e.position));
        }
        Ok::<_, String>(positions)
    });

    let mut tasks = Vec::new();
    for (w, store) in writers.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let per_writer = EVENTS / WRITERS;
            let mut n = 0;
            while n < per_writer {
                let chunk: Vec<_> = (n..(n + IN_FLIGHT as u64).min(per_writer))
                    .map(|i| {
                        let id = w as u64 * 1_000_000 + i;
                        store.append(stream(id % 97), ExpectedVersion::Any, vec![event(id)])
                    })
                    .collect();
                n += chunk.len() as u64;
                for result in futures::future::join_all(chunk).await {
                    result.expect("append");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let expected: Vec<u64> = (1..=EVENTS).collect();
    let positions = reading.await.expect("follower task").expect("follower");
    assert_eq!(positions.len(), expected.len());
    assert!(
        positions == expected,
        "the subscription saw positions out of order or twice"
    );
    let sql_seen = sql_follower.join().expect("sql follower").expect("sql follower");
    let sql_expected: Vec<i64> = (1..=EVENTS as i64).collect();
    assert!(
        sql_seen == sql_expected,
        "the SQL follower skipped or repeated a position"
    );
    // The chain is whole across the writers' interleaved batches.
    let all = follower.read_all(1, usize::MAX).await.expect("read");
    assert_chained(&all);
    let streams: BTreeSet<&str> = all.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams.len(), 97);
    for store in writers {
        store.close();
    }
    follower.close();
}

#[test]
fn a_bad_url_or_schema_is_a_clear_error() {
    let err = PostgresStore::open("postgres://postgres@127.0.0.1:5432/test?schema=Bad-Name")
        .err()
        .expect("refused");
    assert!(err.to_string().contains("schema"), "{err}");
    let err = PostgresStore::open("postgres://postgres@127.0.0.1:1/test")
        .err()
        .expect("nothing listens on port 1");
    assert!(err.to_string().contains("cannot connect to PostgreSQL"), "{err}");
}

/// Reading a page of `$all` near the head (what every node does after
/// each batch another node appends) walks the position index and finds
/// each stream's name by its key: no sequential scan of `events` or
/// `streams`, even on a young schema PostgreSQL has no statistics for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_page_of_the_log_scans_no_table() {
    let schema = Schema::fresh();
    let store = schema.open();
    let streams = 2_000;
    let writes: Vec<_> = (0..streams)
        .map(|n| store.append(stream(n), ExpectedVersion::Exact(0), vec![event(n), event(n + 1)]))
        .collect();
    for write in writes {
        write.await.expect("append");
    }
    let from = store.head() - 10;
    let sql = tenure::store::pg::READ_PAGE
        .replace("$1", &from.to_string())
        .replace("$2", &(from + 4096).to_string())
        .replace("$3", "4096");
    let plan = schema.explain(&sql);
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("events_pkey") || plan.contains("Index"), "{plan}");
    let page = store.read_all(from, 4096).await.expect("read");
    assert_eq!(page.len(), 11);
    assert_eq!(page.first().map(|e| e.position), Some(from));
    store.close();
}

/// A batch PostgreSQL places (its writer had not seen another store's
/// append) reaches the other store through its notification, not a read,
/// and what that store follows is exactly what the log holds: every field,
/// the link in the chain, a payload with escapes and non-ASCII text, the
/// optional ids.
#[tokio::test]
async fn events_followed_from_a_notification_are_the_logs() {
    let schema = Schema::fresh();
    let metrics = tenure::metrics::Metrics::new();
    let a = PostgresStore::open_target(schema.target(), Some(metrics.store.clone())).expect("a opens");
    let b = schema.open();
    b.append(stream(1), ExpectedVersion::Any, vec![event(1)])
        .await
        .expect("b appends");
    let mut follow = a.subscribe_all(1);
    let mut seen = Vec::new();
    while seen.is_empty() {
        seen.extend(next(&mut follow).await);
    }
    // a's writer has not seen b's append: PostgreSQL places a's batch. Then
    // b's writer has not seen a's: PostgreSQL places b's too, and a follows
    // it from its notification.
    a.append(stream(2), ExpectedVersion::Any, vec![event(2), event(3)])
        .await
        .expect("a appends");
    let mut rich = event(4);
    rich.request_id = Some(uuid::Uuid::new_v4());
    rich.causation_id = Some(uuid::Uuid::new_v4());
    rich.payload = r#"{"s":"é \"/\\ ☃ \u0001","n":[1,2.5,null],"x":{}}"#.into();
    b.append(stream(1), ExpectedVersion::Exact(1), vec![rich, event(5)])
        .await
        .expect("b appends again");
    while seen.len() < 5 {
        seen.extend(next(&mut follow).await);
    }
    let log = a.read_all(1, 10).await.expect("read the log");
    assert_eq!(seen, log);
    assert_eq!(
        metrics.store.followed.with_label_values(&["notice"]).get(),
        2,
        "a read b's placed batch from the log instead of its notification"
    );
    a.close();
    b.close();
}

async fn next(follow: &mut tenure::store::Subscription) -> Vec<tenure_events::RecordedEvent> {
    tokio::time::timeout(std::time::Duration::from_secs(10), follow.next_batch())
        .await
        .expect("follows")
        .expect("read")
        .expect("open")
        .to_vec()
}

/// A writer that has not seen another's appends sends a large batch (over
/// 32 requests, queued at once): PostgreSQL places it after the head,
/// with each stream's version as the log has it, conflicts decided in
/// order within the batch, new streams created, and the chain the writer
/// checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_from_a_writer_behind_the_log_is_placed_in_order() {
    let schema = Schema::fresh();
    let (a, b) = (schema.open(), schema.open());
    for n in 0..40 {
        b.append(stream(n), ExpectedVersion::Any, vec![event(n)])
            .await
            .expect("b appends");
    }
    // a's writer still takes the head for 0: every request is queued before
    // it wakes, most of them in one batch.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut requests = Vec::new();
    for n in 0..40 {
        requests.push((stream(n), ExpectedVersion::Exact(1)));
    }
    for n in 0..40 {
        requests.push((stream(n), ExpectedVersion::Exact(1)));
    }
    for n in 40..60 {
        requests.push((stream(n), ExpectedVersion::Exact(0)));
    }
    for (i, (s, expected)) in requests.iter().enumerate() {
        let tx = tx.clone();
        a.append_then(
            s.clone(),
            *expected,
            vec![event(100 + i as u64)],
            Box::new(move |outcome| {
                let _ = tx.send((i, outcome));
            }),
        );
    }
    drop(tx);
    let mut outcomes = vec![None; requests.len()];
    while let Some((i, outcome)) = rx.recv().await {
        outcomes[i] = Some(outcome);
    }
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (0..40, Some(Ok(appended))) => assert_eq!(appended.version, 2, "request {i}"),
            (40..80, Some(Err(AppendError::Conflict { actual: 2, .. }))) => {}
            (80..100, Some(Ok(appended))) => assert_eq!(appended.version, 1, "request {i}"),
            (i, other) => panic!("request {i}: {other:?}"),
        }
    }
    for n in 0..60 {
        let events = a.read_stream(&stream(n), 1, 10).await.expect("read");
        assert_eq!(events.len(), if n < 40 { 2 } else { 1 }, "stream {n}");
    }
    assert_eq!(a.head(), 100);
    assert_chained(&a.read_all(1, 200).await.expect("the log"));
    a.close();
    b.close();
}
