//! One run, from a plan and a resolved target to a finished summary and run directory: the fleet
//! with its probes and real collectors beside it on one clock ([`run`]), or one probe alone
//! ([`probe`]); then the summary, the run directory and the cleanup the scenario asks for. The
//! binary parses, resolves the target, shows progress and prints; tests call these in-process.
//!
//! # Layout
//! - [`endpoints`]: where a run sends (the API and the SQL URLs it may use) and what may be shown of it.
//! - [`fleet_run`]: [`run`], a scenario's fleet with its probes and collectors.
//! - [`probe_run`]: [`probe`], one probe alone.
//! - [`platform`]: the project's Auth configuration from the Management API (limits, token lifetime,
//!   IP address forwarding).
//! - [`preflight`]: what the project's `/token` limit allows a plan, before anything is sent.
//! - [`remote_write`]: the run's live series to Prometheus remote-write.
//! - [`server`]: the target's Metrics API scraped through the run (`server.json`).
//! - [`finish`]: the summary from the aggregate and the probes' reports, the run directory, cleanup.
//! - [`step`]: one step of a capacity search: the scenario held at a level, judged, with what the
//!   local stack's resources did.

pub mod endpoints;
pub mod finish;
pub mod fleet_run;
pub mod platform;
pub mod preflight;
pub mod probe_run;
pub mod remote_write;
pub mod server;
pub mod step;

use std::path::PathBuf;

use fleetbench_fleet::Clock;
use fleetbench_metrics::Summary;
use fleetbench_metrics::summary::Environment;

pub use endpoints::{Endpoints, redact};
pub use finish::Cleanup;
pub use fleet_run::run;
pub use probe_run::probe;

/// Everything a run needs, built and checked by the caller.
pub struct RunSpec<P> {
    /// The scenario's plan (a fleet run) or the probe's settings (a probe alone).
    pub plan: P,
    /// The scenario as resolved (overrides applied, no secret), written as `scenario.toml`.
    pub resolved_toml: String,
    pub endpoints: Endpoints,
    /// Tags every user and row the run creates (`fleetbench cleanup --run-id`).
    pub run_id: String,
    /// The clock's zero: now, or the shared start of a sharded run.
    pub clock: Clock,
    /// The run directory, already created and known to be writable.
    pub out: PathBuf,
    /// fleetbench's version and commit, and the machine generating the load.
    pub environment: Environment,
    /// How the live export authenticates (from the environment, never in the scenario).
    pub remote_write_auth: remote_write::Auth,
}

/// A run that reached its end (or was stopped by a signal): its directory is written.
pub struct Finished {
    pub summary: Summary,
    /// The fleet's own account (rows, agents, late and dropped work); none for a probe alone.
    pub fleet: Option<fleetbench_fleet::RunOutcome>,
    pub cleanup: Cleanup,
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the target: {0}")]
    Target(String),
    #[error(transparent)]
    Fleet(#[from] fleetbench_fleet::EngineError),
    #[error("the run directory: {0}")]
    RunDir(String),
}
