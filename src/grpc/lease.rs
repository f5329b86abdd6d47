//! `etcdserverpb.Lease`: Grant, Revoke, the KeepAlive stream, TimeToLive,
//! Leases.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::generated::lease_server::Lease;
use super::{pb, Etcd};
use crate::etcd;

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for Etcd {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let granted = etcd::grant(&self.control, caller.meta(), req.id, req.ttl).await?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.current_header(&caller.account),
            id: granted.lease.get(),
            ttl: granted.ttl_s,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let deleted = etcd::revoke(&self.control, caller.meta(), request.get_ref().id).await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: self.header(&caller.account, deleted.revision),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// One answer per request, in order, until the client closes its side
    /// or the server stops (etcd answers an unknown lease with TTL 0).
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let mut closing = self.control.closing();
        let closed = async move {
            let _ = closing.wait_for(|closed| *closed).await;
        };
        let etcd = self.clone();
        let answers = request.into_inner().take_until(closed).then(move |req| {
            let (etcd, account, meta, via) = (etcd.clone(), caller.account.clone(), caller.meta(), caller.via());
            async move {
                let id = req?.id;
                let ttl = etcd::keep_alive(&etcd.control, meta, id, &via).await?;
                Ok(pb::LeaseKeepAliveResponse {
                    header: etcd.current_header(&account),
                    id,
                    ttl,
                })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let req = request.into_inner();
        let info = etcd::time_to_live(&self.control, &caller.account, req.id, req.keys, &caller.via()).await?;
        let header = self.current_header(&caller.account);
        Ok(Response::new(match info {
            Some(info) => pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: info.remaining_s,
                granted_ttl: info.granted_ttl_s,
                keys: info.keys.into_iter().map(|k| k.0).collect(),
            },
            // etcd answers an unknown lease with TTL -1, not an error.
            None => pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        }))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let leases = self
            .control
            .leases(&caller.account)
            .await
            .map_err(etcd::EtcdError::from)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.current_header(&caller.account),
            leases: leases.into_iter().map(|l| pb::LeaseStatus { id: l.get() }).collect(),
        }))
    }
}
