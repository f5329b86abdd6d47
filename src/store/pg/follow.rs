//! Following the log: what a node's threads share of it (the newest head
//! known, and the node's own batches waiting for others' events), and the
//! listener that follows what other nodes append.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use tenure_events::{ChainHead, RecordedEvent};
use tokio::sync::broadcast;

use super::rows::{read_page, Accounts, StoredEvent};
use super::target::PostgresTarget;
use super::{io, POLL_EVERY};
use crate::metrics::StoreMetrics;
use crate::store::subscription::LiveBatch;
use crate::store::StoreError;

/// What the threads and the handles all see: the newest head known.
pub(super) struct Shared {
    head: AtomicU64,
    chain: Mutex<ChainHead>,
    /// This node's tag in the notices of its writer's batches
    /// (`POSITION/TAG`): the writer broadcasts them, so the listener skips
    /// them, even one whose notification arrives before the writer has its
    /// answer. A batch whose answer was lost (committed, the writer saw an
    /// error) is read by the listener at the next poll, or when the
    /// writer's next batch waits for it ([`Shared::publish`]).
    node: String,
    /// This node's batches that came after events of other nodes not yet
    /// broadcast, in order: the listener broadcasts them once it has read
    /// those (see [`Shared::publish`]).
    pending: Mutex<Vec<LiveBatch>>,
}

impl Shared {
    /// At `head`, for the node tagged `node`.
    pub(super) fn new(head: ChainHead, node: String) -> Shared {
        Shared {
            head: AtomicU64::new(head.position),
            chain: Mutex::new(head),
            node,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// The newest position known (every event up to it broadcast).
    pub(super) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// The newest head known, with its link.
    pub(super) fn chain_head(&self) -> ChainHead {
        *self.chain.lock()
    }

    /// This node's tag in its notices (see the `node` field).
    pub(super) fn node(&self) -> &str {
        &self.node
    }

    /// Moves the head forward (never back: the writer and the listener may
    /// both report the same events).
    fn advance(&self, to: ChainHead) {
        let mut chain = self.chain.lock();
        if to.position > chain.position {
            *chain = to;
            self.head.store(to.position, Ordering::Release);
        }
    }

    /// Broadcasts a batch of this node's writer, or, when events of other
    /// nodes that come before it are not broadcast yet, leaves it to the
    /// listener, which reads those (it has their notifications) and then
    /// sends it on ([`Shared::flush`]). Broadcast first, the batch would
    /// show every subscriber a gap, and each would read the missing events
    /// from the log itself, besides the listener.
    pub(super) fn publish(&self, batch: Vec<RecordedEvent>, live: &broadcast::Sender<LiveBatch>) {
        let Some(first) = batch.first().map(|e| e.position) else {
            return;
        };
        let mut pending = self.pending.lock();
        if pending.is_empty() && first <= self.head() + 1 {
            self.send(Arc::new(batch), live);
        } else {
            pending.push(Arc::new(batch));
        }
    }

    /// Broadcasts the pending batches the head has reached (dropping those
    /// it has passed, read from the log with the others').
    fn flush(&self, live: &broadcast::Sender<LiveBatch>) {
        let mut pending = self.pending.lock();
        let mut ready = 0;
        for batch in pending.iter() {
            let first = batch.first().map_or(0, |e| e.position);
            if first > self.head() + 1 {
                break;
            }
            self.send(Arc::clone(batch), live);
            ready += 1;
        }
        pending.drain(..ready);
    }

    /// Whether batches of this node wait for the listener to read others'.
    fn waiting(&self) -> bool {
        !self.pending.lock().is_empty()
    }

    /// Moves the head to the end of `batch` and broadcasts it, unless the
    /// head has passed it already.
    fn send(&self, batch: LiveBatch, live: &broadcast::Sender<LiveBatch>) {
        let Some(last) = batch.last() else { return };
        if last.position <= self.head() {
            return;
        }
        self.advance(ChainHead {
            position: last.position,
            hash: last.hash,
        });
        let _ = live.send(batch);
    }

    /// Whether a batch ending at `position` is broadcast already.
    fn covers(&self, position: u64) -> bool {
        position <= self.head()
    }
}

/// Follows what other nodes append (and what this node's writer appended
/// but could not report) into the live broadcast.
pub(super) struct Listener {
    target: PostgresTarget,
    live: broadcast::Sender<LiveBatch>,
    shared: Arc<Shared>,
    metrics: Option<StoreMetrics>,
}

impl Listener {
    pub(super) fn new(
        target: PostgresTarget,
        live: broadcast::Sender<LiveBatch>,
        shared: Arc<Shared>,
        metrics: Option<StoreMetrics>,
    ) -> Listener {
        Listener {
            target,
            live,
            shared,
            metrics,
        }
    }

    pub(super) fn run(self, stop: crossbeam_channel::Receiver<()>) {
        let mut conn: Option<Client> = None;
        loop {
            if let Err(crossbeam_channel::TryRecvError::Disconnected) = stop.try_recv() {
                return;
            }
            if conn.as_ref().is_none_or(Client::is_closed) {
                conn = self.listen().ok();
                if conn.is_none() {
                    // The database is away: try again after a poll period.
                    if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) = stop.recv_timeout(POLL_EVERY) {
                        return;
                    }
                    continue;
                }
            }
            let Some(client) = conn.as_mut() else { continue };
            // Wait for a notification or the poll period, whichever first.
            let woke = client
                .notifications()
                .timeout_iter(POLL_EVERY)
                .next()
                .map(|n| n.map(|n| self.follow(&n)));
            let woke = match woke {
                Ok(woke) => woke,
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL listener connection failed; reconnecting");
                    conn = None;
                    continue;
                }
            };
            // A poll (no notification) always reads; a notification only
            // when it announces a batch this node has not broadcast and
            // does not carry its events. On one node every batch is the
            // writer's own, so nothing is read back.
            let mut news = woke != Some(true);
            // Drain what else is queued: once one needs a read, one
            // catch-up serves them all.
            while let Ok(Some(n)) = client.notifications().iter().next() {
                if !news {
                    news = !self.follow(&n);
                }
            }
            self.shared.flush(&self.live);
            // Batches of this node's still waiting for others' events read them.
            news |= self.shared.waiting();
            if !news {
                continue;
            }
            if let Err(e) = self.catch_up(client) {
                tracing::warn!(error = %e, "PostgreSQL listener could not read the log; reconnecting");
                conn = None;
            }
            self.shared.flush(&self.live);
        }
    }

    fn listen(&self) -> Result<Client, StoreError> {
        let mut client = self.target.connect()?;
        client
            .batch_execute(&format!("LISTEN \"{}\"", self.target.channel()))
            .map_err(io)?;
        Ok(client)
    }

    /// Whether a notification leaves nothing to read: it announces this
    /// node's own batch (tagged) or one broadcast
    /// already, or it carries its batch's events (`LAST/TAG/EVENTS`, see
    /// [`PLACE_FUNCTION`](super::schema::PLACE_FUNCTION)) right after the head, which are broadcast here.
    fn follow(&self, notification: &postgres::Notification) -> bool {
        let mut parts = notification.payload().splitn(3, '/');
        let position = parts.next().and_then(|p| p.parse::<u64>().ok());
        let node = parts.next();
        if node == Some(self.shared.node.as_str()) || position.is_some_and(|p| self.shared.covers(p)) {
            return true;
        }
        let Some(events) = parts.next() else {
            return false;
        };
        let mut accounts = Accounts::default();
        let batch = serde_json::from_str::<Vec<StoredEvent>>(events)
            .map_err(|e| StoreError::Corrupt(format!("a notification's events: {e}")))
            .and_then(|stored| stored.into_iter().map(|e| e.recorded(&mut accounts)).collect());
        let batch: Vec<RecordedEvent> = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "reading the log instead");
                return false;
            }
        };
        let (Some(first), count) = (batch.first().map(|e| e.position), batch.len()) else {
            return false;
        };
        let _order = self.shared.pending.lock();
        if first > self.shared.head() + 1 {
            return false;
        }
        self.shared.send(Arc::new(batch), &self.live);
        self.count("notice", count);
        true
    }

    /// Counts events followed `from` a notice or the log.
    fn count(&self, from: &str, events: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.followed.with_label_values(&[from]).inc_by(events as u64);
        }
    }

    /// Broadcasts the events past the newest head this node knows. A page
    /// shorter than asked for reached the head: what commits after it
    /// notifies again (or the next poll finds it), so no read is spent on
    /// finding nothing more (with three nodes that empty read was every
    /// other read).
    fn catch_up(&self, client: &mut Client) -> Result<(), StoreError> {
        const PAGE: usize = 4096;
        loop {
            let known = self.shared.head();
            let page = read_page(client, known + 1, PAGE)?;
            if page.is_empty() {
                return Ok(());
            }
            let full = page.len() >= PAGE;
            self.count("log", page.len());
            // Under the writer's lock on pending batches, so that its next
            // batch is not broadcast before this page.
            let _order = self.shared.pending.lock();
            self.shared.send(Arc::new(page), &self.live);
            if !full {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_events::StreamId;

    fn batch(positions: std::ops::RangeInclusive<u64>) -> Vec<RecordedEvent> {
        let stream = StreamId::new("test/s").expect("a valid stream");
        positions
            .map(|p| RecordedEvent::from_new(crate::store::conformance::event(p), stream.clone(), p, p))
            .collect()
    }

    fn received(rx: &mut broadcast::Receiver<LiveBatch>) -> Vec<(u64, u64)> {
        let mut got = Vec::new();
        while let Ok(b) = rx.try_recv() {
            got.push((b[0].position, b[b.len() - 1].position));
        }
        got
    }

    /// A batch of this node's that follows events of other nodes not yet
    /// broadcast waits for the listener to read them: subscribers see the
    /// log in order, with no gap to read for themselves.
    #[test]
    fn the_writers_batch_after_unread_events_waits_for_the_listener() {
        let shared = Shared {
            head: AtomicU64::new(2),
            chain: Mutex::new(ChainHead::EMPTY),
            node: "n".into(),
            pending: Mutex::new(Vec::new()),
        };
        let (live, mut rx) = broadcast::channel(16);
        shared.publish(batch(3..=4), &live);
        assert_eq!(received(&mut rx), [(3, 4)], "no gap: broadcast at once");

        // Another node appended 5..=6; this node's writer placed 7..=8.
        shared.publish(batch(7..=8), &live);
        shared.publish(batch(9..=9), &live);
        assert!(received(&mut rx).is_empty(), "broadcast before 5..=6");
        assert!(shared.waiting());
        // The listener reads 5..=6, then sends on what waited.
        shared.send(Arc::new(batch(5..=6)), &live);
        shared.flush(&live);
        assert_eq!(received(&mut rx), [(5, 6), (7, 8), (9, 9)]);
        assert!(!shared.waiting());
        assert_eq!(shared.head.load(Ordering::Acquire), 9);

        // A waiting batch the listener read with the others' is not sent twice.
        shared.publish(batch(12..=13), &live);
        shared.send(Arc::new(batch(10..=13)), &live);
        shared.flush(&live);
        assert_eq!(received(&mut rx), [(10, 13)]);
        assert!(!shared.waiting());
    }
}
