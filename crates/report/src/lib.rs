//! The run's `index.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched)
//! that answers "did it hold, where did it break": the verdict and every threshold, the run's facts,
//! a table per operation (intended-start latency and service time), throughput and errors over
//! time with the planned load shape, latency percentiles over time, each operation's full
//! percentile spectrum on HdrHistogram's log scale, and errors by kind.
//!
//! # Layout
//! - [`svg`]: the line charts (hand-written; why is in its module doc).
//! - [`rundir`]: the run directory's files: written, read back, drawn again, merged.
//! - [`calibration_page`]: a trace beside the model fitted to it (`fleetbench calibrate`).
//! - [`capacity_page`]: the capacity run's page.
//! - [`compare`]: a run against a baseline, per operation and percentile, with tolerances.
//! - [`junit`]: the run's `junit.xml`, a test case per threshold, probe, delivery and abort.
//! - [`markdown`]: the run's `summary.md` (verdict, operations, thresholds, probes) for CI job
//!   summaries.
//! - [`page`]: the stylesheet, colours and frame every page shares.
//! - [`run_page`]: the run's page, a function per section, from a `Summary`, the run's
//!   `Aggregate` and its [`LoadShape`].

pub mod calibration_page;
pub mod capacity_page;
pub mod compare;
pub mod junit;
pub mod markdown;
pub mod page;
pub mod run_page;
pub mod rundir;
pub mod svg;

pub use run_page::{html, html_with};

/// The load the scenario asked for, on the run's clock.
pub struct LoadShape {
    /// What the level is: `active agents` or `uploads/s`.
    pub unit: String,
    /// (seconds since the run started, planned level), the stages' corners.
    pub points: Vec<(f64, f64)>,
    /// Measured once a window: (seconds since the run started, active agents, uploads in flight).
    pub gauges: Vec<(f64, f64, f64)>,
}
