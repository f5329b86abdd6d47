//! tenure: an event-sourced control plane. See ARCHITECTURE.md for the map.

pub mod actors;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod control;
pub mod domain;
pub mod etcd;
pub mod grpc;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod watch;
