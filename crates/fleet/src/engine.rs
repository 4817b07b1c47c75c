//! A run: provision the fleet (users through the Auth admin API, never `/signup`; password sign-in;
//! a device each), then the load phase. Agents are spread over a few workers; each worker owns its
//! agents, a schedule (a heap of due times) and its own [`Aggregate`], so the hot path takes no
//! lock. The load model decides what is due:
//! - `agents`: each active agent samples at `sample_interval` and uploads every `upload_interval`
//!   on its own phase whatever the target does (open model); a tick that finds the agent still
//!   uploading adds its samples to the backlog, and the next upload's latency counts from that tick.
//! - `arrival_rate`: uploads are due at the plan's fleet-wide rate (worker `w` of `W` takes
//!   arrivals `w, w+W, …`); each is carried by an idle agent of the worker, and an arrival that
//!   finds none is counted as dropped. Latency counts from the arrival's due time.
//! - `closed`: each active agent uploads again `think_time` after its previous upload ends.
//!
//! At the end of the stages (or on stop) no new work starts; in-flight uploads get `grace` to
//! finish and are counted as dropped after it. Rows never accepted are reported, not hidden.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fleetbench_metrics::Aggregate;
use fleetbench_scenario::{LoadModel, Plan};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::agent::{Agent, Path, backoff};
use crate::target::{Failure, Target};
use crate::telemetry::Machine;
use crate::worker::{Stats, Worker};

/// Microseconds since a fixed start, shared by every sample of a run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    wall: DateTime<Utc>,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            wall: Utc::now(),
        }
    }

    /// A clock whose zero is the wall time `wall` (past or future): shards of one run share it, so
    /// their windows line up.
    pub fn at(wall: DateTime<Utc>) -> Clock {
        let (now, now_wall) = (Instant::now(), Utc::now());
        let ahead = (wall - now_wall).to_std();
        let start = match ahead {
            Ok(d) => now + d,
            Err(_) => now
                .checked_sub((now_wall - wall).to_std().unwrap_or_default())
                .unwrap_or(now),
        };
        Clock { start, wall }
    }
    /// A clock that starts now but reads `wall`: rows are dated from `wall` on at the real pace.
    /// For rehearsing a calendar edge (the last seconds of a month) without waiting for it.
    pub fn reading(wall: DateTime<Utc>) -> Clock {
        Clock {
            start: Instant::now(),
            wall,
        }
    }
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    pub fn instant(&self, us: u64) -> Instant {
        self.start + Duration::from_micros(us)
    }
    pub fn wall(&self, us: u64) -> DateTime<Utc> {
        self.wall + chrono::Duration::microseconds(us as i64)
    }
    pub fn started_at(&self) -> DateTime<Utc> {
        self.wall
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Live counters for the progress display (relaxed atomics; the measurements are the aggregates).
#[derive(Debug, Default)]
pub struct Progress {
    pub provisioned: AtomicU64,
    pub active: AtomicU64,
    pub in_flight: AtomicU64,
    pub uploads: AtomicU64,
    pub errors: AtomicU64,
    pub rows_written: AtomicU64,
    pub backlog_rows: AtomicU64,
    /// 0 while provisioning, 1 during the load phase, 2 once it is over.
    pub load_started: AtomicU64,
    /// The same phase, for tasks that wait on it (probes start measuring with the load).
    pub phase: tokio::sync::watch::Sender<u8>,
    /// The generator behind its schedule: uploads started over a window late, arrivals dropped.
    pub late: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no agent could be provisioned; the last failure: {0}")]
    NoAgents(String),
    #[error("{0}")]
    Replay(String),
}

/// The traces of `[workload.replay]`, read once for the whole fleet.
pub fn load_traces(plan: &Plan) -> Result<Vec<Arc<fleetbench_collector::trace::Trace>>, String> {
    plan.replay.as_ref().map_or(Ok(Vec::new()), |r| {
        r.traces
            .iter()
            .map(|p| {
                fleetbench_collector::trace::Trace::read(p)
                    .map(Arc::new)
                    .map_err(|e| format!("workload.replay: {e}"))
            })
            .collect()
    })
}

/// Agent `index`'s machine: a built-in or file profile, following the model or replaying a trace.
pub fn machine(
    plan: &Plan,
    index: u32,
    traces: &[Arc<fleetbench_collector::trace::Trace>],
) -> Machine {
    let mut machine = Machine::new(
        plan.seed,
        index,
        &plan.profiles,
        &plan.anomalies,
        &plan.custom_profiles,
    );
    if let Some(r) = plan.replay.as_ref().filter(|_| !traces.is_empty()) {
        let mut rng = SmallRng::seed_from_u64(plan.seed ^ 0x7265_706C_6179 ^ u64::from(index));
        if rng.random_bool(r.share.clamp(0.0, 1.0)) {
            let trace = traces[index as usize % traces.len()].clone();
            let offset = if r.offsets {
                rng.random_range(0.0..crate::telemetry::Replay::span_ms(&trace).max(1.0))
            } else {
                0.0
            };
            machine.replay = Some(crate::telemetry::Replay::new(
                trace,
                plan.sample_interval,
                r.time_scale,
                offset,
                r.jitter,
            ));
        }
    }
    machine
}

/// The longest drain after a stop signal (the scenario's `load.grace` when shorter).
pub const SIGNAL_GRACE: Duration = Duration::from_secs(1);

/// What the run produced.
pub struct RunOutcome {
    pub aggregate: Aggregate,
    pub clock: Clock,
    /// When the load phase began on `clock` (provisioning is before it).
    pub load_start_us: u64,
    pub agents: u32,
    /// Rows the target acknowledged, per ingestion path operation.
    pub rows_written: HashMap<&'static str, u64>,
    pub rows_sampled: u64,
    /// Rows dropped from full backlogs, and rows still unsent when the run ended.
    pub rows_dropped: u64,
    pub rows_unsent: u64,
    pub interrupted: bool,
    /// The `abort_on_fail` threshold that stopped the run, with what it observed.
    pub aborted: Option<String>,
    /// Sampled once a window through the load phase: (µs on `clock`, active agents, in flight).
    pub gauges: Vec<(u64, u64, u64)>,
}

/// The entry of `mix` (name → share) that `roll` in [0, 1) falls on.
pub fn pick(roll: f64, mix: &[(String, f64)]) -> &str {
    let mut left = roll;
    for (name, share) in mix {
        left -= share;
        if left < 0.0 {
            return name;
        }
    }
    mix.last().map_or("rest", |(n, _)| n)
}

async fn with_retries<T, F, Fut>(
    clock: &Clock,
    operation: &'static str,
    samples: &mut Vec<fleetbench_metrics::Sample>,
    rng: &mut SmallRng,
    stop: &watch::Receiver<bool>,
    mut call: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut failures = 0;
    loop {
        let sent = clock.now_us();
        let result = call().await;
        let done = clock.now_us();
        samples.push(fleetbench_metrics::Sample {
            operation,
            intended_us: sent,
            sent_us: sent,
            done_us: done,
            outcome: match &result {
                Ok(_) => fleetbench_metrics::Outcome::Ok,
                Err(f) => fleetbench_metrics::Outcome::Error(f.kind()),
            },
            rows: 0,
            bytes: 0,
        });
        match result {
            Err(f) if f.retryable() && failures < 8 && !*stop.borrow() => {
                failures += 1;
                tokio::time::sleep(backoff(failures, f.retry_after(), rng)).await;
            }
            other => return other,
        }
    }
}

/// Creates, signs in and registers the device of agent `index`.
async fn provision_one(
    target: Arc<Target>,
    plan: Arc<Plan>,
    run_id: String,
    index: u32,
    clock: Clock,
    stop: watch::Receiver<bool>,
    traces: Arc<Vec<Arc<fleetbench_collector::trace::Trace>>>,
) -> (Vec<fleetbench_metrics::Sample>, Result<Agent, Failure>) {
    // Samples, not an aggregate: a few per agent, added to the run's aggregate by the caller.
    let mut samples = Vec::with_capacity(3);
    let mut rng = SmallRng::seed_from_u64(plan.seed.wrapping_add(u64::from(index)));
    let (email, password) = crate::agent::credentials(&run_id, index);
    let machine = machine(&plan, index, &traces);
    let result = async {
        let user_id = with_retries(
            &clock,
            "auth.admin_create_user",
            &mut samples,
            &mut rng,
            &stop,
            || target.create_user(&email, &password, &run_id),
        )
        .await?;
        let session = with_retries(
            &clock,
            "auth.password",
            &mut samples,
            &mut rng,
            &stop,
            || target.sign_in(&email, &password),
        )
        .await?;
        let hostname = format!("{}-{index:06}", machine.device.form_factor);
        let device_id = with_retries(
            &clock,
            "rest.create_device",
            &mut samples,
            &mut rng,
            &stop,
            || target.create_device(session.access_token(), &machine.device, &hostname),
        )
        .await?;
        let path = if pick(rng.random(), &plan.ingest) == "pooler" {
            Path::Pooler
        } else {
            Path::Rest
        };
        Ok(Agent {
            index,
            user_id,
            device_id,
            machine: machine.clone(),
            path,
            session: Some(session),
            backlog: Vec::new(),
            pending_since_us: None,
            failures: 0,
            retry_at_us: 0,
            from_us: 0,
            until_us: 0,
        })
    }
    .await;
    (samples, result)
}

/// The operations that `abort_on_fail` thresholds watch, aggregated across workers as samples
/// arrive (a lock per sample of those operations only), for the evaluation during the run.
pub(crate) struct Live {
    operations: Vec<String>,
    agg: std::sync::Mutex<Aggregate>,
}

impl Live {
    pub(crate) fn add(&self, s: &fleetbench_metrics::Sample) {
        if self.operations.iter().any(|o| o == s.operation) {
            self.agg.lock().expect("live aggregate").add(s);
        }
    }
}

/// Every second of the load phase, the `abort_on_fail` thresholds on what has been measured so
/// far; the first one crossed (after its `delay_abort_eval`) stops the run and is returned.
async fn watch_aborts(
    plan: Arc<Plan>,
    live: Arc<Live>,
    clock: Clock,
    load_start: u64,
    stop: Arc<watch::Sender<bool>>,
) -> Option<String> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let elapsed = Duration::from_micros(clock.now_us().saturating_sub(load_start));
        let agg = live.agg.lock().expect("live aggregate").clone();
        for t in plan
            .thresholds
            .iter()
            .filter(|t| t.abort_on_fail && elapsed >= t.delay_abort_eval)
        {
            let Some(op) = agg.operations.get(&t.operation) else {
                continue;
            };
            let observed =
                fleetbench_metrics::summary::observe_counts(t, &op.total, elapsed.as_secs_f64());
            if let Some(v) = observed.filter(|v| !t.cmp.holds(*v, t.value)) {
                let _ = stop.send(true);
                return Some(format!(
                    "{} {} (observed {v:.3} after {:.1} s of load)",
                    t.operation,
                    t.expr,
                    elapsed.as_secs_f64()
                ));
            }
        }
    }
}

/// Runs `plan` against `target` until the stages end, `outer_stop` turns true, or an
/// `abort_on_fail` threshold is crossed.
pub async fn run(
    plan: Plan,
    target: Arc<Target>,
    run_id: String,
    progress: Arc<Progress>,
    outer_stop: watch::Receiver<bool>,
) -> Result<RunOutcome, EngineError> {
    run_at(Clock::new(), plan, target, run_id, progress, outer_stop).await
}

/// [`run`] on a clock the caller shares (probes beside the fleet sample on the same time axis).
pub async fn run_at(
    clock: Clock,
    plan: Plan,
    target: Arc<Target>,
    run_id: String,
    progress: Arc<Progress>,
    outer_stop: watch::Receiver<bool>,
) -> Result<RunOutcome, EngineError> {
    let plan = Arc::new(plan);
    let window_us = plan.window.as_micros().max(1) as u64;
    let mut aggregate = Aggregate::new(window_us);
    // One stop for everything inside: a signal from outside, or an abort threshold.
    let (stop_tx, stop) = watch::channel(*outer_stop.borrow());
    let stop_tx = Arc::new(stop_tx);
    let forward = {
        let (tx, mut outer) = (stop_tx.clone(), outer_stop.clone());
        tokio::spawn(async move {
            while outer.changed().await.is_ok() {
                if *outer.borrow() {
                    let _ = tx.send(true);
                    break;
                }
            }
        })
    };
    let aborts: Vec<String> = plan
        .thresholds
        .iter()
        .filter(|t| t.abort_on_fail)
        .map(|t| t.operation.clone())
        .collect();
    let live = (!aborts.is_empty()).then(|| {
        Arc::new(Live {
            operations: aborts,
            agg: std::sync::Mutex::new(Aggregate::new(window_us)),
        })
    });

    // Provisioning: the agents the load model needs, a few at a time.
    let needed = plan.agents_needed();
    let traces = Arc::new(load_traces(&plan).map_err(EngineError::Replay)?);
    let mut agents: Vec<Agent> = Vec::with_capacity(needed as usize);
    let mut last_failure = String::from("none");
    let mut set = JoinSet::new();
    let mut next = 0;
    while (next < needed || !set.is_empty()) && !(*stop.borrow() && set.is_empty()) {
        while next < needed && set.len() < plan.provision_concurrency as usize && !*stop.borrow() {
            if !plan.in_shard(next) {
                next += 1;
                continue;
            }
            set.spawn(provision_one(
                target.clone(),
                plan.clone(),
                run_id.clone(),
                next,
                clock,
                stop.clone(),
                traces.clone(),
            ));
            next += 1;
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        let (samples, result) = done.expect("provisioning task");
        samples.iter().for_each(|s| aggregate.add(s));
        match result {
            Ok(agent) => {
                progress.provisioned.fetch_add(1, Relaxed);
                agents.push(agent);
            }
            Err(f) => last_failure = f.to_string(),
        }
    }
    if agents.is_empty() {
        return Err(EngineError::NoAgents(last_failure));
    }
    agents.sort_by_key(|a| a.index);
    let provisioned = agents.len() as u32;

    // Shards of one run wait for their shared start (the clock's zero) before the load.
    let zero = tokio::time::Instant::from_std(clock.instant(0));
    if zero > tokio::time::Instant::now() {
        tokio::time::sleep_until(zero).await;
    }
    // The load phase's clock starts now. With agent levels, agent k takes the k-th activation
    // slot (in a shard, the slot of its index in the whole run); with an arrival rate every agent
    // is available for the whole phase.
    let load_start = clock.now_us();
    let sharded = plan.shard.1 > 1;
    progress.load_started.store(1, Relaxed);
    progress.phase.send_replace(1);
    for (k, a) in agents.iter_mut().enumerate() {
        let k = if sharded { a.index } else { k as u32 };
        if plan.model == LoadModel::ArrivalRate {
            a.from_us = load_start;
            a.until_us = load_start + plan.duration().as_micros() as u64;
            continue;
        }
        a.from_us = load_start
            + plan
                .activation(k)
                .map_or(u64::MAX / 4, |d| d.as_micros() as u64);
        a.until_us = load_start + plan.deactivation(k).as_micros() as u64;
    }
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let per_worker = agents.len() / workers + 1;
    let mut shards: Vec<Vec<Agent>> = (0..workers)
        .map(|_| Vec::with_capacity(per_worker))
        .collect();
    for a in agents {
        shards[a.index as usize % workers].push(a);
    }
    let end_us = load_start + plan.duration().as_micros() as u64;
    let mut handles = Vec::new();
    for (w, shard) in shards.into_iter().enumerate() {
        let worker = Worker {
            live: live.clone(),
            load_start,
            worker: w as u64,
            workers: workers as u64,
            run_id: Arc::from(run_id.as_str()),
            plan: plan.clone(),
            target: target.clone(),
            clock,
            progress: progress.clone(),
            rng: SmallRng::seed_from_u64(
                plan.seed ^ (w as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F),
            ),
            agg: Aggregate::new(window_us),
            end_us,
            stats: Stats::default(),
        };
        handles.push(tokio::spawn(worker.run(shard, stop.clone())));
    }
    // The gauges, once a window, until the workers are done.
    let (gauges_done, mut done) = tokio::sync::oneshot::channel::<()>();
    let gauges = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_micros(window_us));
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut done => true,
                };
                out.push((
                    clock.now_us(),
                    progress.active.load(Relaxed),
                    progress.in_flight.load(Relaxed),
                ));
                if last {
                    break out;
                }
            }
        })
    };
    let watcher = live.clone().map(|live| {
        tokio::spawn(watch_aborts(
            plan.clone(),
            live,
            clock,
            load_start,
            stop_tx.clone(),
        ))
    });
    let mut outcome = RunOutcome {
        aborted: None,
        gauges: Vec::new(),
        aggregate,
        clock,
        load_start_us: load_start,
        agents: provisioned,
        rows_written: HashMap::new(),
        rows_sampled: 0,
        rows_dropped: 0,
        rows_unsent: 0,
        interrupted: *outer_stop.borrow(),
    };
    for h in handles {
        let (agg, stats) = h.await.expect("worker task");
        outcome.aggregate.merge(&agg);
        for (op, n) in stats.rows_written {
            *outcome.rows_written.entry(op).or_default() += n;
        }
        outcome.rows_sampled += stats.rows_sampled;
        outcome.rows_dropped += stats.rows_dropped;
        outcome.rows_unsent += stats.rows_unsent;
    }
    outcome.interrupted |= *outer_stop.borrow();
    if let Some(w) = watcher {
        if w.is_finished() {
            outcome.aborted = w.await.ok().flatten();
        } else {
            w.abort();
        }
    }
    forward.abort();
    progress.load_started.store(2, Relaxed);
    progress.phase.send_replace(2);
    let _ = gauges_done.send(());
    outcome.gauges = gauges.await.unwrap_or_default();
    Ok(outcome)
}
