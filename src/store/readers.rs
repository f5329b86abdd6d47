//! Reads on a store's reader threads (SQLite's, PostgreSQL's), each of
//! which owns a connection: a read is a job sent to them, with a channel
//! for its answer.

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{StoreError, StoreFuture};

/// The queue of a store's reader threads; `None` once the store is closed.
pub(super) type Readers<J> = Mutex<Option<crossbeam_channel::Sender<J>>>;

/// Sends a reader the job `make` builds around the channel for its
/// answer, and awaits that answer ([`StoreError::Closed`] once the
/// readers are gone).
pub(super) fn ask<J, T>(
    readers: &Readers<J>,
    make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> J,
) -> StoreFuture<Result<T, StoreError>>
where
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let sent = readers.lock().as_ref().is_some_and(|r| r.send(make(tx)).is_ok());
    Box::pin(async move {
        if !sent {
            return Err(StoreError::Closed);
        }
        rx.await.unwrap_or(Err(StoreError::Closed))
    })
}
