//! etcd's gRPC API through a Rust client (tonic, the messages of
//! `tenure::grpc::pb`), for what `etcdctl` cannot show: several watches on
//! one stream, cancel and progress requests, a duplicate watch ID, a
//! keep-alive stream, bad input, and the auth metadata.

mod common;

use common::{TestServer, ADMIN_TOKEN};
use tenure::grpc::client::{AuthClient, KVClient, LeaseClient, WatchClient};
use tenure::grpc::pb::{self, watch_request::RequestUnion};
use tenure::server::ServerConfig;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Code;

fn with_grpc(config: &mut ServerConfig) {
    config.grpc_listen = Some("127.0.0.1:0".parse().expect("address"));
}

fn with_auth_and_grpc(config: &mut ServerConfig) {
    common::with_auth(config);
    with_grpc(config);
}

async fn channel(server: &TestServer) -> Channel {
    let addr = server.running().grpc_addr.expect("gRPC is served");
    Channel::from_shared(format!("http://{addr}"))
        .expect("URI")
        .connect()
        .await
        .expect("connect")
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn create(key: &str, range_end: &str, watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.into(),
            range_end: range_end.into(),
            watch_id,
            prev_kv: true,
            ..Default::default()
        })),
    }
}

/// A watch stream: requests sent on `tx`, responses read from `rx`.
struct Stream {
    tx: mpsc::Sender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(channel: Channel) -> Stream {
        let (tx, requests) = mpsc::channel(16);
        let requests = futures::stream::unfold(requests, |mut r| async move { r.recv().await.map(|x| (x, r)) });
        let rx = WatchClient::new(channel)
            .watch(requests)
            .await
            .expect("watch stream")
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, request: pb::WatchRequest) {
        self.tx.send(request).await.expect("send");
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(common::PATIENCE, self.rx.message())
            .await
            .expect("an answer in time")
            .expect("a readable stream")
            .expect("an open stream")
    }
}

#[actix_rt::test]
async fn watches_share_a_stream_and_answer_cancel_progress_and_duplicate_ids() {
    let server = TestServer::start_with(with_grpc).await;
    let channel = channel(&server).await;
    let mut kv = KVClient::new(channel.clone());
    let mut stream = Stream::open(channel).await;

    stream.send(create("a", "b", 0)).await;
    let first = stream.next().await;
    assert!(first.created && !first.canceled, "{first:?}");
    stream.send(create("ab", "", 0)).await;
    let second = stream.next().await;
    assert_eq!((second.created, second.watch_id), (true, first.watch_id + 1));
    stream.send(create("zz", "", 7)).await;
    assert_eq!(stream.next().await.watch_id, 7);
    stream.send(create("zz", "", 7)).await;
    let duplicate = stream.next().await;
    assert!(
        duplicate.created && duplicate.canceled && duplicate.watch_id == -1,
        "{duplicate:?}"
    );
    assert!(duplicate.cancel_reason.contains("duplicate watch ID"), "{duplicate:?}");

    kv.put(put("ab", "1")).await.expect("put");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let response = stream.next().await;
        assert_eq!(response.events.len(), 1, "{response:?}");
        seen.push(response.watch_id);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![first.watch_id, second.watch_id], "both watches saw the put");

    // Cancelled, the first watch sees no more; the second still does.
    stream
        .send(pb::WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
                watch_id: first.watch_id,
            })),
        })
        .await;
    let cancelled = stream.next().await;
    assert_eq!((cancelled.canceled, cancelled.watch_id), (true, first.watch_id));
    let done = kv.put(put("ab", "2")).await.expect("put").into_inner();
    let next = stream.next().await;
    assert_eq!(next.watch_id, second.watch_id);
    let event = &next.events[0];
    assert_eq!(event.kv.as_ref().map(|kv| kv.value.clone()), Some(b"2".to_vec()));
    assert_eq!(event.prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b"1".to_vec()));

    // A progress request: the current revision, for no one watch.
    stream
        .send(pb::WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
        })
        .await;
    let progress = stream.next().await;
    assert_eq!(progress.watch_id, -1);
    assert!(progress.events.is_empty());
    let revision = done.header.expect("header").revision;
    assert_eq!(progress.header.expect("header").revision, revision);
}

/// The server follows the log for watches only while someone watches.
/// Once the last watcher has gone, a new one still gets history from any
/// revision and then every new event live.
#[actix_rt::test]
async fn a_watch_after_every_watcher_left_gets_history_and_live_events() {
    let server = TestServer::start_with(with_grpc).await;
    let channel = channel(&server).await;
    let mut kv = KVClient::new(channel.clone());
    let revision = |r: tonic::Response<pb::PutResponse>| r.into_inner().header.expect("header").revision;
    {
        let mut first = Stream::open(channel.clone()).await;
        first.send(create("k", "", 0)).await;
        assert!(first.next().await.created);
        kv.put(put("k", "1")).await.expect("put");
        assert_eq!(first.next().await.events.len(), 1);
    }
    // The first watcher is gone; these puts reach nobody.
    let second_put = revision(kv.put(put("k", "2")).await.expect("put"));
    kv.put(put("k", "3")).await.expect("put");

    let mut again = Stream::open(channel).await;
    let mut from_history = create("k", "", 0);
    if let Some(RequestUnion::CreateRequest(create)) = &mut from_history.request_union {
        create.start_revision = second_put;
    }
    again.send(from_history).await;
    assert!(again.next().await.created);
    let mut values = Vec::new();
    while values.len() < 3 {
        if values.len() == 2 {
            kv.put(put("k", "4")).await.expect("put");
        }
        let response = again.next().await;
        values.extend(
            response
                .events
                .iter()
                .filter_map(|e| e.kv.as_ref().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())),
        );
    }
    assert_eq!(values, vec!["2", "3", "4"]);
}

#[actix_rt::test]
async fn one_keep_alive_stream_renews_many_leases_and_answers_ttl_0_for_unknown_ones() {
    let server = TestServer::start_with(with_grpc).await;
    let mut lease = LeaseClient::new(channel(&server).await);
    let a = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    let b = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    let requests = futures::stream::iter([a.id, b.id, 12345, a.id].map(|id| pb::LeaseKeepAliveRequest { id }));
    let mut answers = lease.lease_keep_alive(requests).await.expect("stream").into_inner();
    let mut got = Vec::new();
    while let Some(answer) = answers.message().await.expect("readable") {
        got.push((answer.id, answer.ttl));
    }
    assert_eq!(got, vec![(a.id, 30), (b.id, 60), (12345, 0), (a.id, 30)]);
}

#[actix_rt::test]
async fn bad_input_gets_etcd_s_codes_and_messages() {
    let server = TestServer::start_with(with_grpc).await;
    let channel = channel(&server).await;
    let mut kv = KVClient::new(channel.clone());
    let refused = kv.put(put("", "v")).await.expect_err("refused");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );
    let refused = kv
        .range(pb::RangeRequest {
            key: b"a".to_vec(),
            sort_order: 9,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("sort_order"), "{refused:?}");
    let refused = kv
        .range(pb::RangeRequest {
            key: b"a".to_vec(),
            revision: 1_000,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );
    let ops = (0..129).map(|i| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(&format!("k{i}"), "v"))),
    });
    let refused = kv
        .txn(pb::TxnRequest {
            success: ops.collect(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.message(), "etcdserver: too many operations in txn request");
    let mut lease = LeaseClient::new(channel);
    let refused = lease
        .lease_revoke(pb::LeaseRevokeRequest { id: 42 })
        .await
        .expect_err("refused");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
}

/// `message` with the metadata `name: value`.
fn with<T>(name: &str, value: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        tonic::metadata::MetadataKey::from_bytes(name.as_bytes()).expect("key"),
        value.parse().expect("ASCII"),
    );
    request
}

#[actix_rt::test]
async fn with_auth_the_token_goes_in_the_metadata_and_authenticate_hands_it_out() {
    let server = TestServer::start_with(with_auth_and_grpc).await;
    let alice = server.account_with_token("alice", serde_json::json!({})).await;
    let bob = server.account_with_token("bob", serde_json::json!({})).await;
    let channel = channel(&server).await;
    let mut kv = KVClient::new(channel.clone());

    let refused = kv.put(tonic::Request::new(put("k", "v"))).await.expect_err("no token");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::InvalidArgument, "etcdserver: user name is empty")
    );
    let refused = kv
        .put(with("token", "tnr_nope_nope", put("k", "v")))
        .await
        .expect_err("bad token");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
    );
    let refused = kv
        .put(with("token", ADMIN_TOKEN, put("k", "v")))
        .await
        .expect_err("the admin owns no keys");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut auth = AuthClient::new(channel.clone());
    let login = |name: &str, password: &str| pb::AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    };
    let token = auth
        .authenticate(login("alice", &alice))
        .await
        .expect("login")
        .into_inner()
        .token;
    let refused = auth
        .authenticate(login("alice", &bob))
        .await
        .expect_err("bob's token is not alice's");
    assert_eq!(
        refused.message(),
        "etcdserver: authentication failed, invalid user ID or password"
    );

    kv.put(with("token", &token, put("k", "alice's")))
        .await
        .expect("put as alice");
    let bearer = format!("Bearer {bob}");
    let bobs = kv
        .range(with(
            "authorization",
            &bearer,
            pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            },
        ))
        .await
        .expect("range as bob")
        .into_inner();
    assert!(bobs.kvs.is_empty(), "bob sees his own key space only");
    let alices = kv
        .range(with(
            "authorization",
            &alice,
            pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            },
        ))
        .await
        .expect("range as alice")
        .into_inner();
    assert_eq!(alices.kvs.len(), 1);
}
