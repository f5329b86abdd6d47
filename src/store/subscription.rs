use std::sync::Arc;

use tenure_events::RecordedEvent;
use tokio::sync::broadcast;

use super::{StoreError, StoreFuture};

/// Reads a page of `$all`: the catch-up half of a subscription.
pub(crate) type FetchAll = Arc<dyn Fn(u64, usize) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> + Send + Sync>;

/// A batch of events made durable together, as the writer announces it.
pub(crate) type LiveBatch = Arc<Vec<RecordedEvent>>;

/// Events a subscription delivers at once. Live batches are the writer's own
/// announcement, shared, not copied.
#[derive(Clone, Debug)]
pub struct Batch {
    events: Arc<Vec<RecordedEvent>>,
    start: usize,
}

impl std::ops::Deref for Batch {
    type Target = [RecordedEvent];

    fn deref(&self) -> &[RecordedEvent] {
        &self.events[self.start..]
    }
}

impl Batch {
    fn whole(events: Vec<RecordedEvent>) -> Batch {
        Batch {
            events: Arc::new(events),
            start: 0,
        }
    }
}

/// How many events a catch-up read fetches at once.
const CATCH_UP_PAGE: usize = 4096;

/// A live feed of `$all` from a position: every event once, in order.
///
/// It reads what is already in the log page by page, then follows the
/// batches the writer announces. Whenever it falls behind the announcements
/// (the channel is bounded) or sees a gap, it goes back to reading the log,
/// so a slow subscriber loses nothing.
pub struct Subscription {
    next: u64,
    catching_up: bool,
    live: broadcast::Receiver<LiveBatch>,
    fetch: FetchAll,
}

impl Subscription {
    /// `live` must be subscribed before the first catch-up read, so that no
    /// batch falls between the two.
    pub(crate) fn new(from_position: u64, live: broadcast::Receiver<LiveBatch>, fetch: FetchAll) -> Subscription {
        Subscription {
            next: from_position.max(1),
            catching_up: true,
            live,
            fetch,
        }
    }

    /// A subscription to a store's live announcements (`None` once the
    /// store is closed: the subscription then ends after what the log holds).
    pub(crate) fn following(
        from_position: u64,
        live: Option<&broadcast::Sender<LiveBatch>>,
        fetch: FetchAll,
    ) -> Subscription {
        let live = match live {
            Some(tx) => tx.subscribe(),
            None => {
                // Closed: a receiver whose sender is gone reports Closed at once.
                let (tx, rx) = broadcast::channel(1);
                drop(tx);
                rx
            }
        };
        Subscription::new(from_position, live, fetch)
    }

    /// The next events, in order; `Ok(None)` once the store is closed.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, StoreError> {
        loop {
            if self.catching_up {
                let page = match (self.fetch)(self.next, CATCH_UP_PAGE).await {
                    Err(StoreError::Closed) => return Ok(None),
                    other => other?,
                };
                if let Some(last) = page.last() {
                    self.next = last.position + 1;
                    return Ok(Some(Batch::whole(page)));
                }
                self.catching_up = false;
            }
            match self.live.recv().await {
                Ok(batch) => {
                    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                        continue;
                    };
                    if last.position < self.next {
                        continue; // already read while catching up
                    }
                    if first.position > self.next {
                        self.catching_up = true; // a gap: read it from the log
                        continue;
                    }
                    // Positions within a batch are contiguous.
                    let start = usize::try_from(self.next - first.position).unwrap_or(usize::MAX);
                    debug_assert_eq!(batch.get(start).map(|e| e.position), Some(self.next));
                    self.next = last.position + 1;
                    return Ok(Some(Batch { events: batch, start }));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => {
                    // Deliver what was committed before the close, then end.
                    let page = (self.fetch)(self.next, CATCH_UP_PAGE).await;
                    return match page {
                        Ok(page) if !page.is_empty() => {
                            self.next = page.last().map_or(self.next, |e| e.position + 1);
                            Ok(Some(Batch::whole(page)))
                        }
                        Ok(_) | Err(StoreError::Closed) => Ok(None),
                        Err(e) => Err(e),
                    };
                }
            }
        }
    }
}
