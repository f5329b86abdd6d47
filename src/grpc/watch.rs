//! `etcdserverpb.Watch`: one stream of requests (create, cancel, progress)
//! and one of responses, any number of watches on it, as etcd's
//! `serverWatchStream` does. [`session`] runs a stream whatever carries
//! it: the gRPC call here, the gateway's `/v3/watch` (`api::v3_watch`).

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{AbortHandle, BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use tenure_events::{AccountId, Bytes};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::generated::watch_server::Watch;
use super::kv::kv;
use super::pb::watch_request::RequestUnion;
use super::{pb, Etcd};
use crate::domain::keyspace::KeyRange;
use crate::store::StoreError;
use crate::watch::{EventKind, Filter, WatchEvent, Watcher};

/// etcd's `clientv3.InvalidWatchID`: a response about no one watch.
const NO_WATCH: i64 = -1;

/// How often a watch created with `progress_notify` hears the current
/// revision when nothing happened (etcd's default interval).
const PROGRESS_EVERY: Duration = Duration::from_secs(600);

/// Responses a stream holds for a client that does not read; then the
/// session waits (and its watchers fall behind, see `crate::watch`).
const OUT_BUFFER: usize = 16;

/// What one watch of a session saw next, by its ID.
type Seen = (i64, Result<Vec<WatchEvent>, StoreError>);

type Responses = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for Etcd {
    type WatchStream = Responses;

    async fn watch(&self, request: Request<Streaming<pb::WatchRequest>>) -> Result<Response<Responses>, Status> {
        let caller = self.caller(request.metadata()).await?;
        // A broken request stream ends the session like a closed one.
        let requests = request
            .into_inner()
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok()));
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        tokio::spawn(session(self.clone(), caller.account, requests, tx));
        let responses = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (Ok(r), rx)) });
        Ok(Response::new(Box::pin(responses)))
    }
}

/// One watch of a session.
struct Watching {
    abort: AbortHandle,
    prev_kv: bool,
    progress_notify: bool,
    /// Events were sent since the last progress notice.
    busy: bool,
}

fn event(e: WatchEvent, prev_kv: bool) -> pb::Event {
    pb::Event {
        kind: match e.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        },
        // After a delete only `mod_revision` is set (see `WatchEvent::kv`).
        kv: Some(kv(e.key.clone(), e.kv)),
        prev_kv: e.prev.filter(|_| prev_kv).map(|prev| kv(e.key, prev)),
    }
}

/// Runs one watch stream until the client goes away (`out` closes) or the
/// server stops.
pub async fn session(
    etcd: Etcd,
    account: AccountId,
    requests: impl Stream<Item = pb::WatchRequest> + Send + Unpin + 'static,
    out: mpsc::Sender<pb::WatchResponse>,
) {
    let mut requests = requests;
    let mut closing = etcd.control.closing();
    let mut events: SelectAll<BoxStream<'static, Seen>> = SelectAll::new();
    let mut watching: HashMap<i64, Watching> = HashMap::new();
    let mut next_id = 0i64;
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let header = |revision: i64| etcd.header(&account, revision);
    // A client that closes its side still hears its watches (as in etcd):
    // the session ends when it stops listening.
    let mut requests_open = true;
    loop {
        let response = tokio::select! {
            request = requests.next(), if requests_open => {
                let Some(request) = request else {
                    requests_open = false;
                    continue;
                };
                match request.request_union {
                    Some(RequestUnion::CreateRequest(create)) => {
                        let mut id = create.watch_id;
                        if id == 0 {
                            while watching.contains_key(&next_id) {
                                next_id += 1;
                            }
                            id = next_id;
                        }
                        let refused = |reason: &str| pb::WatchResponse {
                            header: header(etcd.control.revision(&account)),
                            watch_id: NO_WATCH,
                            created: true,
                            canceled: true,
                            cancel_reason: reason.into(),
                            ..Default::default()
                        };
                        // etcd 3.4 takes a negative start revision as "now"
                        // (tenure compacts nothing, so none is ever compacted).
                        if watching.contains_key(&id) || id < 0 {
                            refused("mvcc: duplicate watch ID provided on the WatchStream")
                        } else {
                            // An empty key is the smallest key, "\0".
                            let key = if create.key.is_empty() { vec![0] } else { create.key };
                            let filter = Filter {
                                range: KeyRange { key: Bytes(key), range_end: Bytes(create.range_end) },
                                no_put: create.filters.contains(&0),
                                no_delete: create.filters.contains(&1),
                            };
                            let now = etcd.control.revision(&account);
                            match Watcher::start(&etcd.watches, account.clone(), filter, create.start_revision, now).await {
                                Ok((watcher, revision)) => {
                                    let stream = futures::stream::unfold(Some(watcher), move |watcher| async move {
                                        let mut watcher = watcher?;
                                        match watcher.next().await {
                                            Ok(events) => Some(((id, Ok(events)), Some(watcher))),
                                            Err(e) => Some(((id, Err(e)), None)),
                                        }
                                    });
                                    let (stream, abort) = futures::stream::abortable(stream);
                                    events.push(stream.boxed());
                                    watching.insert(id, Watching {
                                        abort,
                                        prev_kv: create.prev_kv,
                                        progress_notify: create.progress_notify,
                                        busy: false,
                                    });
                                    pb::WatchResponse {
                                        header: header(revision),
                                        watch_id: id,
                                        created: true,
                                        ..Default::default()
                                    }
                                }
                                Err(e) => refused(&format!("tenure: {e}")),
                            }
                        }
                    }
                    Some(RequestUnion::CancelRequest(cancel)) => {
                        let Some(watch) = watching.remove(&cancel.watch_id) else { continue };
                        watch.abort.abort();
                        pb::WatchResponse {
                            header: header(etcd.control.revision(&account)),
                            watch_id: cancel.watch_id,
                            canceled: true,
                            ..Default::default()
                        }
                    }
                    Some(RequestUnion::ProgressRequest(_)) => pb::WatchResponse {
                        header: header(etcd.control.revision(&account)),
                        watch_id: NO_WATCH,
                        ..Default::default()
                    },
                    None => continue,
                }
            }
            Some((id, result)) = events.next(), if !events.is_empty() => {
                let Some(watch) = watching.get_mut(&id) else { continue };
                match result {
                    Ok(seen) => {
                        watch.busy = true;
                        // A watch catching up from the log says the
                        // current revision, one in step the change's, as etcd.
                        let last = seen.last().map_or(0, WatchEvent::revision);
                        let revision = last.max(etcd.control.revision(&account));
                        let prev_kv = watch.prev_kv;
                        pb::WatchResponse {
                            header: header(revision),
                            watch_id: id,
                            events: seen.into_iter().map(|e| event(e, prev_kv)).collect(),
                            ..Default::default()
                        }
                    }
                    Err(e) => {
                        watching.remove(&id);
                        pb::WatchResponse {
                            header: header(etcd.control.revision(&account)),
                            watch_id: id,
                            canceled: true,
                            cancel_reason: format!("tenure: {e}"),
                            ..Default::default()
                        }
                    }
                }
            }
            _ = progress.tick() => {
                let revision = etcd.control.revision(&account);
                for (id, watch) in watching.iter_mut().filter(|(_, w)| w.progress_notify) {
                    if !std::mem::replace(&mut watch.busy, false) {
                        let notice = pb::WatchResponse { header: header(revision), watch_id: *id, ..Default::default() };
                        if out.send(notice).await.is_err() {
                            return;
                        }
                    }
                }
                continue;
            }
            _ = out.closed() => return,
            _ = crate::watch::closed(&mut closing) => return,
        };
        if out.send(response).await.is_err() {
            return;
        }
    }
}
