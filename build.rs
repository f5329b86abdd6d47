//! Generates the server side of etcd's gRPC services (`src/grpc`) with
//! tonic's manual builder: the services and methods are named here, the
//! messages are Rust structs in `src/grpc/pb.rs`, so no `.proto` file or
//! `protoc` is needed.

use tonic_build::manual::{Builder, Method, Service};

/// A method: (Rust name, route name, request, response, client streams, server streams).
type Spec = (&'static str, &'static str, &'static str, &'static str, bool, bool);

fn service(name: &str, methods: &[Spec]) -> Service {
    let mut service = Service::builder().name(name).package("etcdserverpb");
    for &(rust, route, input, output, client_streaming, server_streaming) in methods {
        let mut method = Method::builder()
            .name(rust)
            .route_name(route)
            .input_type(format!("crate::grpc::pb::{input}"))
            .output_type(format!("crate::grpc::pb::{output}"))
            .codec_path("tonic::codec::ProstCodec");
        if client_streaming {
            method = method.client_streaming();
        }
        if server_streaming {
            method = method.server_streaming();
        }
        service = service.method(method.build());
    }
    service.build()
}

fn main() {
    let services = [
        service(
            "KV",
            &[
                ("range", "Range", "RangeRequest", "RangeResponse", false, false),
                ("put", "Put", "PutRequest", "PutResponse", false, false),
                (
                    "delete_range",
                    "DeleteRange",
                    "DeleteRangeRequest",
                    "DeleteRangeResponse",
                    false,
                    false,
                ),
                ("txn", "Txn", "TxnRequest", "TxnResponse", false, false),
                (
                    "compact",
                    "Compact",
                    "CompactionRequest",
                    "CompactionResponse",
                    false,
                    false,
                ),
            ],
        ),
        service(
            "Lease",
            &[
                (
                    "lease_grant",
                    "LeaseGrant",
                    "LeaseGrantRequest",
                    "LeaseGrantResponse",
                    false,
                    false,
                ),
                (
                    "lease_revoke",
                    "LeaseRevoke",
                    "LeaseRevokeRequest",
                    "LeaseRevokeResponse",
                    false,
                    false,
                ),
                (
                    "lease_keep_alive",
                    "LeaseKeepAlive",
                    "LeaseKeepAliveRequest",
                    "LeaseKeepAliveResponse",
                    true,
                    true,
                ),
                (
                    "lease_time_to_live",
                    "LeaseTimeToLive",
                    "LeaseTimeToLiveRequest",
                    "LeaseTimeToLiveResponse",
                    false,
                    false,
                ),
                (
                    "lease_leases",
                    "LeaseLeases",
                    "LeaseLeasesRequest",
                    "LeaseLeasesResponse",
                    false,
                    false,
                ),
            ],
        ),
        service(
            "Watch",
            &[("watch", "Watch", "WatchRequest", "WatchResponse", true, true)],
        ),
        service(
            "Maintenance",
            &[("status", "Status", "StatusRequest", "StatusResponse", false, false)],
        ),
        service(
            "Cluster",
            &[(
                "member_list",
                "MemberList",
                "MemberListRequest",
                "MemberListResponse",
                false,
                false,
            )],
        ),
        service(
            "Auth",
            &[(
                "authenticate",
                "Authenticate",
                "AuthenticateRequest",
                "AuthenticateResponse",
                false,
                false,
            )],
        ),
    ];
    // Clients too: the gRPC load generator (`ops/bench`) and the tests
    // speak to etcd and to tenure with them.
    Builder::new().build_client(true).compile(&services);
}
