//! tenure: an event-sourced control plane. See ARCHITECTURE.md for the map.

pub mod clock;
pub mod domain;
pub mod store;
pub mod actors;
pub mod control;
pub mod api;
pub mod logging;
pub mod server;
pub mod cli;
