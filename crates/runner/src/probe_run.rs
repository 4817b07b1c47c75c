//! One probe alone (`fleetbench probe NAME`): a run directory of its own, with the probe's figures
//! in `summary.json` and the page; its users and rows removed unless kept. Also the context every
//! probe reaches the target with, alone or beside a fleet.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetbench_fleet::Target;
use fleetbench_probes::Context;
use fleetbench_scenario::probes::ProbesPlan;
use tokio::sync::watch;

use crate::finish::{self, Cleanup};
use crate::{Finished, RunError, RunSpec};

/// A probe alone measures on one-second windows.
const WINDOW_US: u64 = 1_000_000;

/// What a probe reaches the target with: the run's endpoints, id and clock, and the fleet's
/// phase (probes measure from the start of the load phase).
pub fn context<P>(
    spec: &RunSpec<P>,
    target: Arc<Target>,
    window_us: u64,
    phase: watch::Receiver<u8>,
) -> Context {
    Context {
        target,
        http: fleetbench_probes::http_client(),
        admin_db_url: spec.endpoints.admin_db_url.clone(),
        pooler_db_url: spec.endpoints.config.db_url.clone(),
        direct_db_url: spec.endpoints.direct_db_url.clone(),
        run_id: spec.run_id.clone(),
        clock: spec.clock,
        window_us,
        phase,
    }
}

/// Runs probe `name` with `spec.plan`'s settings until it ends or `stop`; `keep` leaves its users
/// and rows in place.
pub async fn probe(
    name: &str,
    spec: RunSpec<ProbesPlan>,
    keep: bool,
    stop: watch::Receiver<bool>,
) -> Result<Finished, RunError> {
    let target = Arc::new(
        Target::new(
            spec.endpoints.config.clone(),
            2,
            16,
            fleetbench_fleet::target::DEFAULT_TIMEOUT,
        )
        .map_err(RunError::Target)?,
    );
    // Alone, a probe is in its load phase from the start.
    let (_phase, phase) = watch::channel(1u8);
    let ctx = context(&spec, target, WINDOW_US, phase);
    let started = SystemTime::now();
    let o = fleetbench_probes::run_until(name, &spec.plan, &ctx, stop.clone()).await;
    let aggregate = o.aggregate.clone();
    let summary = finish::summary(
        &spec,
        &format!("probe-{name}"),
        &aggregate,
        Duration::from_micros(spec.clock.now_us()),
        None,
        (*stop.borrow(), None),
        &[],
        vec![(name.to_string(), o)],
    );
    let shape = fleetbench_report::LoadShape {
        unit: "active agents".into(),
        points: Vec::new(),
        gauges: Vec::new(),
    };
    finish::write_dir(&spec, &summary, &aggregate, &shape, None, started)?;
    let cleanup = if keep {
        Cleanup::Kept
    } else {
        finish::clean_until(&spec.endpoints, &spec.run_id, stop, &|_| {}).await
    };
    Ok(Finished {
        summary,
        fleet: None,
        cleanup,
    })
}
