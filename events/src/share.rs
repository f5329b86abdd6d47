//! The payloads of a share reservation's stream (`share/{token}`). Tokens
//! are global (the frontend routes `TOKEN.DOMAIN`), so the stream is named by
//! the token alone and the owner is in the payload.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AccountId, LeaseId};

/// Who can reach a share through the frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareMode {
    /// Anyone, at `http://TOKEN.DOMAIN:PORT/`.
    Public,
    /// Only requests carrying an access grant.
    Private,
}

/// What the backend does with a request (zrok's backend modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendMode {
    /// Reverse-proxy to the target URL.
    Proxy,
    /// Serve the files of the target directory.
    Web,
}

/// A share was reserved: the token is held until it is released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareReserved {
    pub token: String,
    pub owner: AccountId,
    pub mode: ShareMode,
    pub backend_mode: BackendMode,
    /// A URL (proxy) or a directory (web).
    pub target: String,
    /// The token is a name the owner chose (`--unique-name`).
    pub unique_name: bool,
}

/// A backend session started: the share is served while `lease` lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSessionStarted {
    pub session: Uuid,
    /// The owner's lease that the backend keeps alive.
    pub lease: LeaseId,
    /// For a web share: where the backend serves the files (`HOST:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Why a backend session ended (besides its lease ending, which the lease's
/// own stream records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// The backend stopped (Ctrl-C).
    Stopped,
    /// Another backend session took over (`--replace`).
    Replaced,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSessionEnded {
    pub session: Uuid,
    pub cause: SessionEnd,
}

/// An account was granted access to a private share. Only the SHA-256 of the
/// grant's secret is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareAccessGranted {
    pub grant: String,
    pub account: AccountId,
    pub sha256: String,
}

/// The share was released: its session and grants end, its token is free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareReleased {
    pub token: String,
}
