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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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

use crate::agent::{Agent, Attempt, Path, Upload, backoff};
use crate::target::{Failure, Target};
use crate::telemetry::Machine;

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
    /// The generator behind its schedule: uploads started over a window late, arrivals dropped.
    pub late: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no agent could be provisioned; the last failure: {0}")]
    NoAgents(String),
}

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

fn pick(roll: f64, mix: &[(String, f64)]) -> &str {
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
) -> (Vec<fleetbench_metrics::Sample>, Result<Agent, Failure>) {
    // Samples, not an aggregate: a few per agent, added to the run's aggregate by the caller.
    let mut samples = Vec::with_capacity(3);
    let mut rng = SmallRng::seed_from_u64(plan.seed.wrapping_add(u64::from(index)));
    let (email, password) = crate::agent::credentials(&run_id, index);
    let machine = Machine::new(plan.seed, index, &plan.profiles, &plan.anomalies);
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
struct Live {
    operations: Vec<String>,
    agg: std::sync::Mutex<Aggregate>,
}

impl Live {
    fn add(&self, s: &fleetbench_metrics::Sample) {
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
    let plan = Arc::new(plan);
    let clock = Clock::new();
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
    let mut agents: Vec<Agent> = Vec::with_capacity(needed as usize);
    let mut last_failure = String::from("none");
    let mut set = JoinSet::new();
    let mut next = 0;
    while (next < needed || !set.is_empty()) && !(*stop.borrow() && set.is_empty()) {
        while next < needed && set.len() < plan.provision_concurrency as usize && !*stop.borrow() {
            set.spawn(provision_one(
                target.clone(),
                plan.clone(),
                run_id.clone(),
                next,
                clock,
                stop.clone(),
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

    // The load phase's clock starts now. With agent levels, agent k takes the k-th activation
    // slot; with an arrival rate every agent is available for the whole phase.
    let load_start = clock.now_us();
    progress.load_started.store(1, Relaxed);
    for (k, a) in agents.iter_mut().enumerate() {
        let k = k as u32;
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
    let _ = gauges_done.send(());
    outcome.gauges = gauges.await.unwrap_or_default();
    Ok(outcome)
}

#[derive(Default)]
struct Stats {
    rows_written: HashMap<&'static str, u64>,
    rows_sampled: u64,
    rows_dropped: u64,
    rows_unsent: u64,
}

struct Worker {
    /// Where abort thresholds are watched, if the plan has any.
    live: Option<Arc<Live>>,
    load_start: u64,
    /// This worker takes arrivals `worker`, `worker + workers`, … of an arrival-rate plan.
    worker: u64,
    workers: u64,
    run_id: Arc<str>,
    plan: Arc<Plan>,
    target: Arc<Target>,
    clock: Clock,
    progress: Arc<Progress>,
    rng: SmallRng,
    agg: Aggregate,
    end_us: u64,
    stats: Stats,
}

/// A worker's agents and what it knows of them.
struct Shard {
    agents: Vec<Agent>,
    /// Ticks and retries by due time.
    heap: BinaryHeap<Reverse<Due>>,
    /// Whether each agent counts as active (for the progress gauge).
    active: Vec<bool>,
    /// Arrival rate: agents free to carry the next arrival, the next arrival's number and due time.
    idle: std::collections::VecDeque<usize>,
    next_arrival: u64,
    arrival_at: Option<u64>,
    inflight: JoinSet<Attempt>,
    slot_of: HashMap<u32, usize>,
}

/// A scheduled event: an agent's upload tick, or a retry after backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at_us: u64,
    slot: usize,
    retry: bool,
}

impl Worker {
    async fn run(
        mut self,
        agents: Vec<Agent>,
        mut stop: watch::Receiver<bool>,
    ) -> (Aggregate, Stats) {
        let upload_us = self.plan.upload_interval.as_micros() as u64;
        let model = self.plan.model;
        let mut sh = Shard {
            heap: BinaryHeap::new(),
            active: vec![false; agents.len()],
            idle: std::collections::VecDeque::new(),
            next_arrival: self.worker,
            arrival_at: self.arrival_us(self.worker),
            inflight: JoinSet::new(),
            slot_of: agents
                .iter()
                .enumerate()
                .map(|(s, a)| (a.index, s))
                .collect(),
            agents,
        };
        for slot in 0..sh.agents.len() {
            let a = &sh.agents[slot];
            match model {
                LoadModel::ArrivalRate => {
                    sh.idle.push_back(slot);
                    sh.active[slot] = true;
                    self.progress.active.fetch_add(1, Relaxed);
                }
                // Each agent's own phase within the cadence, spread evenly over the fleet (a Weyl
                // sequence by agent index): a smooth arrival rate at any fleet size, no random clumps.
                LoadModel::Agents if a.from_us < a.until_us => {
                    let phase = ((f64::from(a.index) * 0.618_033_988_749_895).fract()
                        * upload_us as f64) as u64;
                    sh.heap.push(Reverse(Due {
                        at_us: a.from_us + phase,
                        slot,
                        retry: false,
                    }));
                }
                // A closed loop starts at once and goes again when each upload ends.
                LoadModel::Closed if a.from_us < a.until_us => {
                    sh.heap.push(Reverse(Due {
                        at_us: a.from_us,
                        slot,
                        retry: false,
                    }));
                }
                _ => {}
            }
        }
        // One timer, moved rather than re-created: the loop turns once per event.
        let sleep = tokio::time::sleep_until(self.clock.instant(self.end_us).into());
        tokio::pin!(sleep);
        let mut stop_open = !*stop.borrow();
        let mut deadline = self.end_us;
        loop {
            // The stages are over, or we were told to stop: no new work.
            if self.clock.now_us() >= self.end_us {
                break;
            }
            // Everything that has finished, then everything that is due, without waiting.
            while let Some(done) = sh.inflight.try_join_next() {
                self.complete(&mut sh, done.expect("upload task"));
            }
            let now = self.clock.now_us();
            self.start_due(&mut sh, now);
            let next = sh
                .heap
                .peek()
                .map(|Reverse(d)| d.at_us)
                .into_iter()
                .chain(sh.arrival_at)
                .min()
                .filter(|t| *t < self.end_us);
            if next.is_some_and(|t| t <= self.clock.now_us()) {
                continue;
            }
            // Nothing due before the end: idle agents stay signed in until the stages are over.
            // Resetting registers with the timer driver: only when the deadline moves.
            let wake = next.unwrap_or(self.end_us);
            if wake != deadline {
                deadline = wake;
                sleep.as_mut().reset(self.clock.instant(wake).into());
            }
            tokio::select! {
                biased;
                changed = stop.changed(), if stop_open => {
                    // A dropped sender can no longer stop the run: stop listening to it.
                    stop_open = changed.is_ok();
                    if *stop.borrow() { break; }
                }
                Some(done) = sh.inflight.join_next(), if !sh.inflight.is_empty() => {
                    self.complete(&mut sh, done.expect("upload task"));
                }
                () = &mut sleep => {}
            }
        }
        // Drain: in-flight uploads get the grace period; whatever is still out after it is dropped.
        let deadline = tokio::time::Instant::now() + self.plan.grace;
        while !sh.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, sh.inflight.join_next()).await {
                Ok(Some(done)) => {
                    let attempt = done.expect("upload task");
                    let slot = sh.slot_of[&attempt.index];
                    let mut ignored = BinaryHeap::new();
                    self.finish(&mut sh.agents[slot], attempt, &mut ignored, slot);
                }
                Ok(None) => break,
                Err(_) => {
                    self.agg.abandoned += sh.inflight.len() as u64;
                    sh.inflight.abort_all();
                    break;
                }
            }
        }
        for (slot, a) in sh.agents.iter().enumerate() {
            self.stats.rows_unsent += a.backlog.len() as u64;
            if sh.active[slot] {
                self.progress.active.fetch_sub(1, Relaxed);
            }
        }
        (self.agg, self.stats)
    }

    /// An upload came back: account for it, and in the closed and arrival-rate models free the
    /// agent for its next one.
    fn complete(&mut self, sh: &mut Shard, attempt: Attempt) {
        let slot = sh.slot_of[&attempt.index];
        if !self.finish(&mut sh.agents[slot], attempt, &mut sh.heap, slot) {
            return;
        }
        match self.plan.model {
            LoadModel::ArrivalRate => sh.idle.push_back(slot),
            LoadModel::Closed => {
                let at = self.clock.now_us() + self.plan.think_time.as_micros() as u64;
                if at < sh.agents[slot].until_us {
                    sh.heap.push(Reverse(Due {
                        at_us: at,
                        slot,
                        retry: false,
                    }));
                } else if sh.active[slot] {
                    sh.active[slot] = false;
                    self.progress.active.fetch_sub(1, Relaxed);
                }
            }
            LoadModel::Agents => {}
        }
    }

    /// Starts every arrival and every scheduled tick or retry due by `now`.
    fn start_due(&mut self, sh: &mut Shard, now: u64) {
        // Arrivals, each to an idle agent; none idle means the arrival is dropped.
        while let Some(at) = sh.arrival_at.filter(|t| *t <= now && *t < self.end_us) {
            match sh.idle.pop_front() {
                Some(slot) => {
                    let a = &mut sh.agents[slot];
                    self.sample(a, at);
                    self.launch(a, now, &mut sh.inflight);
                }
                None => {
                    self.agg.dropped += 1;
                    self.progress.dropped.fetch_add(1, Relaxed);
                }
            }
            sh.next_arrival += self.workers;
            sh.arrival_at = self.arrival_us(sh.next_arrival);
        }
        let upload_us = self.plan.upload_interval.as_micros() as u64;
        while let Some(Reverse(d)) = sh.heap.peek().copied() {
            if d.at_us > now || d.at_us >= self.end_us {
                break;
            }
            sh.heap.pop();
            let a = &mut sh.agents[d.slot];
            if !d.retry {
                if !sh.active[d.slot] {
                    sh.active[d.slot] = true;
                    self.progress.active.fetch_add(1, Relaxed);
                }
                self.sample(a, d.at_us);
                if self.plan.model == LoadModel::Agents {
                    if d.at_us + upload_us < a.until_us {
                        sh.heap.push(Reverse(Due {
                            at_us: d.at_us + upload_us,
                            slot: d.slot,
                            retry: false,
                        }));
                    } else {
                        sh.active[d.slot] = false;
                        self.progress.active.fetch_sub(1, Relaxed);
                    }
                }
            }
            self.launch(a, now, &mut sh.inflight);
        }
    }

    /// When this worker's arrival number `k` is due (microseconds on the run's clock).
    fn arrival_us(&self, k: u64) -> Option<u64> {
        if self.plan.model != LoadModel::ArrivalRate {
            return None;
        }
        self.plan
            .arrival(k)
            .map(|d| self.load_start + d.as_micros() as u64)
    }

    /// Starts `a`'s upload if it is ready for one.
    fn launch(&mut self, a: &mut Agent, now: u64, inflight: &mut JoinSet<Attempt>) {
        if let Some(upload) = self.ready(a, now) {
            self.progress.in_flight.fetch_add(1, Relaxed);
            let target = self.target.clone();
            let clock = self.clock;
            // Boxed: the task then moves a pointer, not the upload's whole state.
            inflight.spawn(Box::pin(async move { upload.run(&target, &clock).await }));
        }
    }

    /// The samples of one upload interval ending at `tick_us`, into the backlog (oldest dropped
    /// beyond `max_backlog_rows`).
    fn sample(&mut self, a: &mut Agent, tick_us: u64) {
        let sample_us = self.plan.sample_interval.as_micros() as u64;
        let n = u64::from(self.plan.batch_rows);
        for i in 0..n {
            let at = tick_us.saturating_sub((n - 1 - i) * sample_us);
            let row = a
                .machine
                .sample(a.device_id, a.user_id, self.clock.wall(at));
            a.backlog.push(row);
        }
        self.stats.rows_sampled += n;
        self.progress.backlog_rows.fetch_add(n, Relaxed);
        if a.pending_since_us.is_none() {
            a.pending_since_us = Some(tick_us);
        }
        let max = self.plan.max_backlog_rows.max(self.plan.batch_rows) as usize;
        if a.backlog.len() > max {
            let excess = a.backlog.len() - max;
            a.backlog.drain(..excess);
            self.stats.rows_dropped += excess as u64;
            self.progress.backlog_rows.fetch_sub(excess as u64, Relaxed);
        }
    }

    /// An upload for `a` if it is idle, has rows, and is not backing off.
    fn ready(&mut self, a: &mut Agent, now_us: u64) -> Option<Upload> {
        if a.busy() || a.backlog.is_empty() || now_us < a.retry_at_us {
            return None;
        }
        // Latency counts from the tick the oldest rows were due at, through any backoff and outage.
        let intended = a.pending_since_us.take().unwrap_or(now_us);
        if a.failures == 0 && now_us.saturating_sub(intended) > self.agg.window_us {
            // Not a retry, yet more than a window behind its schedule: the generator is late.
            self.agg.late += 1;
            self.progress.late.fetch_add(1, Relaxed);
        }
        // At most 1000 rows per request (the Data API's max_rows); the rest follow at once.
        let take = a.backlog.len().min(1000);
        let rows: Vec<_> = a.backlog.drain(..take).collect();
        if !a.backlog.is_empty() {
            a.pending_since_us = Some(now_us);
        }
        let margin = self
            .plan
            .refresh_margin
            .mul_f64(1.0 + self.rng.random_range(0.0..0.1));
        Some(Upload {
            index: a.index,
            run_id: self.run_id.clone(),
            path: a.path,
            session: a.session.take().expect("idle agent has its session"),
            rows,
            intended_us: intended,
            refresh_margin: margin,
        })
    }

    fn finish(
        &mut self,
        a: &mut Agent,
        attempt: Attempt,
        heap: &mut BinaryHeap<Reverse<Due>>,
        slot: usize,
    ) -> bool {
        self.progress.in_flight.fetch_sub(1, Relaxed);
        for s in &attempt.samples {
            self.agg.add(s);
            if let Some(live) = &self.live {
                live.add(s);
            }
        }
        a.session = Some(attempt.session);
        self.progress.uploads.fetch_add(1, Relaxed);
        match attempt.failure {
            None => {
                a.failures = 0;
                *self
                    .stats
                    .rows_written
                    .entry(a.path.operation())
                    .or_default() += attempt.rows_written;
                self.progress
                    .rows_written
                    .fetch_add(attempt.rows_written, Relaxed);
                self.progress.backlog_rows.fetch_sub(
                    attempt
                        .rows_written
                        .min(self.progress.backlog_rows.load(Relaxed)),
                    Relaxed,
                );
                if !a.backlog.is_empty() {
                    heap.push(Reverse(Due {
                        at_us: self.clock.now_us(),
                        slot,
                        retry: true,
                    }));
                    return false;
                }
                true
            }
            Some(f) if !f.retryable() => {
                // The target refused these rows for good (a 4xx other than 401/429): retrying cannot
                // help, so they are dropped and counted.
                self.progress.errors.fetch_add(1, Relaxed);
                self.stats.rows_dropped += attempt.unsent.len() as u64;
                self.progress
                    .backlog_rows
                    .fetch_sub(attempt.unsent.len() as u64, Relaxed);
                a.failures = 0;
                if !a.backlog.is_empty() {
                    heap.push(Reverse(Due {
                        at_us: self.clock.now_us(),
                        slot,
                        retry: true,
                    }));
                    return false;
                }
                true
            }
            Some(f) => {
                self.progress.errors.fetch_add(1, Relaxed);
                // The rows go back in front of anything sampled meanwhile.
                let mut rows = attempt.unsent;
                rows.append(&mut a.backlog);
                a.backlog = rows;
                a.failures += 1;
                let wait = backoff(a.failures, f.retry_after(), &mut self.rng);
                a.retry_at_us = self.clock.now_us() + wait.as_micros() as u64;
                a.pending_since_us = Some(
                    a.pending_since_us
                        .map_or(attempt.intended_us, |p| p.min(attempt.intended_us)),
                );
                heap.push(Reverse(Due {
                    at_us: a.retry_at_us,
                    slot,
                    retry: true,
                }));
                false
            }
        }
    }
}
