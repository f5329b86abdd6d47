//! What clients call on connect or for operations: `Maintenance.Status`,
//! `Cluster.MemberList`, and `Auth.Authenticate` (the token as password).

use tonic::{Request, Response, Status};

use super::generated::{auth_server::Auth, cluster_server::Cluster, maintenance_server::Maintenance};
use super::{pb, Etcd};
use crate::etcd::{Identity, VERSION};

#[tonic::async_trait]
impl Maintenance for Etcd {
    /// This node, as the one member and leader of the caller's cluster;
    /// the raft indexes are the log's position.
    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let position = self.control.hub().store.head();
        let id = Identity::of(&caller.account);
        Ok(Response::new(pb::StatusResponse {
            header: self.current_header(&caller.account),
            version: VERSION.into(),
            db_size: 0,
            leader: id.member_id,
            raft_index: position,
            raft_term: id.raft_term,
            raft_applied_index: position,
            errors: Vec::new(),
            db_size_in_use: 0,
            is_learner: false,
        }))
    }
}

#[tonic::async_trait]
impl Cluster for Etcd {
    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let id = Identity::of(&caller.account);
        Ok(Response::new(pb::MemberListResponse {
            header: self.current_header(&caller.account),
            members: vec![pb::Member {
                id: id.member_id,
                name: "tenure".into(),
                peer_urls: Vec::new(),
                client_urls: vec![self.url.clone()],
                is_learner: false,
            }],
        }))
    }
}

#[tonic::async_trait]
impl Auth for Etcd {
    /// `name` is the account, `password` its token; the answer is the
    /// token, which the client then sends in the `token` metadata.
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        if self.control.authenticator().is_local() {
            return Err(Status::failed_precondition("etcdserver: authentication is not enabled"));
        }
        let req = request.into_inner();
        let failed = || Status::invalid_argument("etcdserver: authentication failed, invalid user ID or password");
        let header = format!("Bearer {}", req.password);
        let principal = self
            .control
            .authenticate(Some(header.as_bytes()))
            .await
            .map_err(|_| failed())?;
        match principal.account() {
            Ok(account) if account.to_string() == req.name => Ok(Response::new(pb::AuthenticateResponse {
                header: self.current_header(&account),
                token: req.password,
            })),
            _ => Err(failed()),
        }
    }
}
