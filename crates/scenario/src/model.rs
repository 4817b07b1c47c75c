//! The scenario's sections. Durations and rates stay strings with their spans here so that
//! [`crate::load`] can say where a bad one is; [`crate::plan`] turns them into numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub fleet: Fleet,
    pub load: Load,
    pub workload: Workload,
    /// Operation name → thresholds: k6 expressions (`"p(99) < 250ms"`), or k6's object form
    /// (`{ threshold = "error_rate < 5%", abort_on_fail = true, delay_abort_eval = "10s" }`).
    #[serde(default)]
    pub thresholds: BTreeMap<Spanned<String>, Vec<Spanned<toml::Value>>>,
    #[serde(default)]
    pub output: Output,
    /// End-to-end probes run beside the fleet (`[probes.realtime]`, …).
    #[serde(default)]
    pub probes: crate::probes::Probes,
    #[serde(default)]
    pub target: TargetSection,
    #[serde(default)]
    pub delivery: Delivery,
}

/// How much less than planned a run may deliver and still pass.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The share of planned agents that must run (provisioned): 1.0, every one, by default.
    #[serde(default = "default_delivery_agents")]
    pub agents: Spanned<f64>,
    /// The share of planned uploads that may be dropped for want of an idle agent (0.01).
    #[serde(default = "default_delivery_dropped")]
    pub dropped: Spanned<f64>,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            agents: default_delivery_agents(),
            dropped: default_delivery_dropped(),
        }
    }
}

fn default_delivery_agents() -> Spanned<f64> {
    Spanned::new(0..0, 1.0)
}

fn default_delivery_dropped() -> Spanned<f64> {
    Spanned::new(0..0, 0.01)
}

/// Which remote projects this scenario may run against.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// Hosts of the projects allowed as `SUPABASE_URL` (the staging project's); any other remote
    /// host is refused unless FLEETBENCH_ALLOW_HOSTS names it or the long flag is given.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// The project's `/token` limit per client address, per 5 minutes (`[auth.rate_limit]
    /// token_refresh`), when it is not the hosted default of 150.
    #[serde(default)]
    pub token_rate_limit: Option<Spanned<u32>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// How many agents are provisioned (the most the stages may ask for).
    pub agents: Spanned<u32>,
    /// Seeds device profiles, telemetry and anomalies: the same seed, the same fleet.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Device profile → share of the fleet (normalised).
    #[serde(default = "default_mix")]
    pub profiles: BTreeMap<Spanned<String>, f64>,
    /// How many agents sign in at once while the fleet is provisioned.
    #[serde(default = "default_concurrency")]
    pub provision_concurrency: u32,
    /// HTTP connections the whole fleet shares for its uploads (at most this many requests in
    /// flight to the Data API; the rest wait for a connection, and that wait counts as latency).
    #[serde(default = "default_connections")]
    pub connections: Spanned<u32>,
    /// Device profile files (`fleetbench calibrate` writes them); each joins `profiles` by its name.
    #[serde(default)]
    pub profile_files: Vec<Spanned<String>>,
}

fn default_connections() -> Spanned<u32> {
    Spanned::new(0..0, 256)
}

fn default_seed() -> u64 {
    1
}

fn default_concurrency() -> u32 {
    16
}

fn default_mix() -> BTreeMap<Spanned<String>, f64> {
    [("laptop", 0.6), ("desktop", 0.3), ("workstation", 0.1)]
        .into_iter()
        .map(|(k, v)| (Spanned::new(0..0, k.to_string()), v))
        .collect()
}

/// The device profiles agents can be drawn from.
pub const PROFILES: &[&str] = &["laptop", "desktop", "workstation", "server"];

/// How the stages drive the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadModel {
    /// Stages set the number of active agents; each uploads on its own cadence whatever the
    /// target's latency (open model, the real fleet's shape).
    #[default]
    Agents,
    /// Stages set a fleet-wide rate of uploads (`rate = "200/s"`), constant or ramping; each is
    /// carried by an idle agent, and an arrival that finds none idle is counted as dropped (open model).
    ArrivalRate,
    /// Stages set a number of agents that each upload again as soon as the previous upload ends
    /// (after `workload.think_time`): the closed loop of goose, Locust and k6 VUs, and of wrk.
    Closed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    #[serde(default)]
    pub model: LoadModel,
    pub stages: Vec<Stage>,
    /// After the last stage, how long in-flight requests may finish before the run ends.
    #[serde(default = "default_grace")]
    pub grace: Spanned<String>,
}

fn default_grace() -> Spanned<String> {
    Spanned::new(0..0, "5s".into())
}

/// One stage: over `duration`, the level moves linearly from the previous stage's target to this
/// one (a hold when they are equal). The level is `agents` for the `agents` and `closed` models and
/// `rate` (uploads per second, minute or hour: `"200/s"`) for `arrival_rate`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub duration: Spanned<String>,
    #[serde(default)]
    pub agents: Option<Spanned<u32>>,
    #[serde(default)]
    pub rate: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// How often an agent samples its machine.
    pub sample_interval: Spanned<String>,
    /// How often an agent uploads what it sampled (one batch of upload / sample rows).
    pub upload_interval: Spanned<String>,
    /// Ingestion path → share of agents: `rest` (Data API) and `pooler` (SQL through the transaction pooler).
    #[serde(default = "default_ingest")]
    pub ingest: BTreeMap<Spanned<String>, f64>,
    /// Anomaly → share of agents that develop it during the run.
    #[serde(default)]
    pub anomalies: BTreeMap<Spanned<String>, f64>,
    /// Refresh the access token this long before it expires (with up to 10 % jitter).
    #[serde(default = "default_refresh_margin")]
    pub refresh_margin: Spanned<String>,
    /// In the `closed` model, the pause between the end of an upload and the next one.
    #[serde(default)]
    pub think_time: Option<Spanned<String>>,
    /// In the `closed` model, uploads each agent makes before it stops (the run ends when every
    /// agent has made them, or with its stages): the iterations of goose, k6 and Locust.
    #[serde(default)]
    pub iterations: Option<Spanned<u32>>,
    /// How long a request may take, connecting included, before it counts as a `timeout` error
    /// (and its rows wait for a retry).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Spanned<String>,
    /// Samples an agent keeps while the target is unreachable; the oldest are dropped (and counted) beyond it.
    #[serde(default = "default_backlog")]
    pub max_backlog_rows: u32,
    /// Agents replay recorded traces instead of the synthetic model.
    #[serde(default)]
    pub replay: Option<Replay>,
    /// Real collectors (this machine, read by sysinfo) beside the fleet, each its own user,
    /// measured as `collector.insert_metrics`.
    #[serde(default)]
    pub collectors: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Trace files (`fleetbench collect --out`), dealt to the replaying agents in turn.
    pub traces: Vec<Spanned<String>>,
    /// Share of the agents that replay (the rest follow the model).
    #[serde(default = "one")]
    pub share: f64,
    /// How many times faster than real time a trace runs (1: sample for sample).
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Each agent starts at its own point of its trace (false: all at the start).
    #[serde(default = "yes")]
    pub offsets: bool,
    /// Each value scaled by up to ± this share (0: the trace's values exactly).
    #[serde(default)]
    pub jitter: f64,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

fn default_ingest() -> BTreeMap<Spanned<String>, f64> {
    [(Spanned::new(0..0, "rest".to_string()), 1.0)]
        .into_iter()
        .collect()
}

fn default_refresh_margin() -> Spanned<String> {
    Spanned::new(0..0, "60s".into())
}

fn default_request_timeout() -> Spanned<String> {
    Spanned::new(0..0, "30s".into())
}

fn default_backlog() -> u32 {
    3600
}

pub const INGEST_PATHS: &[&str] = &["rest", "pooler"];
pub const ANOMALIES: &[&str] = &["thermal_runaway", "memory_leak", "disk_filling"];

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Remove the run's users and every row they own from the target when the run ends.
    #[serde(default)]
    pub cleanup: bool,
    /// Width of the time windows of the interval histograms.
    #[serde(default)]
    pub window: Option<Spanned<String>>,
    /// How often the target's Metrics API is scraped through the run (`"5s"` by default), or
    /// `"off"`.
    #[serde(default)]
    pub server_metrics: Option<Spanned<String>>,
    /// A Prometheus remote-write URL the run's live series go to, once a second.
    #[serde(default)]
    pub prometheus_remote_write: Option<Spanned<String>>,
}
