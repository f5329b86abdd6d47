//! The store conformance suite. Every [`EventStore`] backend runs all of it,
//! through [`store_conformance_suite!`](crate::store_conformance_suite):
//!
//! ```ignore
//! tenure::store_conformance_suite!(make_store());
//! ```
//!
//! where the expression yields `(Arc<dyn EventStore>, guard)` and `guard`
//! keeps whatever the store needs (a temporary directory) alive.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tenure_events::{AccountId, ChainHash, ChainHead, NewEvent, RecordedEvent, StreamId};
use uuid::Uuid;

use super::{AppendError, EventStore, ExpectedVersion};

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + s, 123_456_000).unwrap_or_default()
}

/// A test event; the store never looks inside payloads.
pub fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "TestEvent".into(),
        schema_version: 1,
        time: at(n as i64),
        account: AccountId::default_account(),
        request_id: None,
        causation_id: None,
        payload: format!(r#"{{"n":{n}}}"#),
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::new(format!("test/{name}")).expect("valid stream name")
}

fn n_of(e: &RecordedEvent) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&e.payload).expect("test payloads are JSON");
    v["n"].as_u64().expect("test payloads carry n")
}

async fn append(
    store: &dyn EventStore,
    s: &str,
    expected: ExpectedVersion,
    ns: &[u64],
) -> Result<super::Appended, AppendError> {
    store
        .append(stream(s), expected, ns.iter().map(|n| event(*n)).collect())
        .await
}

/// Every envelope field comes back as written, with stream, version and
/// position assigned.
pub async fn append_and_read_back(store: Arc<dyn EventStore>) {
    let mut e = event(7);
    e.request_id = Some(Uuid::new_v4());
    e.causation_id = Some(Uuid::new_v4());
    e.account = "acme".parse().expect("valid account");
    e.schema_version = 3;
    let written = e.clone();
    let appended = store
        .append(stream("a"), ExpectedVersion::Exact(0), vec![e])
        .await
        .expect("append");
    assert_eq!(
        (appended.first_position, appended.last_position, appended.version),
        (1, 1, 1)
    );
    let read = store.read_stream(&stream("a"), 1, 10).await.expect("read");
    let mut expected = RecordedEvent::from_new(written, stream("a"), 1, 1);
    expected.chain_after(&ChainHash::ZERO);
    assert_eq!(read, vec![expected]);
    assert_eq!(store.head(), 1);
}

/// Appends with the wrong expected version fail with the actual version and
/// write nothing.
pub async fn expected_version_conflicts(store: Arc<dyn EventStore>) {
    append(&*store, "a", ExpectedVersion::Exact(0), &[1, 2])
        .await
        .expect("first append");
    let check = |r: Result<super::Appended, AppendError>, expected: u64| {
        assert_eq!(
            r,
            Err(AppendError::Conflict {
                expected: ExpectedVersion::Exact(expected),
                actual: 2
            })
        );
    };
    check(append(&*store, "a", ExpectedVersion::Exact(0), &[3]).await, 0);
    check(append(&*store, "a", ExpectedVersion::Exact(1), &[3]).await, 1);
    check(append(&*store, "a", ExpectedVersion::Exact(5), &[3]).await, 5);
    let ok = append(&*store, "a", ExpectedVersion::Exact(2), &[3])
        .await
        .expect("right version");
    assert_eq!(ok.version, 3);
    let ok = append(&*store, "a", ExpectedVersion::Any, &[4])
        .await
        .expect("any version");
    assert_eq!(ok.version, 4);
    let all = store.read_all(1, 100).await.expect("read all");
    assert_eq!(all.iter().map(n_of).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

/// Stream reads start at a version and stop at a count; unknown streams are empty.
pub async fn read_stream_ranges(store: Arc<dyn EventStore>) {
    append(&*store, "a", ExpectedVersion::Exact(0), &[1, 2, 3, 4, 5])
        .await
        .expect("append a");
    append(&*store, "b", ExpectedVersion::Exact(0), &[10])
        .await
        .expect("append b");
    let read = store.read_stream(&stream("a"), 3, 2).await.expect("read");
    assert_eq!(
        read.iter().map(|e| (e.version, n_of(e))).collect::<Vec<_>>(),
        vec![(3, 3), (4, 4)]
    );
    assert!(store
        .read_stream(&stream("a"), 6, 10)
        .await
        .expect("read past end")
        .is_empty());
    assert!(store
        .read_stream(&stream("nope"), 1, 10)
        .await
        .expect("read unknown")
        .is_empty());
}

/// `$all` interleaves streams in append order with contiguous positions.
pub async fn read_all_across_streams(store: Arc<dyn EventStore>) {
    append(&*store, "a", ExpectedVersion::Exact(0), &[1])
        .await
        .expect("append");
    append(&*store, "b", ExpectedVersion::Exact(0), &[2, 3])
        .await
        .expect("append");
    append(&*store, "a", ExpectedVersion::Exact(1), &[4])
        .await
        .expect("append");
    let all = store.read_all(1, 100).await.expect("read all");
    let got: Vec<_> = all
        .iter()
        .map(|e| (e.position, e.stream.as_str().to_owned(), e.version, n_of(e)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "test/a".to_owned(), 1, 1),
            (2, "test/b".to_owned(), 1, 2),
            (3, "test/b".to_owned(), 2, 3),
            (4, "test/a".to_owned(), 2, 4),
        ]
    );
    let tail = store.read_all(3, 1).await.expect("read tail");
    assert_eq!(tail.iter().map(n_of).collect::<Vec<_>>(), vec![3]);
    assert_eq!(store.head(), 4);
}

/// A subscription delivers what is in the log, then what is appended later,
/// each event once and in order.
pub async fn subscribe_catches_up_then_follows(store: Arc<dyn EventStore>) {
    append(&*store, "a", ExpectedVersion::Exact(0), &[1, 2])
        .await
        .expect("append");
    let mut sub = store.subscribe_all(1);
    let mut from_middle = store.subscribe_all(2);
    append(&*store, "b", ExpectedVersion::Exact(0), &[3])
        .await
        .expect("append");
    append(&*store, "a", ExpectedVersion::Exact(2), &[4, 5])
        .await
        .expect("append");
    assert_eq!(collect(&mut sub, 5).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(collect(&mut from_middle, 4).await, vec![2, 3, 4, 5]);
    // Live only now.
    let late = tokio::spawn(async move { collect(&mut sub, 1).await });
    append(&*store, "c", ExpectedVersion::Exact(0), &[6])
        .await
        .expect("append");
    assert_eq!(late.await.expect("task"), vec![6]);
}

/// A subscriber that falls far behind the live feed reads the gap from the
/// log and loses nothing.
pub async fn slow_subscriber_loses_nothing(store: Arc<dyn EventStore>) {
    let mut sub = store.subscribe_all(1);
    let total = 3000u64;
    for n in 1..=total {
        append(&*store, "a", ExpectedVersion::Exact(n - 1), &[n])
            .await
            .expect("append");
    }
    assert_eq!(collect(&mut sub, total as usize).await, (1..=total).collect::<Vec<_>>());
}

/// Many tasks appending at once: every acknowledged append is in the log,
/// positions are contiguous and each stream's versions are in order.
pub async fn concurrent_appends_are_durable_and_ordered(store: Arc<dyn EventStore>) {
    let tasks = 64u64;
    let per_task = 20u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let n = t * 1000 + i;
                append(&*store, &format!("s{t}"), ExpectedVersion::Exact(i), &[n])
                    .await
                    .expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let all = store.read_all(1, usize::MAX).await.expect("read all");
    assert_eq!(all.len() as u64, tasks * per_task);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "positions are contiguous");
    }
    let mut seen: HashMap<String, u64> = HashMap::new();
    for e in &all {
        let v = seen.entry(e.stream.as_str().to_owned()).or_default();
        *v += 1;
        assert_eq!(e.version, *v, "versions of {} in order", e.stream);
        assert_eq!(n_of(e) % 1000, e.version - 1);
    }
    assert_eq!(store.head(), tasks * per_task);
}

/// Appends queued together (so a group-committing store takes many of them
/// in one batch) to streams that do not exist yet: each lands in its own
/// stream, in the order queued; of those expecting a new stream, only the
/// first goes through; the streams are then known to later appends.
pub async fn appends_queued_together_to_new_streams(store: Arc<dyn EventStore>) {
    let count = 32u64;
    let mut answers = Vec::new();
    let mut queue = |s: String, expected: ExpectedVersion, n: u64| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.append_then(
            stream(&s),
            expected,
            vec![event(n)],
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        answers.push((s, expected, n, rx));
    };
    for i in 0..count {
        queue("new-a".into(), ExpectedVersion::Any, i);
        queue(format!("new-b{i}"), ExpectedVersion::Exact(0), 100 + i);
        queue("new-c".into(), ExpectedVersion::Exact(0), 200 + i);
    }
    let mut c_won = Vec::new();
    for (s, expected, n, rx) in answers {
        let result = rx.await.expect("answered");
        match (s.as_str(), expected, result) {
            ("new-c", _, Ok(a)) => {
                assert_eq!(a.version, 1);
                c_won.push(n);
            }
            ("new-c", _, Err(AppendError::Conflict { actual, .. })) => assert_eq!(actual, 1),
            (_, _, result) => {
                let appended = result.unwrap_or_else(|e| panic!("append {n} to {s}: {e}"));
                let version = if s == "new-a" { n + 1 } else { 1 };
                assert_eq!(appended.version, version, "{s}");
            }
        }
    }
    assert_eq!(
        c_won,
        vec![200],
        "only the first append expecting a new new-c went through"
    );
    let a = store.read_stream(&stream("new-a"), 1, 1000).await.expect("read");
    assert_eq!(a.iter().map(n_of).collect::<Vec<_>>(), (0..count).collect::<Vec<_>>());
    assert!(a.windows(2).all(|w| w[0].position < w[1].position));
    for i in 0..count {
        let b = store
            .read_stream(&stream(&format!("new-b{i}")), 1, 10)
            .await
            .expect("read");
        assert_eq!(b.iter().map(n_of).collect::<Vec<_>>(), vec![100 + i]);
    }
    let c = store.read_stream(&stream("new-c"), 1, 10).await.expect("read");
    assert_eq!(c.iter().map(n_of).collect::<Vec<_>>(), vec![200]);
    // Known now: the next appends expect their versions.
    let a = append(&*store, "new-a", ExpectedVersion::Exact(count), &[999])
        .await
        .expect("append");
    assert_eq!(a.version, count + 1);
    let c = append(&*store, "new-c", ExpectedVersion::Exact(0), &[998]).await;
    assert!(matches!(c, Err(AppendError::Conflict { actual: 1, .. })), "{c:?}");
    // new-a: count + 1, new-b*: count, new-c: 1.
    assert_eq!(store.head(), 2 * count + 2);
}

/// Writers racing on one stream with the same expected version: exactly one
/// wins each version, the others see a conflict.
pub async fn racing_writers_have_one_winner_per_version(store: Arc<dyn EventStore>) {
    let racers = 16u64;
    let rounds = 10u64;
    for round in 0..rounds {
        let mut handles = Vec::new();
        for r in 0..racers {
            let store = Arc::clone(&store);
            handles.push(tokio::spawn(async move {
                append(&*store, "hot", ExpectedVersion::Exact(round), &[round * 100 + r]).await
            }));
        }
        let mut wins = 0;
        for h in handles {
            match h.await.expect("task") {
                Ok(a) => {
                    wins += 1;
                    assert_eq!(a.version, round + 1);
                }
                Err(AppendError::Conflict { actual, .. }) => assert_eq!(actual, round + 1),
                Err(e) => panic!("unexpected store error {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
    let events = store.read_stream(&stream("hot"), 1, 100).await.expect("read");
    assert_eq!(events.len() as u64, rounds);
}

/// Asserts that `log` (a whole log, from position 1) is one unbroken hash
/// chain, and answers its last link.
pub fn assert_chained(log: &[RecordedEvent]) -> ChainHash {
    let mut link = ChainHash::ZERO;
    for e in log {
        assert_eq!(e.hash, link.next(e), "the link of position {}", e.position);
        link = e.hash;
    }
    link
}

/// Every event carries its link of the hash chain, unbroken across streams
/// and concurrent appends, in what reads and subscriptions deliver alike;
/// the chain head names the last link.
pub async fn events_are_chained(store: Arc<dyn EventStore>) {
    assert_eq!(store.chain_head(), ChainHead::EMPTY);
    let mut sub = store.subscribe_all(1);
    append(&*store, "a", ExpectedVersion::Exact(0), &[1, 2])
        .await
        .expect("append");
    let pending: Vec<_> = (0..32u64)
        .map(|n| {
            store.append(
                stream(&format!("c{n}")),
                ExpectedVersion::Exact(0),
                vec![event(100 + n)],
            )
        })
        .collect();
    for appended in futures::future::join_all(pending).await {
        appended.expect("append");
    }
    append(&*store, "a", ExpectedVersion::Exact(2), &[3])
        .await
        .expect("append");
    let all = store.read_all(1, usize::MAX).await.expect("read all");
    assert_eq!(all.len(), 35);
    let link = assert_chained(&all);
    assert_eq!(
        store.chain_head(),
        ChainHead {
            position: 35,
            hash: link
        }
    );
    let mut followed = Vec::new();
    while followed.len() < all.len() {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next_batch())
            .await
            .expect("subscription delivers within 30 s")
            .expect("subscription works")
            .expect("store stays open");
        followed.extend(batch.iter().cloned());
    }
    assert_eq!(followed, all, "subscriptions deliver the same links");
    let read = store.read_stream(&stream("a"), 1, 10).await.expect("read");
    assert_eq!(read[2].hash, all[34].hash);
}

/// Events are found by the event that caused them.
pub async fn caused_events_are_found_by_their_cause(store: Arc<dyn EventStore>) {
    let causes = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let caused_by = |n: u64, cause: Option<Uuid>| {
        let mut e = event(n);
        e.causation_id = cause;
        e
    };
    let batches = vec![
        ("x", vec![caused_by(1, None), caused_by(2, Some(causes[0]))]),
        ("y", vec![caused_by(3, Some(causes[1])), caused_by(4, Some(causes[0]))]),
        ("x", vec![caused_by(5, Some(causes[2])), caused_by(6, None)]),
    ];
    for (s, events) in batches {
        store
            .append(stream(s), ExpectedVersion::Any, events)
            .await
            .expect("append");
    }
    let found = |causes: Vec<Uuid>| {
        let store = Arc::clone(&store);
        async move {
            store
                .read_caused_by(causes)
                .await
                .expect("read caused")
                .iter()
                .map(n_of)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(found(vec![causes[0]]).await, vec![2, 4]);
    assert_eq!(found(vec![causes[2], causes[0], causes[0]]).await, vec![2, 4, 5]);
    assert_eq!(found(vec![Uuid::new_v4()]).await, Vec::<u64>::new());
    assert_eq!(found(vec![]).await, Vec::<u64>::new());
}

/// Stream names are listed by prefix, in order, up to a count.
pub async fn stream_names_are_listed_by_prefix(store: Arc<dyn EventStore>) {
    for name in ["i/a/web-2", "i/a/web-1", "i/ab/x", "i/b/web-1", "i/a/db", "j/a/z"] {
        append(&*store, name, ExpectedVersion::Exact(0), &[1])
            .await
            .expect("append");
    }
    let names = |prefix: &'static str, max: usize| {
        let store = Arc::clone(&store);
        async move {
            store
                .stream_names(prefix, max)
                .await
                .expect("list streams")
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names("test/i/a/", 10).await,
        vec!["test/i/a/db", "test/i/a/web-1", "test/i/a/web-2"]
    );
    assert_eq!(names("test/i/a/", 2).await, vec!["test/i/a/db", "test/i/a/web-1"]);
    assert_eq!(names("test/i/c/", 10).await, Vec::<String>::new());
    assert_eq!(names("test/", 100).await.len(), 6);
}

async fn collect(sub: &mut super::Subscription, count: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut last = 0;
    while out.len() < count {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next_batch())
            .await
            .expect("subscription delivers within 30 s")
            .expect("subscription works")
            .expect("store stays open");
        for e in batch.iter() {
            assert!(e.position > last, "positions increase");
            last = e.position;
            out.push(n_of(e));
        }
    }
    out
}

/// Generates one test per conformance check for a backend. `$make` is
/// evaluated once per test and yields `(Arc<dyn EventStore>, guard)`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($make:expr) => {
        $crate::store_conformance_suite!(@tests $make;
            append_and_read_back,
            expected_version_conflicts,
            read_stream_ranges,
            read_all_across_streams,
            subscribe_catches_up_then_follows,
            slow_subscriber_loses_nothing,
            concurrent_appends_are_durable_and_ordered,
            racing_writers_have_one_winner_per_version,
            appends_queued_together_to_new_streams,
            events_are_chained,
            caused_events_are_found_by_their_cause,
            stream_names_are_listed_by_prefix,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make;
                $crate::store::conformance::$name(store).await;
            }
        )+
    };
}
