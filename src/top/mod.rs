//! `shop top`'s engine (SPEC section 15): sample a running stack, turn samples into snapshots,
//! draw a snapshot, and run the interactive dashboard.
//!
//! - [`snapshot`]: the figures of one refresh and the pure [`snapshot::Sampler`] deriving them
//! - [`fetch`]: reading the supervisor's control API and the instances' `/metrics`; the key actions
//! - [`render`]: a snapshot as a frame (pure; tested with ratatui's `TestBackend`) or as text
//! - [`app`]: the full-screen loop: keys, refresh, and a terminal always restored

pub mod app;
pub mod fetch;
pub mod render;
pub mod snapshot;
