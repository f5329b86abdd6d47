use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use tenure_events::workload::{DeleteReason, ResultState};
use tenure_events::{AccountId, RecordedEvent, WorkloadEvent};
use uuid::Uuid;

use crate::snapshot::{invalid, strictly_ordered, RestoreError, Time, WorkloadSnapshot};
use crate::Projection;

/// Workload reservations: by ID, per owner, each node's feed, and the
/// deadlines of those not yet to be deleted.
///
/// A reservation's **ID** is the log position of its `WorkloadReserved`
/// event, so IDs increase in the order reservations became durable. Each
/// node's **feed** holds every reservation for the node once, keyed by its
/// **seq**: the position of its latest change the node must act on
/// (creation, then its deletion request). A node polling `from = last seq +
/// 1` therefore sees new reservations and, again, reservations that became
/// to-delete, oldest change first, and never misses one: a change that
/// becomes durable later has a higher position.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Workloads {
    checkpoint: u64,
    by_uuid: HashMap<Uuid, WorkloadView>,
    by_id: BTreeMap<u64, Uuid>,
    by_owner: BTreeMap<AccountId, BTreeSet<u64>>,
    feeds: HashMap<String, BTreeMap<u64, Uuid>>,
    deadlines: BTreeSet<(DateTime<Utc>, Uuid)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkloadView {
    pub id: u64,
    pub uuid: Uuid,
    pub node: String,
    pub owner: AccountId,
    pub kind: String,
    pub data: serde_json::Value,
    pub created: DateTime<Utc>,
    pub duration_s: i64,
    pub expires_at: DateTime<Utc>,
    pub signature: String,
    pub to_delete: Option<DeleteReason>,
    pub result: Option<ResultView>,
    /// The position of the latest change the node acts on.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResultView {
    pub state: ResultState,
    pub error: String,
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

impl Workloads {
    pub fn get(&self, id: u64) -> Option<&WorkloadView> {
        self.by_id.get(&id).and_then(|uuid| self.by_uuid.get(uuid))
    }

    pub fn by_uuid(&self, uuid: Uuid) -> Option<&WorkloadView> {
        self.by_uuid.get(&uuid)
    }

    /// Every reservation, by ID.
    pub fn all(&self) -> impl Iterator<Item = &WorkloadView> {
        self.by_id.values().filter_map(|uuid| self.by_uuid.get(uuid))
    }

    /// The owner's reservations, by ID.
    pub fn owned_by<'a>(&'a self, owner: &AccountId) -> impl Iterator<Item = &'a WorkloadView> + 'a {
        self.by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(*id))
    }

    /// The node's feed from `from` on (by seq), at most `max`.
    pub fn poll(&self, node: &str, from: u64, max: usize) -> Vec<&WorkloadView> {
        self.feeds
            .get(node)
            .map(|feed| {
                feed.range(from..)
                    .take(max)
                    .filter_map(|(_, uuid)| self.by_uuid.get(uuid))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reservations whose duration has run out by `now` and that are not
    /// yet to be deleted.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<Uuid> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, uuid)| *uuid)
            .collect()
    }

    /// The first deadline after `now`.
    pub fn next_deadline_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.deadlines.iter().map(|(at, _)| *at).find(|at| *at > now)
    }

    pub fn snapshot(&self) -> Vec<WorkloadSnapshot> {
        let json = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_else(|_| "null".into());
        self.all()
            .map(|w| WorkloadSnapshot {
                id: w.id,
                uuid: w.uuid,
                node: w.node.clone(),
                owner: w.owner.clone(),
                kind: w.kind.clone(),
                data: json(&w.data),
                created: w.created.into(),
                duration_s: w.duration_s,
                expires_at: w.expires_at.into(),
                signature: w.signature.clone(),
                to_delete: w.to_delete,
                result: w
                    .result
                    .as_ref()
                    .map(|r| (r.state, r.error.clone(), json(&r.data), Time::from(r.at))),
                seq: w.seq,
            })
            .collect()
    }

    pub fn restore(workloads: Vec<WorkloadSnapshot>, checkpoint: u64) -> Result<Workloads, RestoreError> {
        let json = |text: &str| {
            serde_json::from_str::<serde_json::Value>(text)
                .or_else(|e| invalid(format!("a workload's data is not JSON: {e}")))
        };
        strictly_ordered(&workloads, |w| w.id, "workloads")?;
        let mut restored = Workloads {
            checkpoint,
            ..Workloads::default()
        };
        for w in workloads {
            if w.seq < w.id || w.seq > checkpoint {
                return invalid(format!("workload {} has seq {} out of range", w.id, w.seq));
            }
            let expires_at = w.expires_at.to_datetime()?;
            let result = match w.result {
                Some((state, error, data, at)) => Some(ResultView {
                    state,
                    error,
                    data: json(&data)?,
                    at: at.to_datetime()?,
                }),
                None => None,
            };
            restored.by_id.insert(w.id, w.uuid);
            restored.by_owner.entry(w.owner.clone()).or_default().insert(w.id);
            if restored
                .feeds
                .entry(w.node.clone())
                .or_default()
                .insert(w.seq, w.uuid)
                .is_some()
            {
                return invalid(format!("two workloads of node {} have seq {}", w.node, w.seq));
            }
            if w.to_delete.is_none() {
                restored.deadlines.insert((expires_at, w.uuid));
            }
            let view = WorkloadView {
                id: w.id,
                uuid: w.uuid,
                node: w.node,
                owner: w.owner,
                kind: w.kind,
                data: json(&w.data)?,
                created: w.created.to_datetime()?,
                duration_s: w.duration_s,
                expires_at,
                signature: w.signature,
                to_delete: w.to_delete,
                result,
                seq: w.seq,
            };
            if restored.by_uuid.insert(w.uuid, view).is_some() {
                return invalid(format!("workload {} appears twice", w.uuid));
            }
        }
        Ok(restored)
    }

    fn move_in_feed(&mut self, uuid: Uuid, seq: u64) {
        let Some(view) = self.by_uuid.get_mut(&uuid) else {
            return;
        };
        let feed = self.feeds.entry(view.node.clone()).or_default();
        feed.remove(&view.seq);
        feed.insert(seq, uuid);
        view.seq = seq;
    }
}

impl Projection for Workloads {
    const NAME: &'static str = "workloads";

    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn apply(&mut self, event: &RecordedEvent) {
        if !crate::advance(&mut self.checkpoint, event) || event.stream.category() != "workload" {
            return;
        }
        let Ok(uuid) = event.stream.as_str().trim_start_matches("workload/").parse::<Uuid>() else {
            tracing::error!(stream = %event.stream, "workloads projection skips a stream without a UUID");
            return;
        };
        let workload_event = match event.decode_as::<WorkloadEvent>() {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(position = event.position, %err, "workloads projection skips an event it cannot decode");
                return;
            }
        };
        match workload_event {
            WorkloadEvent::Reserved(e) => {
                let id = event.position;
                let expires_at = e.created + TimeDelta::seconds(e.duration_s);
                self.by_id.insert(id, uuid);
                self.by_owner.entry(e.owner.clone()).or_default().insert(id);
                self.feeds.entry(e.node.clone()).or_default().insert(id, uuid);
                self.deadlines.insert((expires_at, uuid));
                self.by_uuid.insert(
                    uuid,
                    WorkloadView {
                        id,
                        uuid,
                        node: e.node,
                        owner: e.owner,
                        kind: e.kind,
                        data: e.data,
                        created: e.created,
                        duration_s: e.duration_s,
                        expires_at,
                        signature: e.signature,
                        to_delete: None,
                        result: None,
                        seq: id,
                    },
                );
            }
            WorkloadEvent::DeleteRequested(e) => {
                let Some(view) = self.by_uuid.get_mut(&uuid) else {
                    return;
                };
                if view.to_delete.is_some() {
                    return;
                }
                view.to_delete = Some(e.reason);
                let expires_at = view.expires_at;
                self.deadlines.remove(&(expires_at, uuid));
                self.move_in_feed(uuid, event.position);
            }
            WorkloadEvent::ResultReported(e) => {
                if let Some(view) = self.by_uuid.get_mut(&uuid) {
                    view.result = Some(ResultView {
                        state: e.state,
                        error: e.error,
                        data: e.data,
                        at: event.time,
                    });
                }
            }
        }
    }
}
