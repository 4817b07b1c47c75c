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
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetbench_metrics::Aggregate;
use fleetbench_scenario::{LoadModel, Plan};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::watch;

use crate::abort::{Live, watch_aborts};
use crate::agent::Agent;
use crate::provision::{self, EngineError};
use crate::target::Target;
use crate::worker::{Stats, Worker};
use crate::{Clock, Progress};

/// What the run produced.
pub struct RunOutcome {
    pub aggregate: Aggregate,
    pub clock: Clock,
    /// When the load phase began on `clock` (provisioning is before it).
    pub load_start_us: u64,
    /// When the last worker finished (the drain included).
    pub load_end_us: u64,
    pub agents: u32,
    /// The agents the plan asked of this process, and why the last one that could not be
    /// provisioned was refused.
    pub agents_planned: u32,
    pub provision_failure: Option<String>,
    /// Rows the target acknowledged, per ingestion path operation.
    pub rows_written: HashMap<&'static str, u64>,
    pub rows_sampled: u64,
    /// Rows dropped from full backlogs, and rows still unsent when the run ended.
    pub rows_dropped: u64,
    pub rows_unsent: u64,
    /// Rows of uploads still in flight when the drain after the load ended (written or not: the
    /// answer never came). Sampled = written + unsent + dropped + abandoned.
    pub rows_abandoned: u64,
    pub interrupted: bool,
    /// The `abort_on_fail` threshold that stopped the run, with what it observed.
    pub aborted: Option<String>,
    /// Sampled once a window through the load phase: (µs on `clock`, active agents, in flight).
    pub gauges: Vec<(u64, u64, u64)>,
}

/// Forwards the first `true` of `outer` (a signal from outside) to the run's own stop.
async fn forward_stop(mut outer: watch::Receiver<bool>, stop: Arc<watch::Sender<bool>>) {
    while outer.changed().await.is_ok() {
        if *outer.borrow() {
            let _ = stop.send(true);
            break;
        }
    }
}

/// When each agent is active, from the start of the load phase: with agent levels, agent k takes
/// the k-th activation slot (in a shard, the slot of its index in the whole run); with an arrival
/// rate every agent is available for the whole phase.
fn schedule(plan: &Plan, agents: &mut [Agent], load_start: u64) {
    let sharded = plan.shard.1 > 1;
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
}

/// What every worker of the load phase shares.
struct Load {
    plan: Arc<Plan>,
    target: Arc<Target>,
    run_id: Arc<str>,
    clock: Clock,
    progress: Arc<Progress>,
    live: Option<Arc<Live>>,
    load_start: u64,
}

/// The agents dealt to one worker per core (at most 8) by index, each worker spawned with its
/// own aggregate; their handles return (aggregate, stats).
fn spawn_workers(
    load: &Load,
    agents: Vec<Agent>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<(Aggregate, Stats)>> {
    let plan = &load.plan;
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let per_worker = agents.len() / workers + 1;
    let mut rosters: Vec<Vec<Agent>> = (0..workers)
        .map(|_| Vec::with_capacity(per_worker))
        .collect();
    for a in agents {
        rosters[a.index as usize % workers].push(a);
    }
    let window_us = plan.window.as_micros().max(1) as u64;
    let end_us = load.load_start + plan.duration().as_micros() as u64;
    rosters
        .into_iter()
        .enumerate()
        .map(|(w, roster)| {
            let worker = Worker {
                live: load.live.clone(),
                load_start: load.load_start,
                worker: w as u64,
                workers: workers as u64,
                run_id: load.run_id.clone(),
                plan: plan.clone(),
                target: load.target.clone(),
                clock: load.clock,
                progress: load.progress.clone(),
                rng: SmallRng::seed_from_u64(
                    plan.seed ^ (w as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F),
                ),
                agg: Aggregate::new(window_us),
                end_us,
                stats: Stats::default(),
            };
            tokio::spawn(worker.run(roster, stop.clone()))
        })
        .collect()
}

/// (µs on `clock`, active agents, uploads in flight), once a window and once more when `done`.
async fn gauges(
    clock: Clock,
    progress: Arc<Progress>,
    window_us: u64,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> Vec<(u64, u64, u64)> {
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
    let forward = tokio::spawn(forward_stop(outer_stop.clone(), stop_tx.clone()));
    let live = Live::for_plan(&plan).map(Arc::new);
    if let Some(l) = &live {
        let _ = progress.live.set(l.clone());
    }

    // Provisioning: the agents the load model needs, a few at a time.
    let provision::Provisioned {
        mut agents,
        planned,
        last_failure,
    } = provision::fleet(
        &plan,
        &target,
        &run_id,
        clock,
        &stop,
        &progress,
        &mut aggregate,
    )
    .await?;
    agents.sort_by_key(|a| a.index);
    let provisioned = agents.len() as u32;

    // Shards of one run wait for their shared start (the clock's zero) before the load, unless
    // stopped meanwhile (then the load phase is empty).
    let zero = tokio::time::Instant::from_std(clock.instant(0));
    if zero > tokio::time::Instant::now() {
        let mut stopped = stop.clone();
        tokio::select! {
            () = tokio::time::sleep_until(zero) => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    }
    // The load phase's clock starts now.
    let load_start = clock.now_us();
    progress.load_started.store(1, Relaxed);
    progress.phase.send_replace(1);
    schedule(&plan, &mut agents, load_start);
    let load = Load {
        plan: plan.clone(),
        target: target.clone(),
        run_id: Arc::from(run_id.as_str()),
        clock,
        progress: progress.clone(),
        live: live.clone(),
        load_start,
    };
    let handles = spawn_workers(&load, agents, &stop);
    // The gauges, once a window, until the workers are done.
    let (gauges_done, done) = tokio::sync::oneshot::channel::<()>();
    let gauge_task = tokio::spawn(gauges(clock, progress.clone(), window_us, done));
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
        load_end_us: load_start,
        agents: provisioned,
        agents_planned: planned,
        provision_failure: last_failure,
        rows_written: HashMap::new(),
        rows_sampled: 0,
        rows_dropped: 0,
        rows_unsent: 0,
        rows_abandoned: 0,
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
        outcome.rows_abandoned += stats.rows_abandoned;
    }
    outcome.load_end_us = clock.now_us();
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
    outcome.gauges = gauge_task.await.unwrap_or_default();
    Ok(outcome)
}
