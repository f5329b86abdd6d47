//! The payloads of services (`service/{account}/{name}`) and instances
//! (`instance/{account}/{name}`), with Unikraft Cloud's semantics: a
//! service maps public ports to a port of its instances, and is reached at
//! its FQDN; an instance is an address that serves while its lease lives.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::LeaseId;

/// What the frontend does on a public port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handler {
    /// Terminate TLS.
    Tls,
    /// Speak HTTP (route by Host, add X-Forwarded-*).
    Http,
    /// Answer 301 to https.
    Redirect,
}

/// A public port of a service and the port of its instances it maps to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRule {
    pub port: u16,
    pub destination_port: u16,
    pub handlers: Vec<Handler>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCreated {
    pub uuid: Uuid,
    pub name: String,
    /// `NAME-xxxxxxxx.DOMAIN`.
    pub fqdn: String,
    pub ports: Vec<PortRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_limit: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<u16>,
    /// Created by `deploy -p`: deleted with its last instance.
    #[serde(default)]
    pub auto: bool,
}

/// Why a service was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceDeleteReason {
    Request,
    /// An automatic service's last instance was removed.
    LastInstanceRemoved,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDeleted {
    pub uuid: Uuid,
    pub reason: ServiceDeleteReason,
}

/// An instance was attached to a service: it serves at `address` while
/// `lease` (the account's) lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRegistered {
    pub uuid: Uuid,
    pub name: String,
    /// The service's name (same account).
    pub service: String,
    /// `HOST:PORT` the proxy forwards to.
    pub address: String,
    pub lease: LeaseId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRemoved {
    pub uuid: Uuid,
}
