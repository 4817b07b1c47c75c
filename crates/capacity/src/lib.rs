//! `fleetbench capacity`'s pure parts: the search for the largest load that holds an SLO, and the
//! report it ends in. Running a step against a target is the caller's (a `measure(level)` closure),
//! so both are tested apart from any target; the page is drawn by `fleetbench-report`.
//!
//! # Layout
//! - [`search`]: SLO text, stepping then bisection, judging a step from its aggregate.
//! - [`report`]: `capacity.json`: the knee, the binding limit, the model per compute size.

pub mod report;
pub mod search;

pub use report::{ComputeSize, Estimate, Report, SIZES, binding, compute_size, model};
pub use search::{SearchOutcome, Settings, Step, judge, parse_slo, search, steady};
