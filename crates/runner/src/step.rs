//! One step of `fleetbench capacity`: the scenario held at one level, judged on what it measured
//! after its warm-up, with what the resources did meanwhile: the target's, from its Metrics API
//! when it has one (database CPU against its compute size's cores, connections against
//! `max_connections`, pooler clients against their limit), else the local stack's (CPU of its
//! processes, Postgres connections, PgBouncer's waiting clients), and the load generator's CPU; its
//! users and rows removed after. The search over steps is `fleetbench_capacity`'s.

use std::sync::Arc;
use std::time::Duration;

use fleetbench_capacity::{self as capacity, Step};
use fleetbench_fleet::{Progress, Target};
use fleetbench_scenario::{LoadModel, Plan};

use fleetbench_metrics::server::{Scrape, busy_cpu, cpus, total, total_where};

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

/// What the resources did during a step: the target's own through its Metrics API (database CPU
/// against the cores of its compute size, connections against `max_connections`, pooler clients
/// against their limit, over the held part of the step), and without one the local stack's
/// processes and consoles; the load generator's CPU always.
pub struct Watch {
    sys: sysinfo::System,
    resolved_kind: String,
    admin: Option<String>,
    pooler_console: Option<String>,
    /// The target's Metrics API, while it answers.
    metrics: Option<Arc<crate::server::MetricsApi>>,
    /// The target's CPU cores (its compute size's), when known.
    target_cores: Option<f64>,
    /// The shared pooler's client limit (its compute size's), when known.
    pooler_max_clients: Option<f64>,
}

impl Watch {
    /// A watch on `resolved`, whose compute size, if known, has `(cores, pooler max clients)`.
    pub fn new(resolved: &Endpoints, compute: Option<(f64, f64)>) -> Watch {
        let (target_cores, pooler_max_clients) = compute.unzip();
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
        let metrics =
            crate::server::MetricsApi::new(&resolved.config.api_url, &resolved.config.service_key)
                .ok()
                .map(Arc::new);
        Watch {
            sys,
            resolved_kind: resolved.config.kind.clone(),
            admin: resolved.admin_db_url.clone(),
            pooler_console,
            metrics,
            target_cores,
            pooler_max_clients,
        }
    }

    /// The target's resources over the held part of a step, from two scrapes of its Metrics API
    /// (`None` when it has none: it is not asked again).
    fn target_resources(
        &mut self,
        scrapes: Option<(Scrape, Scrape)>,
    ) -> Option<Vec<(String, f64, Option<f64>)>> {
        let Some((a, b)) = scrapes else {
            self.metrics = None;
            return None;
        };
        let mut out = Vec::new();
        if let (Some(x), Some(y)) = (busy_cpu(&a), busy_cpu(&b))
            && b.t > a.t
        {
            // The host's CPUs as its Metrics API counts them, else the compute size's.
            let (name, cores) = match (cpus(&b), self.target_cores) {
                (Some(n), _) => (format!("database CPU (cores busy, of its {n})"), Some(n)),
                (None, Some(c)) => (
                    format!("database CPU (cores busy, of the compute size's {c})"),
                    Some(c),
                ),
                (None, None) => (
                    "database CPU (cores busy; the compute size is unknown)".into(),
                    None,
                ),
            };
            out.push((name, (y - x) / (b.t - a.t), cores));
        }
        if let Some(open) = total(&b, "connection_stats_connection_count") {
            let max = total(&b, "max_connections_connection_count");
            out.push(("database connections".into(), open, max));
        }
        let tx = "mode=\"transaction\"";
        // The shared pooler: Supavisor's clients on hosted (its limit is the compute size's);
        // PgBouncer's own series where a pooler serves them.
        if let Some(clients) = total_where(&b, "supavisor_connections_active", tx) {
            out.push((
                "pooler clients (transaction mode)".into(),
                clients,
                self.pooler_max_clients,
            ));
        } else if let Some(active) =
            total_where(&b, "pgbouncer_pools_client_active_connections", tx)
        {
            let waiting =
                total_where(&b, "pgbouncer_pools_client_waiting_connections", tx).unwrap_or(0.0);
            let max = total_where(&b, "pgbouncer_config_max_client_connections", tx);
            out.push((
                "pooler clients (transaction mode)".into(),
                active + waiting,
                max,
            ));
            out.push(("pooler clients waiting".into(), waiting, None));
        }
        Some(out)
    }

    fn begin(&mut self) {
        self.sys.refresh_cpu_usage();
        self.sys
            .refresh_processes(sysinfo::ProcessesToUpdate::All, true);
    }

    async fn end(&mut self, scrapes: Option<(Scrape, Scrape)>) -> Vec<(String, f64, Option<f64>)> {
        self.sys.refresh_cpu_usage();
        self.sys
            .refresh_processes(sysinfo::ProcessesToUpdate::All, true);
        let cores = self.sys.cpus().len().max(1) as f64;
        // Locally the machine carries both; against a remote target the generator is this process
        // (of all this machine's cores), whatever else the machine runs.
        let generator = if self.resolved_kind == "local" {
            (
                "machine CPU % (load generator and local stack)",
                f64::from(self.sys.global_cpu_usage()),
            )
        } else {
            let me = sysinfo::Pid::from_u32(std::process::id());
            let own = self
                .sys
                .process(me)
                .map_or(0.0, |p| f64::from(p.cpu_usage()));
            ("load generator CPU % (of all cores)", own / cores)
        };
        let mut out = vec![(generator.0.to_string(), generator.1, Some(100.0))];
        let target = self.target_resources(scrapes);
        let from_metrics = target.is_some();
        out.extend(target.into_iter().flatten());
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
        if let Some(url) = self.admin.as_ref().filter(|_| !from_metrics)
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
        if let Some(url) = self.pooler_console.as_ref().filter(|_| !from_metrics)
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
    let metrics = {
        let mut watch = ctx.watch.lock().await;
        watch.begin();
        watch.metrics.clone()
    };
    // Throughput: uploads completed (without error) while the level is held, by the clock; and
    // the target's Metrics API at the hold's start and end.
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
            let scrape = |at: &std::time::Instant| {
                let (api, t) = (metrics.clone(), at.elapsed().as_secs_f64());
                async move {
                    match api {
                        Some(api) => api.scrape(t).await.ok(),
                        None => None,
                    }
                }
            };
            let zero = std::time::Instant::now();
            let first = scrape(&zero).await;
            let done = || {
                p.uploads
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .saturating_sub(p.errors.load(std::sync::atomic::Ordering::Relaxed))
            };
            let before = done();
            tokio::time::sleep(hold).await;
            let rate = (done() - before.min(done())) as f64 / hold.as_secs_f64();
            let last = scrape(&zero).await;
            (rate, first.zip(last))
        })
    };
    let progress_began = progress.clone();
    let result = fleetbench_fleet::run(
        plan.clone(),
        ctx.target.clone(),
        run_id.clone(),
        progress,
        ctx.stop.clone(),
    )
    .await;
    let progress_began = &progress_began.load_started;
    // The hold's count and scrapes, once its timer is done (nothing when the load never began).
    let began = progress_began.load(std::sync::atomic::Ordering::Relaxed) >= 1;
    let (rate, scrapes) = if began {
        counted.await.unwrap_or((0.0, None))
    } else {
        counted.abort();
        (0.0, None)
    };
    step.resources = ctx.watch.lock().await.end(scrapes).await;
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
            step.achieved_per_s = rate;
            (step.dropped, step.late) = (o.aggregate.dropped, o.aggregate.late);
            capacity::judge(&mut step, &o.aggregate, from, held_s, ctx.slo);
        }
        Err(e) => step.degraded = Some(format!("the step could not run: {e}")),
    }
    if let Some(db) = &ctx.resolved.admin_db_url {
        let _ =
            fleetbench_fleet::cleanup(db, &run_id, fleetbench_fleet::CLEANUP_BATCH, &mut |_, _| {})
                .await;
    }
    step
}
