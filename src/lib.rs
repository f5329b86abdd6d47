//! tenure: an event-sourced control plane. See ARCHITECTURE.md for the map.

pub mod clock;
pub mod domain;
pub mod store;
