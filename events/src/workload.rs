//! The payloads of a workload reservation's stream (`workload/{uuid}`): a
//! zos-style typed workload for a node, signed by its owner.
//!
//! The typed workloads follow zos's `provision` package (field names and
//! JSON shapes), so a zos node agent's structs read them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::AccountId;

/// A workload, tagged by its type: `{"type": "container", "data": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Workload {
    Container(Container),
    Volume(Volume),
    Network(Network),
    Zdb(Zdb),
    Debug(Debug),
    Kubernetes(Kubernetes),
}

impl WorkloadReserved {
    /// The typed workload.
    pub fn workload(&self) -> Result<Workload, serde_json::Error> {
        Workload::parse(&self.kind, &self.data)
    }
}

impl Workload {
    /// Reads `data` as a workload of type `kind`; errors name the field.
    pub fn parse(kind: &str, data: &serde_json::Value) -> Result<Workload, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": kind, "data": data }))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Container(_) => "container",
            Workload::Volume(_) => "volume",
            Workload::Network(_) => "network",
            Workload::Zdb(_) => "zdb",
            Workload::Debug(_) => "debug",
            Workload::Kubernetes(_) => "kubernetes",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// URL of the flist.
    pub flist: String,
    #[serde(default)]
    pub flist_storage: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Values encrypted with the node's public key.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    #[serde(default)]
    pub entrypoint: String,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    pub network: ContainerNetwork,
    pub capacity: ContainerCapacity,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub volume_id: String,
    pub mountpoint: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerNetwork {
    pub network_id: String,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub public_ip6: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerCapacity {
    pub cpu: u32,
    /// MiB.
    pub memory: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskType {
    Hdd,
    Ssd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// GiB.
    pub size: u64,
    #[serde(rename = "type")]
    pub disk_type: DiskType,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: String,
    /// The network's IP range, CIDR (`10.1.0.0/16`).
    pub iprange: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZdbMode {
    Seq,
    User,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zdb {
    /// GiB.
    pub size: u64,
    pub mode: ZdbMode,
    /// Encrypted with the node's public key.
    #[serde(default)]
    pub password: String,
    pub disk_type: DiskType,
    #[serde(default)]
    pub public: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debug {
    pub host: String,
    pub port: u16,
    pub channel: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// The VM size (vCPU, memory, disk), 1 to 255.
    pub size: u8,
    pub network_id: String,
    pub ip: String,
    /// Hex, encrypted.
    pub cluster_secret: String,
    /// Empty: this node is a master.
    #[serde(default)]
    pub master_ips: Vec<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
}

/// A workload was reserved on a node by its owner, who signed it. `data`
/// is kept exactly as signed (it was checked to be a valid workload of
/// its type when reserved; [`WorkloadReserved::workload`] reads it typed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadReserved {
    pub node: String,
    pub owner: AccountId,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
    /// When the owner created it (signed).
    pub created: DateTime<Utc>,
    /// Seconds from `created` until it is decommissioned.
    pub duration_s: i64,
    /// The owner's ed25519 signature over the canonical form (base64).
    pub signature: String,
}

/// What the node reported after acting on the reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultState {
    Ok,
    Error,
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadResultReported {
    pub state: ResultState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// What the node made (its type depends on the workload's).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Why a reservation is to be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// Its owner deleted it before it expired.
    Request,
    /// Its duration ran out.
    Expired,
}

/// The reservation is to be deleted: its node sees it on its next poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadDeleteRequested {
    pub reason: DeleteReason,
}
