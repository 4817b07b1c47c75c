//! One step of `fleetbench capacity`: the scenario held at one level, judged on what it measured
//! after its warm-up, with what the local stack's resources did meanwhile (CPU of the machine and
//! of the stack's processes, Postgres connections against `max_connections`, PgBouncer's waiting
//! clients); its users and rows removed after. The search over steps is `fleetbench_capacity`'s.

use std::sync::Arc;
use std::time::Duration;

use fleetbench_capacity::{self as capacity, Step};
use fleetbench_fleet::{Progress, Target};
use fleetbench_scenario::{LoadModel, Plan};

use crate::Endpoints;

/// The scenario held at `level` (agents, or uploads per second for `arrival_rate`): `warmup`,
/// then `hold`; no thresholds, probes or collectors of its own.
pub fn plan_at(base: &Plan, level: f64, warmup: Duration, hold: Duration) -> Plan {
    let mut p = base.clone();
    p.stages = vec![(warmup, level), (warmup + hold, level)];
    if p.model != LoadModel::ArrivalRate {
        p.agents = level as u32;
    }
    p.thresholds.clear();
    p.probes = Default::default();
    p.collectors = 0;
    p
}

/// Uploads per second that `level` offers.
pub fn offered(plan: &Plan, level: f64) -> f64 {
    match plan.model {
        LoadModel::ArrivalRate => level,
        _ => level / plan.upload_interval.as_secs_f64().max(1e-9),
    }
}

/// What the local stack's resources did during a step.
pub struct Watch {
    sys: sysinfo::System,
    resolved_kind: String,
    admin: Option<String>,
    pooler_console: Option<String>,
}

impl Watch {
    pub fn new(resolved: &Endpoints) -> Watch {
        let mut sys = sysinfo::System::new();
        sys.refresh_cpu_usage();
        // PgBouncer's console is the pooler's own `pgbouncer` database (local stack only).
        let pooler_console = (resolved.config.kind == "local")
            .then(|| {
                resolved
                    .config
                    .db_url
                    .as_ref()
                    .map(|u| u.replace("/postgres?", "/pgbouncer?"))
            })
            .flatten();
        Watch {
            sys,
            resolved_kind: resolved.config.kind.clone(),
            admin: resolved.admin_db_url.clone(),
            pooler_console,
        }
    }

    fn begin(&mut self) {
        self.sys.refresh_cpu_usage();
        self.sys
            .refresh_processes(sysinfo::ProcessesToUpdate::All, true);
    }

    async fn end(&mut self) -> Vec<(String, f64, Option<f64>)> {
        self.sys.refresh_cpu_usage();
        self.sys
            .refresh_processes(sysinfo::ProcessesToUpdate::All, true);
        let cores = self.sys.cpus().len().max(1) as f64;
        let mut out = vec![(
            "machine CPU %".to_string(),
            f64::from(self.sys.global_cpu_usage()),
            Some(100.0),
        )];
        if self.resolved_kind == "local" {
            let me = std::process::id();
            let stack: f64 = self
                .sys
                .processes()
                .values()
                .filter(|p| {
                    let n = p.name().to_string_lossy();
                    n == "postgres"
                        || n == "pgbouncer"
                        || n == "deno"
                        || (n == "fleetbench" && p.pid().as_u32() != me)
                })
                .map(|p| f64::from(p.cpu_usage()))
                .sum();
            out.push((
                "local stack CPU % (of all cores)".into(),
                stack / cores,
                Some(100.0),
            ));
        }
        if let Some(url) = &self.admin
            && let Ok(db) = fleetbench_probes::connect(url).await
            && let Ok(rows) = db
                .query_typed(
                    "select (select count(*) from pg_stat_activity where backend_type = 'client backend')::float8, current_setting('max_connections')::float8",
                    &[],
                )
                .await
            && let Some(row) = rows.first()
        {
            out.push(("Postgres connections".into(), row.get(0), Some(row.get(1))));
        }
        if let Some(url) = &self.pooler_console
            && let Ok(db) = fleetbench_tls::pg::connect(url).await
            && let Ok(msgs) = db.simple_query("SHOW POOLS").await
        {
            let waiting: f64 = msgs
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        r.get("cl_waiting").and_then(|v| v.parse::<f64>().ok())
                    }
                    _ => None,
                })
                .sum();
            out.push(("pooler clients waiting".into(), waiting, None));
        }
        out
    }
}

/// What every step of the search shares.
pub struct StepContext<'a> {
    pub base: &'a Plan,
    pub target: Arc<Target>,
    pub resolved: &'a Endpoints,
    pub slo: &'a [fleetbench_scenario::Threshold],
    pub watch: tokio::sync::Mutex<Watch>,
    pub warmup: Duration,
    pub hold: Duration,
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// One step: the scenario held at `level`, judged on what it measured after its warm-up, with
/// what the resources did meanwhile; its users and rows removed after.
pub async fn measure(ctx: &StepContext<'_>, level: f64) -> Step {
    let plan = plan_at(ctx.base, level, ctx.warmup, ctx.hold);
    let mut step = Step {
        level,
        offered_per_s: offered(&plan, level),
        ..Default::default()
    };
    if *ctx.stop.borrow() {
        step.degraded = Some("interrupted".into());
        return step;
    }
    let run_id = uuid::Uuid::new_v4().to_string();
    let t0 = std::time::Instant::now();
    ctx.watch.lock().await.begin();
    // Throughput: uploads completed (without error) while the level is held, by the clock.
    let progress = Arc::new(Progress::default());
    let counted = {
        let (p, mut phase, (warmup, hold)) = (
            progress.clone(),
            progress.phase.subscribe(),
            (ctx.warmup, ctx.hold),
        );
        tokio::spawn(async move {
            let _ = phase.wait_for(|x| *x >= 1).await;
            tokio::time::sleep(warmup).await;
            let done = || {
                p.uploads
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .saturating_sub(p.errors.load(std::sync::atomic::Ordering::Relaxed))
            };
            let before = done();
            tokio::time::sleep(hold).await;
            (done() - before.min(done())) as f64 / hold.as_secs_f64()
        })
    };
    let result = fleetbench_fleet::run(
        plan.clone(),
        ctx.target.clone(),
        run_id.clone(),
        progress,
        ctx.stop.clone(),
    )
    .await;
    step.resources = ctx.watch.lock().await.end().await;
    step.seconds = t0.elapsed().as_secs_f64();
    match result {
        Ok(o) => {
            // Whole windows after the warm-up, to the end of the hold.
            let w = o.aggregate.window_us;
            let from = (o.load_start_us + ctx.warmup.as_micros() as u64).div_ceil(w) * w;
            let held_s = ((o.load_start_us + (ctx.warmup + ctx.hold).as_micros() as u64)
                .saturating_sub(from) as f64
                / 1e6)
                .max(1e-3);
            step.achieved_per_s = counted.await.unwrap_or(0.0);
            (step.dropped, step.late) = (o.aggregate.dropped, o.aggregate.late);
            capacity::judge(&mut step, &o.aggregate, from, held_s, ctx.slo);
        }
        Err(e) => step.degraded = Some(format!("the step could not run: {e}")),
    }
    if let Some(db) = &ctx.resolved.admin_db_url {
        let _ = fleetbench_fleet::cleanup(db, &run_id).await;
    }
    step
}
