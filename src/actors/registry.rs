//! Routes messages to entity actors, activating them on demand.
//!
//! One slot per live actor, in sharded maps. Every message to an entity goes
//! through [`Registry::route`], which counts it; an idle actor asks to
//! passivate with the number of messages it has handled, and the registry
//! agrees only if that equals the number it routed. Since both happen under
//! the shard's lock, no message can be on its way to an actor that stops,
//! and the next message simply activates a new one from the log.
//!
//! Messages are queued with `do_send` under the lock, so two messages routed
//! one after the other by the same caller reach the actor in that order.
//!
//! Where an actor runs: on the thread that activates it if that thread
//! serves requests (an HTTP worker, see [`serve_requests_here`]), so the
//! requests there reach it without a wake-up across threads; otherwise on
//! one of the actor threads, by the hash of its key. An actor on an HTTP
//! worker ends with the worker (at a stop); a message routed to it after
//! that activates a new one on an actor thread.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler, Message};
use actix_rt::ArbiterHandle;
use parking_lot::Mutex;

use super::Hub;
use crate::metrics::ActorMetrics;

/// How a new actor gets its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Read its stream from the log.
    Load,
    /// The stream is known not to exist yet (a new workload's; a grant on
    /// a server-chosen ID goes further and starts no actor, see
    /// `lease::grant_fresh`): skip the read. If it did exist, the first
    /// append conflicts.
    Fresh,
    /// From what the projections know of the entity when they have
    /// applied everything durable, else from the log. Only lease actors
    /// start so (from the expiry queue's record of the grant, for a put
    /// with the lease); the others read their stream.
    Projected,
}

/// An actor that the registry can activate for a key.
pub trait Entity: Actor<Context = Context<Self>> {
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;

    fn activate(key: Self::Key, activation: Activation, hub: Arc<Hub>) -> Self;
}

struct Slot<A: Actor> {
    addr: Addr<A>,
    routed: u64,
}

const SHARDS: usize = 64;

thread_local! {
    /// This thread serves requests: actors it activates run on it.
    static SERVES_REQUESTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread, an actix arbiter that serves requests (an
/// HTTP worker), as the home of the actors it activates. Measured on 2
/// cores: CPU per durable put over HTTP -17 to -30% (no wake-up of an
/// actor thread and back per request).
pub fn serve_requests_here() {
    SERVES_REQUESTS.with(|serves| serves.set(true));
}

pub struct Registry<A: Entity> {
    shards: Vec<Mutex<HashMap<A::Key, Slot<A>>>>,
    arbiters: Vec<ArbiterHandle>,
    hasher: RandomState,
    metrics: ActorMetrics,
}

impl<A: Entity> Registry<A> {
    /// Actors are spread over `arbiters` (threads) by the hash of their key;
    /// activations and passivations are counted in `metrics`.
    pub fn new(arbiters: Vec<ArbiterHandle>, metrics: ActorMetrics) -> Registry<A> {
        assert!(!arbiters.is_empty(), "a registry needs at least one arbiter");
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            arbiters,
            hasher: RandomState::new(),
            metrics,
        }
    }

    fn hash(&self, key: &A::Key) -> usize {
        self.hasher.hash_one(key) as usize
    }

    /// Queues `msg` for the actor of `key`, activating it if needed.
    pub fn route<M>(&self, hub: &Arc<Hub>, key: &A::Key, activation: Activation, msg: M)
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let hash = self.hash(key);
        let mut shard = self.shards[hash % SHARDS].lock();
        let slot = shard
            .entry(key.clone())
            .or_insert_with(|| self.start(hash, key, activation, hub));
        if !slot.addr.connected() {
            // It stopped after a failure without leaving: replace it.
            *slot = self.start(hash, key, activation, hub);
        }
        slot.routed += 1;
        slot.addr.do_send(msg);
    }

    /// Queues `msg` for the actor of `key` if one is active; does not
    /// activate one.
    pub fn tell_if_active<M>(&self, key: &A::Key, msg: M)
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let _ = self.route_if_active(key, msg);
    }

    /// Queues `msg` for the actor of `key` if one is active, or hands it
    /// back. Once it is handed back, every message an earlier actor of
    /// `key` sent on has left it (an actor passivates only once it has
    /// handled all that was routed to it).
    pub fn route_if_active<M>(&self, key: &A::Key, msg: M) -> Result<(), M>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let mut shard = self.shards[self.hash(key) % SHARDS].lock();
        match shard.get_mut(key).filter(|slot| slot.addr.connected()) {
            Some(slot) => {
                slot.routed += 1;
                slot.addr.do_send(msg);
                Ok(())
            }
            None => Err(msg),
        }
    }

    fn start(&self, hash: usize, key: &A::Key, activation: Activation, hub: &Arc<Hub>) -> Slot<A> {
        let here = SERVES_REQUESTS
            .with(|serves| serves.get())
            .then(actix_rt::Arbiter::try_current)
            .flatten();
        let arbiter = here
            .as_ref()
            .unwrap_or(&self.arbiters[(hash / SHARDS) % self.arbiters.len()]);
        let (key, hub) = (key.clone(), Arc::clone(hub));
        let addr = A::start_in_arbiter(arbiter, move |_| A::activate(key, activation, hub));
        self.metrics.activated.inc();
        Slot { addr, routed: 0 }
    }

    /// The actor at `addr` asks to stop: granted (and its slot removed) only
    /// if every message routed to it has been handled.
    pub fn try_passivate(&self, key: &A::Key, addr: &Addr<A>, handled: u64) -> bool {
        let mut shard = self.shards[self.hash(key) % SHARDS].lock();
        match shard.get(key) {
            Some(slot) if slot.addr == *addr && slot.routed == handled => {
                shard.remove(key);
                self.metrics.passivated.inc();
                true
            }
            _ => false,
        }
    }

    /// Removes the slot of an actor that failed, if it is still the one there.
    pub fn forget(&self, key: &A::Key, addr: &Addr<A>) {
        let mut shard = self.shards[self.hash(key) % SHARDS].lock();
        if shard.get(key).is_some_and(|slot| slot.addr == *addr) {
            shard.remove(key);
        }
    }

    /// How many actors are active.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many actors were activated since the start.
    pub fn activations(&self) -> u64 {
        self.metrics.activated.get()
    }

    /// The kind of actor (its metrics' label) and how many are active.
    pub fn active(&self) -> (&'static str, usize) {
        (self.metrics.kind, self.len())
    }
}
