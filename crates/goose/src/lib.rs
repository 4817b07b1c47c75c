//! The scenario's agents as goose 0.19 users (`fleetbench goose SCENARIO -- <goose flags>`), so that goose's command line, console, reports,
//! thresholds and baselines measure them.
//!
//! Each goose user is one agent. Its on-start transaction provisions it as the engine does (an
//! admin-created user tagged with the run, a password sign-in, its device), and its one
//! transaction, `upload`, samples a batch from the same telemetry model (or trace) and sends it on
//! the agent's ingestion path: refreshed before the token expires, signed in again on 401. HTTP
//! goes through goose's own client and is timed by goose; the pooler path's SQL is timed here and
//! recorded with `record_custom_request_duration` as `PG pooler.insert_metrics`. Request bodies
//! and answers are the engine's own ([`fleetbench_fleet::target::wire`]).
//!
//! What goose does differently (docs/goose.md): it is a closed loop only (a user's next upload
//! starts `think_time` after the last one ended, whatever the stages say about rates), it times an
//! HTTP request to the response headers, and a failed upload is retried at the next iteration
//! rather than after a backoff.
//!
//! `--cross-check` runs the same closed workload (`load.model = "closed"` with
//! `workload.iterations`) with fleetbench's engine and then with goose against the same target,
//! and compares them operation by operation: request counts must be equal, medians and 99th
//! percentiles within `--tolerance` of each other (or `--min-delta` apart): [`cross_check`].
//!
//! # Layout
//! - [`users`]: the goose users' transactions ([`Fleet`]).
//! - this file: the attack ([`attack`]), goose's configuration from the scenario ([`configure`]),
//!   the rows' account ([`write_rows`]).
//! - [`cross_check`]: the engine's run of the same workload, and the comparison.
//!
//! A crate of its own so that goose and its dependencies are built only with the binary's `goose`
//! feature.

use std::sync::Arc;

use anyhow::Context;
use fleetbench_scenario::{LoadModel, Plan};
use goose::config::GooseConfiguration;
use goose::prelude::*;

pub mod cross_check;
mod users;

pub use users::{Fleet, RowCounts};

/// Why a goose attack did not end with its metrics.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// Every report was written; goose's thresholds failed (listed with what was observed).
    #[error("goose thresholds failed: {0}")]
    Thresholds(String),
    #[error("goose: {0}")]
    Goose(String),
}

/// What goose's flags leave unset, taken from the scenario.
pub fn configure(
    mut config: GooseConfiguration,
    flags: &[String],
    plan: &Plan,
    api_url: &str,
    out: &std::path::Path,
) -> GooseConfiguration {
    config.host.get_or_insert_with(|| api_url.to_string());
    config.users.get_or_insert(plan.agents as usize);
    if config.increase_rate.is_none() && config.increase_time.is_none() {
        // The first stage's ramp to its level, or everyone within a second.
        let (end, level) = plan.stages.first().copied().unwrap_or_default();
        let rate = (level / end.as_secs_f64().max(1.0)).max(1.0);
        config.increase_rate = Some(format!("{rate:.3}"));
    }
    let planned = flags
        .iter()
        .any(|f| f == "--test-plan" || f.starts_with("--test-plan="));
    if !planned && config.run_time.is_none() && config.iterations.is_none() {
        match plan.iterations {
            Some(n) => config.iterations = Some(n as usize),
            None => {
                config.run_time = Some(format!("{}s", plan.duration().as_secs().max(1)));
                // Everything the users did, starting included: as fleetbench counts.
                config.no_reset_metrics = true;
            }
        }
    }
    if config.report_file.is_empty() {
        for name in ["goose-report.html", "goose-report.json"] {
            config
                .report_file
                .push(out.join(name).display().to_string());
        }
    }
    config
        .timeout
        .get_or_insert_with(|| format!("{:.3}", plan.request_timeout.as_secs_f64()));
    // Two processes (or tests) at once must not fight over goose's controller ports.
    config.no_telnet = true;
    config.no_websocket = true;
    config
}

/// The goose attack for `fleet`: one scenario, the agents' two transactions.
pub async fn attack(
    fleet: Arc<Fleet>,
    config: GooseConfiguration,
) -> Result<goose::metrics::GooseMetrics, AttackError> {
    let provision: TransactionFunction = {
        let fleet = fleet.clone();
        Arc::new(move |user| {
            let fleet = fleet.clone();
            Box::pin(async move { fleet.provision(user).await })
        })
    };
    let upload: TransactionFunction = {
        let fleet = fleet.clone();
        Arc::new(move |user| {
            let fleet = fleet.clone();
            Box::pin(async move { fleet.upload(user).await })
        })
    };
    let mut agents = scenario!("DesktopAgent")
        .register_transaction(
            Transaction::new(provision)
                .set_name("provision")
                .set_on_start(),
        )
        .register_transaction(Transaction::new(upload).set_name("upload"));
    // A closed loop pauses its think time; agents upload once an interval, which goose's loop
    // can only approach as a pause of one interval after each upload (there is no rate in goose).
    let think = match fleet.plan.model {
        LoadModel::Closed => fleet.plan.think_time,
        LoadModel::Agents | LoadModel::ArrivalRate => fleet.plan.upload_interval,
    };
    if !think.is_zero() {
        agents = agents
            .set_wait_time(think, think)
            .map_err(|e| AttackError::Goose(e.to_string()))?;
    }
    let metrics = GooseAttack::initialize_with_config(config)
        .map_err(|e| AttackError::Goose(e.to_string()))?
        .register_scenario(agents)
        .execute()
        .await;
    match metrics {
        Ok(m) => Ok(m),
        // Every report was written; the thresholds decide the exit code, as `run`'s do.
        Err(GooseError::ThresholdsFailed { failed, .. }) => Err(AttackError::Thresholds(
            failed
                .iter()
                .map(|t| format!("{} (observed {})", t.rule, t.observed))
                .collect::<Vec<_>>()
                .join("; "),
        )),
        Err(e) => Err(AttackError::Goose(e.to_string())),
    }
}

/// fleetbench's account of the goose run's rows, beside goose's reports.
pub fn write_rows(out: &std::path::Path, fleet: &Fleet) -> anyhow::Result<()> {
    let counts = fleet.rows();
    let rows = serde_json::json!({
        "run_id": fleet.run_id(),
        "rows_sampled": counts.sampled,
        "rows_written": counts.written,
        "rows_dropped": counts.dropped,
    });
    let path = out.join("goose-rows.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&rows)?)
        .with_context(|| format!("writing {}", path.display()))
}
