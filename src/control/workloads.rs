//! Workload reservations (zos): reserve, delete, results, the nodes' feeds.

use tenure_events::workload::ResultState;
use tenure_events::{AccountId, Metadata};
use tenure_projections::WorkloadView;
use uuid::Uuid;

use crate::actors::{Activation, Cmd, CommandError};
use crate::domain::workload::{Signed, WorkloadCommand, WorkloadRejection};

use super::Control;

impl Control {
    async fn workload_command(
        &self,
        id: Uuid,
        activation: Activation,
        meta: Metadata,
        command: WorkloadCommand,
    ) -> Result<usize, CommandError> {
        let cmd = Cmd::new(meta);
        self.entity_command(&self.hub.workloads, &id, activation, |reply| {
            crate::actors::workload::Execute {
                command: command.clone(),
                cmd: cmd.clone(),
                reply,
            }
        })
        .await
    }

    /// Reserves a workload signed by the caller (the owner in `signed` is
    /// the caller), checked against the caller's registered public key.
    pub async fn reserve_workload(
        &self,
        meta: Metadata,
        signed: Signed,
        signature: String,
    ) -> Result<WorkloadView, CommandError> {
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let public_key = projections
            .directory
            .read()
            .account(&meta.account)
            .and_then(|a| a.public_key.as_ref().map(|(key, _)| key.clone()));
        let uuid = Uuid::new_v4();
        let command = WorkloadCommand::Reserve {
            signed,
            signature,
            public_key,
        };
        self.workload_command(uuid, Activation::Fresh, meta, command).await?;
        let view = projections.workloads.lock().by_uuid(uuid).cloned();
        view.ok_or_else(|| CommandError::Unavailable("the reservation is not visible yet; retry".into()))
    }

    /// One of the account's workload reservations; another account's is
    /// not found.
    pub async fn workload(&self, account: &AccountId, id: u64) -> Result<WorkloadView, CommandError> {
        let found = self
            .read(|p| p.workloads.lock().get(id).filter(|w| w.owner == *account).cloned())
            .await;
        found.ok_or(CommandError::Workload(WorkloadRejection::NotFound))
    }

    /// The account's workload reservations, by ID.
    pub async fn workloads(&self, account: &AccountId) -> Vec<WorkloadView> {
        self.read(|p| p.workloads.lock().owned_by(account).cloned().collect())
            .await
    }

    /// The owner deletes a reservation before it expires: it becomes
    /// to-delete, and its node sees that on its next poll.
    pub async fn delete_workload(&self, meta: Metadata, id: u64) -> Result<WorkloadView, CommandError> {
        let uuid = self.workload(&meta.account, id).await?.uuid;
        let command = WorkloadCommand::Delete {
            caller: meta.account.clone(),
        };
        self.workload_command(uuid, Activation::Load, meta.clone(), command)
            .await?;
        self.workload(&meta.account, id).await
    }

    /// A node reports what it did with a reservation (any reservation: nodes
    /// are operated by the admin). The event belongs to the owner's account.
    pub async fn report_result(
        &self,
        request_id: Option<Uuid>,
        id: u64,
        state: ResultState,
        error: String,
        data: serde_json::Value,
    ) -> Result<WorkloadView, CommandError> {
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let found = projections.workloads.lock().get(id).map(|w| (w.uuid, w.owner.clone()));
        let (uuid, owner) = found.ok_or(CommandError::Workload(WorkloadRejection::NotFound))?;
        let meta = Metadata {
            account: owner.clone(),
            request_id,
            causation_id: None,
        };
        let command = WorkloadCommand::ReportResult { state, error, data };
        self.workload_command(uuid, Activation::Load, meta, command).await?;
        self.workload(&owner, id).await
    }

    /// A node's feed from `from` on (see `Workloads`): at most `max`
    /// reservations, waiting up to `wait` for one when there are none.
    pub async fn poll(&self, node: &str, from: u64, max: usize, wait: std::time::Duration) -> Vec<WorkloadView> {
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = projections.workload_events.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let found: Vec<WorkloadView> = projections
                .workloads
                .lock()
                .poll(node, from, max)
                .into_iter()
                .cloned()
                .collect();
            if !found.is_empty() {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Vec::new();
            }
        }
    }
}
