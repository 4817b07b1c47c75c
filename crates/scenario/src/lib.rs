//! Scenario files (`scenarios/*.toml`): what a run does, typed and strict. Unknown keys are errors;
//! every problem is reported with the file, line and column it comes from, all of them at once,
//! before anything is sent. `--set key=value` overrides any key before validation.
//!
//! # Layout
//! - [`model`]: the scenario's sections as Rust types (serde, `deny_unknown_fields`).
//! - [`load`]: reading a file, applying overrides, collecting errors with their locations.
//! - [`threshold`]: k6-style threshold expressions (`p(99) < 250ms`, `error_rate < 0.1%`).
//! - [`plan`]: the load stages reduced to one plan: target active agents over time.
//! - [`profile`]: device profile files (a fitted synthetic model and a machine).
//! - [`probes`]: the `[probes.*]` sections (end-to-end probes beside the fleet) and their plans.

pub mod load;
pub mod model;
pub mod plan;
pub mod probes;
pub mod profile;
pub mod threshold;

pub use load::{Located, ScenarioError, load_file, load_str, probe_plan};
pub use model::{LoadModel, Scenario};
pub use plan::Plan;
pub use threshold::{Metric, Threshold};

/// The operation names INTERFACE.md fixes; a threshold on any other name is invalid input.
pub const OPERATIONS: &[&str] = &[
    "auth.admin_create_user",
    "auth.password",
    "auth.refresh",
    "rest.create_device",
    "rest.insert_metrics",
    "pooler.insert_metrics",
    "rest.select_metrics",
    "rpc.match_memories",
    "realtime.connect",
    "realtime.rejoin",
    "realtime.alert_delivery",
    "functions.webhook_delivery",
    "pooler.connect",
    "collector.insert_metrics",
];
