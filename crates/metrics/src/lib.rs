//! What a run measured. Every driver emits one [`Sample`] per operation; each worker adds its
//! samples to its own [`Aggregate`] (no lock on the hot path); aggregates merge exactly (HdrHistogram
//! addition), so merging workers and merging shard runs are the same operation; reporters are
//! functions of a finished [`Summary`].
//!
//! Latency is kept twice: from the *intended* start (what a user waiting on the schedule sees; no
//! coordinated omission) and from the actual send (service time).
//!
//! # Layout
//! - [`sample`]: the sample record and its outcome (errors are data, counted by kind).
//! - [`aggregate`]: per-operation histograms, counters and time windows; `add`, `merge`, `finish`.
//! - [`summary`]: `summary.json`'s shape, and threshold evaluation against it.
//! - [`hlog`]: the HdrHistogram V2 interval log (`histograms.hlog`).
//! - `spill`: closed windows in a temporary file per operation, so that memory stays flat.
//! - [`server`]: the target's Metrics API through the run (`server.json`) and the panels drawn
//!   from it.

pub mod aggregate;
pub mod hlog;
pub mod sample;
pub mod server;
mod spill;
pub mod summary;

pub use aggregate::Aggregate;
pub use sample::{Outcome, Sample};
pub use summary::{SCHEMA_VERSION, Summary};
