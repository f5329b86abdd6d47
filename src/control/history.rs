//! The log itself, read: pages of events, live streams of them, the audit
//! trail of an entity, and the digests of the projections.
//!
//! Who sees what: the admin (and local mode) every event; an account only
//! its own events (those whose envelope names it), whatever it asks.

use std::collections::{BTreeMap, HashMap};

use tenure_events::{AccountId, LeaseId, RecordedEvent, ShareEvent, StreamId};
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use crate::actors::CommandError;
use crate::history::filter::{EventFilter, HistoryScope};
use crate::history::{HistoryRejection, ServerDigests};
use crate::store::{StoreError, Subscription};

use super::Control;

/// Events an answer holds at most (`limit`).
pub const EVENTS_PAGE_MAX: usize = 1000;

/// Events one query looks at before it answers with what it found and a
/// cursor to go on from: a filter that matches little of a long log costs
/// each request a bounded scan.
pub const EVENTS_SCAN_MAX: usize = 100_000;

/// Live event streams open at once: each holds a subscription to the log.
pub const FOLLOWERS_MAX: usize = 1024;

/// Events an audit trail holds at most (its own streams' and those they caused).
pub const AUDIT_EVENTS_MAX: usize = 100_000;

/// How many times the audit follows causation links (a lease's expiry
/// causes its keys' deletion: one step).
const AUDIT_CAUSATION_DEPTH: usize = 4;

/// Causation ids looked up per store read.
const CAUSES_PER_READ: usize = 512;

/// Events read from the store at once.
const READ_PAGE: usize = 4096;

/// A page of `$all`.
#[derive(Clone, Debug)]
pub struct EventsPage {
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts (one past the last event looked at).
    pub next: u64,
    /// The newest position in the log when the page was read.
    pub head: u64,
}

/// A live stream of the events that match a filter (see [`Control::follow`]).
pub struct Following {
    subscription: Subscription,
    filter: EventFilter,
    scanned: u64,
    _permit: OwnedSemaphorePermit,
}

impl Following {
    /// The next matching events, in log order, once there are some; `None`
    /// when the store closes. Cancel-safe: nothing is lost if the future is
    /// dropped before it resolves.
    pub async fn next(&mut self) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        loop {
            let Some(batch) = self.subscription.next_batch().await? else {
                return Ok(None);
            };
            if let Some(last) = batch.last() {
                self.scanned = last.position;
            }
            let matching: Vec<RecordedEvent> = batch.iter().filter(|e| self.filter.matches(e)).cloned().collect();
            if !matching.is_empty() {
                return Ok(Some(matching));
            }
        }
    }

    /// The last position looked at, matching or not: where to resume.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }
}

/// An entity whose story `audit` tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntityRef {
    Lease(LeaseId),
    Share(String),
    Service(String),
    Instance(String),
    /// A workload reservation, by its ID.
    Workload(u64),
    Account(AccountId),
}

impl EntityRef {
    /// `KIND/NAME` (`lease/1a20…`, `share/demo`, `service/web`,
    /// `instance/web-1`, `workload/17`, `account/alice`), or a bare name: 16
    /// hexadecimal digits are a lease, digits a workload reservation, and
    /// anything else is looked up as a share, a service, an instance and an
    /// account, in that order.
    pub fn parse(text: &str) -> Result<Vec<EntityRef>, String> {
        let lease = |s: &str| s.parse::<LeaseId>().map(EntityRef::Lease).map_err(|e| e.to_string());
        let workload = |s: &str| {
            s.parse::<u64>()
                .map(EntityRef::Workload)
                .map_err(|_| format!("a workload reservation ID is a number, got {s:?}"))
        };
        let name = |s: &str| -> Result<String, String> {
            if s.is_empty() || s.len() > 128 || s.contains('/') {
                Err(format!(
                    "entity name must be 1 to 128 characters without '/', got {s:?}"
                ))
            } else {
                Ok(s.to_owned())
            }
        };
        if let Some((kind, rest)) = text.split_once('/') {
            let one = match kind {
                "lease" => lease(rest)?,
                "workload" => workload(rest)?,
                "share" => EntityRef::Share(name(rest)?),
                "service" => EntityRef::Service(name(rest)?),
                "instance" => EntityRef::Instance(name(rest)?),
                "account" => EntityRef::Account(rest.parse().map_err(|e: tenure_events::IdError| e.to_string())?),
                other => {
                    return Err(format!(
                        "unknown entity kind {other:?}: lease, share, service, instance, workload or account"
                    ))
                }
            };
            return Ok(vec![one]);
        }
        if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(vec![lease(text)?]);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(vec![workload(text)?]);
        }
        let name = name(text)?;
        let mut candidates = vec![
            EntityRef::Share(name.clone()),
            EntityRef::Service(name.clone()),
            EntityRef::Instance(name.clone()),
        ];
        if let Ok(account) = name.parse() {
            candidates.push(EntityRef::Account(account));
        }
        Ok(candidates)
    }

    fn kind(&self) -> &'static str {
        match self {
            EntityRef::Lease(_) => "lease",
            EntityRef::Share(_) => "share",
            EntityRef::Service(_) => "service",
            EntityRef::Instance(_) => "instance",
            EntityRef::Workload(_) => "workload",
            EntityRef::Account(_) => "account",
        }
    }

    fn name(&self) -> String {
        match self {
            EntityRef::Lease(id) => id.to_string(),
            EntityRef::Share(s) | EntityRef::Service(s) | EntityRef::Instance(s) => s.clone(),
            EntityRef::Workload(id) => id.to_string(),
            EntityRef::Account(a) => a.to_string(),
        }
    }
}

/// An entity's story.
#[derive(Clone, Debug)]
pub struct Audit {
    /// `KIND/NAME`.
    pub entity: String,
    /// The entity's own streams.
    pub streams: Vec<StreamId>,
    /// Its events and those they caused, in log order.
    pub events: Vec<AuditEntry>,
    /// Whether [`AUDIT_EVENTS_MAX`] cut the story short.
    pub truncated: bool,
}

#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub event: RecordedEvent,
    /// The position of the event that caused this one, if it is in the story.
    pub caused_by: Option<u64>,
}

fn not_found(what: String) -> CommandError {
    HistoryRejection::NotFound(what).into()
}

impl Control {
    /// A page of the events `filter` matches, from position `from` on: at
    /// most `limit`, after looking at no more than [`EVENTS_SCAN_MAX`].
    pub async fn events(&self, filter: &EventFilter, from: u64, limit: usize) -> Result<EventsPage, CommandError> {
        let store = &self.hub.store;
        let head = store.head();
        let limit = limit.clamp(1, EVENTS_PAGE_MAX);
        let mut next = from.max(1);
        let mut events = Vec::new();
        let mut scanned = 0;
        // One stream: its own index, from its first event at or after `from`.
        let mut stream_version = match &filter.stream {
            Some(stream) => self.first_version_from(stream, next).await?,
            None => 1,
        };
        'pages: while next <= head && events.len() < limit && scanned < EVENTS_SCAN_MAX {
            let page = match &filter.stream {
                Some(stream) => {
                    let page = store.read_stream(stream, stream_version, READ_PAGE).await?;
                    stream_version = page.last().map_or(stream_version, |e| e.version + 1);
                    if page.is_empty() {
                        next = head + 1;
                        break;
                    }
                    page
                }
                None => store.read_all(next, READ_PAGE).await?,
            };
            if page.is_empty() {
                break;
            }
            for event in page {
                scanned += 1;
                if event.position < next || event.position > head {
                    continue;
                }
                next = event.position + 1;
                if filter.matches(&event) {
                    events.push(event);
                    if events.len() == limit {
                        break 'pages;
                    }
                }
            }
        }
        Ok(EventsPage { events, next, head })
    }

    /// The version of the first event of `stream` at or after position
    /// `from` (one past the last if none): versions and positions grow
    /// together, so a search by version over point reads finds it in
    /// O(log n) of them.
    async fn first_version_from(&self, stream: &StreamId, from: u64) -> Result<u64, CommandError> {
        let store = &self.hub.store;
        // Whether the event at `version` exists and is before `from`.
        let before = |version: u64| async move {
            let found = store.read_stream(stream, version, 1).await?;
            Ok::<_, CommandError>(found.first().is_some_and(|e| e.position < from))
        };
        if !before(1).await? {
            return Ok(1);
        }
        // The event at `low` is before `from`; find `high` that is not.
        let (mut low, mut high) = (1u64, 2u64);
        while before(high).await? {
            low = high;
            high = high.saturating_mul(2);
        }
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if before(middle).await? {
                low = middle;
            } else {
                high = middle;
            }
        }
        Ok(high)
    }

    /// Follows the events `filter` matches, from position `from` on: those
    /// already in the log, then new ones as they become durable.
    pub fn follow(&self, filter: EventFilter, from: u64) -> Result<Following, CommandError> {
        let permit = std::sync::Arc::clone(&self.followers)
            .try_acquire_owned()
            .map_err(|_| {
                CommandError::Unavailable(format!("{FOLLOWERS_MAX} event streams are open already; retry later"))
            })?;
        Ok(Following {
            subscription: self.hub.store.subscribe_all(from.max(1)),
            filter,
            scanned: from.saturating_sub(1),
            _permit: permit,
        })
    }

    /// The story of an entity: the events of its streams and those they
    /// caused (a lease's expiry causes its keys' deletions), in log order.
    /// `account` says whose lease, service or instance (IDs and names are
    /// per account); an account's scope is its own account.
    pub async fn audit(&self, scope: &HistoryScope, account: &AccountId, text: &str) -> Result<Audit, CommandError> {
        let candidates = EntityRef::parse(text).map_err(HistoryRejection::Invalid)?;
        let mut found = Vec::new();
        for entity in candidates {
            let streams = self.entity_streams(scope, account, &entity).await?;
            if !streams.is_empty() {
                found.push((entity, streams));
            }
        }
        let (entity, streams) = match found.len() {
            0 => {
                return Err(not_found(format!(
                    "no entity {text:?} in the log (leases, services and instances are looked up in account {account})"
                )))
            }
            1 => found.remove(0),
            _ => {
                let names: Vec<String> = found
                    .iter()
                    .map(|(e, _)| format!("{}/{}", e.kind(), e.name()))
                    .collect();
                return Err(HistoryRejection::Invalid(format!(
                    "{text:?} names several entities; say which: {}",
                    names.join(", ")
                ))
                .into());
            }
        };
        let store = &self.hub.store;
        let mut events: BTreeMap<u64, AuditEntry> = BTreeMap::new();
        let mut truncated = false;
        for stream in &streams {
            let mut version = 1;
            loop {
                let page = store.read_stream(stream, version, READ_PAGE).await?;
                let Some(last) = page.last() else { break };
                version = last.version + 1;
                for event in page.into_iter().filter(|e| scope.admits(e)) {
                    events.insert(event.position, AuditEntry { event, caused_by: None });
                }
                if events.len() >= AUDIT_EVENTS_MAX {
                    truncated = true;
                    break;
                }
            }
        }
        // Follow causation: the events caused by those found so far.
        let mut positions: HashMap<Uuid, u64> = events.values().map(|e| (e.event.event_id, e.event.position)).collect();
        let mut causes: Vec<Uuid> = positions.keys().copied().collect();
        for _ in 0..AUDIT_CAUSATION_DEPTH {
            if causes.is_empty() || truncated {
                break;
            }
            let mut caused = Vec::new();
            for chunk in causes.chunks(CAUSES_PER_READ) {
                caused.extend(store.read_caused_by(chunk.to_vec()).await?);
            }
            causes.clear();
            for event in caused.into_iter().filter(|e| scope.admits(e)) {
                if events.contains_key(&event.position) {
                    continue;
                }
                if events.len() >= AUDIT_EVENTS_MAX {
                    truncated = true;
                    break;
                }
                let caused_by = event.causation_id.and_then(|c| positions.get(&c).copied());
                positions.insert(event.event_id, event.position);
                causes.push(event.event_id);
                events.insert(event.position, AuditEntry { event, caused_by });
            }
        }
        Ok(Audit {
            entity: format!("{}/{}", entity.kind(), entity.name()),
            streams,
            events: events.into_values().collect(),
            truncated,
        })
    }

    /// The streams of an entity that hold an event the scope may see.
    async fn entity_streams(
        &self,
        scope: &HistoryScope,
        account: &AccountId,
        entity: &EntityRef,
    ) -> Result<Vec<StreamId>, CommandError> {
        let store = &self.hub.store;
        let streams = match entity {
            EntityRef::Lease(id) => vec![StreamId::lease(account, *id)],
            EntityRef::Account(name) => vec![StreamId::account(name)],
            EntityRef::Share(token) => {
                let stream =
                    StreamId::new(format!("share/{token}")).map_err(|e| HistoryRejection::Invalid(e.to_string()))?;
                vec![stream]
            }
            EntityRef::Instance(name) => vec![StreamId::instance(account, name)],
            EntityRef::Service(name) => {
                // The service and every instance ever attached to it.
                let mut streams = vec![StreamId::service(account, name)];
                let prefix = format!("instance/{account}/");
                for instance in store.stream_names(&prefix, AUDIT_EVENTS_MAX).await? {
                    let first = store.read_stream(&instance, 1, 1).await?;
                    let attached = first
                        .first()
                        .and_then(|e| e.decode_as::<tenure_events::InstanceEvent>().ok().flatten());
                    if let Some(tenure_events::InstanceEvent::Registered(r)) = attached {
                        if r.service == *name {
                            streams.push(instance);
                        }
                    }
                }
                streams
            }
            EntityRef::Workload(id) => {
                let found = self.read(|p| p.workloads.lock().get(*id).map(|w| w.uuid)).await;
                match found {
                    Some(uuid) => vec![StreamId::workload(uuid)],
                    None => return Ok(Vec::new()),
                }
            }
        };
        let mut visible = Vec::new();
        for stream in streams {
            if self.stream_visible(scope, &stream).await? {
                visible.push(stream);
            }
        }
        // A service's instances count only with the service itself.
        if matches!(entity, EntityRef::Service(_))
            && visible.first() != Some(&StreamId::service(account, &entity.name()))
        {
            return Ok(Vec::new());
        }
        Ok(visible)
    }

    /// Whether the stream holds an event the scope may see (a share's
    /// stream: whether the scope's account ever reserved it).
    async fn stream_visible(&self, scope: &HistoryScope, stream: &StreamId) -> Result<bool, CommandError> {
        let store = &self.hub.store;
        let mut version = 1;
        loop {
            let page = store.read_stream(stream, version, READ_PAGE).await?;
            let Some(last) = page.last() else { return Ok(false) };
            version = last.version + 1;
            for event in &page {
                let visible = match scope {
                    HistoryScope::All => true,
                    HistoryScope::Account(a) if stream.category() == "share" => {
                        matches!(event.decode_as::<ShareEvent>(), Ok(Some(ShareEvent::Reserved(r))) if r.owner == *a)
                    }
                    HistoryScope::Account(a) => *a == event.account,
                };
                if visible {
                    return Ok(true);
                }
            }
        }
    }

    /// A copy of every projection at one position, digested (off the
    /// async threads: a large projection takes a while to digest).
    pub async fn digests(&self) -> Result<ServerDigests, CommandError> {
        let projections = std::sync::Arc::clone(&self.hub.projections);
        let domain = self.hub.config.domain.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let (position, set) = projections.snapshot();
            let digests = set.digests().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            ServerDigests {
                position,
                domain,
                digests,
            }
        })
        .await;
        computed.map_err(|e| CommandError::Unavailable(format!("digesting the projections failed: {e}")))
    }
}
