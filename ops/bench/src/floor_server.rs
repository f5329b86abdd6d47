//! The floor under a durable put on tenure's stack, on this machine: a
//! server built of the same crates as tenure (actix-web for etcd's `/v3`
//! JSON gateway, tonic for its gRPC `KV`, SQLite in WAL mode with
//! `synchronous=FULL` and group commit, jemalloc) that does nothing but
//! what any durable server on that stack must do for a put: read and decode
//! the request, append one row (key, value) to SQLite, fsync before it
//! answers, and answer etcd's shape. No key space, no events, no hash
//! chain, no projections, no auth, no metrics, no tracing.
//!
//! `ops/bench/floor.sh` measures its CPU per request beside etcd's and
//! tenure's. A server on this stack cannot be cheaper than this one, so
//! etcd's CPU per put divided by this floor's is the most any such server
//! can reach against etcd here. A benchmark tool, not a server to use: it
//! keeps nothing but the rows.
//!
//! Serves `POST /v3/kv/put` and `POST /v3/lease/grant` (durable: a row
//! each), `POST /v3/kv/range` (answers a header, reads nothing: the HTTP
//! floor), and over gRPC `KV.Put`
//! (durable) and `KV.Range` (a header); everything else is 404 or
//! `UNIMPLEMENTED`.

use std::net::SocketAddr;
use std::path::PathBuf;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use base64::Engine;
use clap::Parser;
use serde::Deserialize;
use tenure::grpc::pb;
use tenure::grpc::server::{KVServer, KV};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Args {
    /// Where etcd's JSON gateway is served.
    #[arg(long)]
    listen: SocketAddr,
    /// Where etcd's gRPC `KV` is served ("off": not at all).
    #[arg(long, default_value = "off")]
    grpc_listen: String,
    /// The directory of the SQLite file (created).
    #[arg(long)]
    data_dir: PathBuf,
}

/// One put waiting for the writer: the row, and who to tell its position.
struct Append {
    key: Vec<u8>,
    value: Vec<u8>,
    done: oneshot::Sender<Result<i64, String>>,
}

/// The writer's side of the queue: hands a row to the writer thread and
/// waits until it is committed and fsynced.
#[derive(Clone)]
struct Log(crossbeam_channel::Sender<Append>);

impl Log {
    async fn append(&self, key: Vec<u8>, value: Vec<u8>) -> Result<i64, String> {
        let (done, committed) = oneshot::channel();
        self.0
            .send(Append { key, value, done })
            .map_err(|_| "the writer has stopped".to_owned())?;
        committed.await.map_err(|_| "the writer has stopped".to_owned())?
    }
}

/// Opens the SQLite file as tenure does (WAL, synchronous=FULL) and starts
/// the thread that commits whatever is queued as one transaction: group
/// commit, one fsync per group.
fn start_writer(dir: &std::path::Path) -> anyhow::Result<Log> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let conn = rusqlite::Connection::open(dir.join("floor.sqlite"))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS puts (position INTEGER PRIMARY KEY, key BLOB NOT NULL, value BLOB NOT NULL) STRICT;",
    )?;
    // Unbounded, as a benchmark tool: what is in flight is bounded by the
    // load generator's callers.
    let (tx, rx) = crossbeam_channel::unbounded::<Append>();
    std::thread::Builder::new().name("floor-writer".into()).spawn(move || {
        let mut conn = conn;
        while let Ok(first) = rx.recv() {
            let group: Vec<Append> = std::iter::once(first).chain(rx.try_iter()).collect();
            let positions = commit(&mut conn, &group);
            for (i, append) in group.into_iter().enumerate() {
                let answer = match &positions {
                    Ok(positions) => positions.get(i).copied().ok_or_else(|| "no position".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = append.done.send(answer);
            }
        }
    })?;
    Ok(Log(tx))
}

fn commit(conn: &mut rusqlite::Connection, group: &[Append]) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction()?;
    let mut positions = Vec::with_capacity(group.len());
    {
        let mut insert = tx.prepare_cached("INSERT INTO puts (key, value) VALUES (?1, ?2)")?;
        for append in group {
            insert.execute((&append.key, &append.value))?;
            positions.push(tx.last_insert_rowid());
        }
    }
    tx.commit()?;
    Ok(positions)
}

/// etcd's response header on the gateway (int64s as strings).
fn header(revision: i64) -> serde_json::Value {
    serde_json::json!({"header": {"cluster_id": "1", "member_id": "1", "revision": revision.to_string(), "raft_term": "1"}})
}

/// A 400 with etcd's gateway error shape, naming the field.
fn bad_request(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({"error": message, "code": 3}))
}

#[derive(Deserialize)]
struct PutBody {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct RangeBody {
    key: String,
}

fn base64(field: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("{field}: {e}"))
}

fn decode_put(body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let put: PutBody = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    Ok((base64("key", &put.key)?, base64("value", &put.value)?))
}

async fn put(log: web::Data<Log>, body: web::Bytes) -> HttpResponse {
    let (key, value) = match decode_put(&body) {
        Ok(row) => row,
        Err(e) => return bad_request(e),
    };
    match log.append(key, value).await {
        Ok(position) => HttpResponse::Ok().json(header(position)),
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({"error": e, "code": 13})),
    }
}

/// etcd's gateway sends int64s as strings and takes them either way.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
struct GrantBody {
    #[serde(rename = "TTL")]
    ttl: Int64,
}

fn decode_grant(body: &[u8]) -> Result<i64, String> {
    let grant: GrantBody = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    match grant.ttl {
        Int64::Number(ttl) => Ok(ttl),
        Int64::Text(text) => text.parse().map_err(|e| format!("TTL: {e}")),
    }
}

/// A grant: one row (the TTL) appended, its position the lease's ID.
async fn grant(log: web::Data<Log>, body: web::Bytes) -> HttpResponse {
    let ttl = match decode_grant(&body) {
        Ok(ttl) => ttl,
        Err(e) => return bad_request(e),
    };
    match log.append(b"lease".to_vec(), ttl.to_be_bytes().to_vec()).await {
        Ok(id) => {
            let mut answer = header(id);
            answer["ID"] = id.to_string().into();
            answer["TTL"] = ttl.to_string().into();
            HttpResponse::Ok().json(answer)
        }
        Err(e) => HttpResponse::InternalServerError().json(serde_json::json!({"error": e, "code": 13})),
    }
}

async fn range(body: web::Bytes) -> HttpResponse {
    let decoded = serde_json::from_slice::<RangeBody>(&body)
        .map_err(|e| format!("body: {e}"))
        .and_then(|range| base64("key", &range.key));
    match decoded {
        Ok(_key) => HttpResponse::Ok().json(header(1)),
        Err(e) => bad_request(e),
    }
}

/// gRPC `KV`: Put appends, Range answers a header.
struct Kv(Log);

fn grpc_header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: 1,
        member_id: 1,
        revision,
        raft_term: 1,
    })
}

#[tonic::async_trait]
impl KV for Kv {
    async fn range(&self, _request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(pb::RangeResponse {
            header: grpc_header(1),
            ..Default::default()
        }))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let put = request.into_inner();
        let position = self.0.append(put.key, put.value).await.map_err(Status::internal)?;
        Ok(Response::new(pb::PutResponse {
            header: grpc_header(position),
            ..Default::default()
        }))
    }

    async fn delete_range(
        &self,
        _request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("the floor server answers Put and Range only"))
    }

    async fn txn(&self, _request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Status::unimplemented("the floor server answers Put and Range only"))
    }

    async fn compact(
        &self,
        _request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Err(Status::unimplemented("the floor server answers Put and Range only"))
    }
}

/// gRPC on a thread of its own with a single-threaded runtime (tenure serves
/// it on one actor thread).
fn start_grpc(addr: SocketAddr, log: Log) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listener = std::net::TcpListener::bind(addr).with_context(|| addr.to_string())?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("floor-grpc".into()).spawn(move || {
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(e) => return eprintln!("gRPC listener: {e}"),
            };
            let incoming = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await.map(|(stream, _)| {
                    let _ = stream.set_nodelay(true);
                    stream
                });
                Some((accepted, listener))
            });
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(KVServer::new(Kv(log)))
                .serve_with_incoming(incoming)
                .await
            {
                eprintln!("gRPC server: {e}");
            }
        });
    })?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log = start_writer(&args.data_dir)?;
    if args.grpc_listen != "off" {
        let addr: SocketAddr = args.grpc_listen.parse().context("--grpc-listen")?;
        start_grpc(addr, log.clone())?;
    }
    let data = web::Data::new(log);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v3/kv/put", web::post().to(put))
                .route("/v3/kv/range", web::post().to(range))
                .route("/v3/lease/grant", web::post().to(grant))
        })
        // One HTTP worker, as tenure on 2 cores (half the cores).
        .workers(1)
        .bind(args.listen)
        .with_context(|| args.listen.to_string())?
        .run()
        .await
        .context("the HTTP server")
    })
}
