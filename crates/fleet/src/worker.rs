//! One worker of the load phase: it owns its agents, their schedule (a heap of due times, and the
//! next arrival of an arrival-rate plan) and its own aggregate, starts what is due, takes back what
//! finished, and at the end drains what is in flight for the grace period (see the engine
//! for the load models).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetbench_metrics::Aggregate;
use fleetbench_scenario::{LoadModel, Plan};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use rand::rngs::SmallRng;
use tokio::sync::watch;

use crate::abort::Live;
use crate::agent::{Agent, Attempt, Upload, backoff};
use crate::target::Target;
use crate::{Clock, Progress};

/// The longest drain after a stop signal (the scenario's `load.grace` when shorter).
pub const SIGNAL_GRACE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) rows_written: HashMap<&'static str, u64>,
    pub(crate) rows_sampled: u64,
    pub(crate) rows_dropped: u64,
    pub(crate) rows_unsent: u64,
    /// Rows of uploads still in flight when the drain ended (their fate is unknown: the target
    /// may have written them or not).
    pub(crate) rows_abandoned: u64,
    /// Agent index → rows of its upload in flight.
    pub(crate) rows_out: HashMap<u32, u64>,
}

pub(crate) struct Worker {
    /// Where abort thresholds are watched, if the plan has any.
    pub(crate) live: Option<Arc<Live>>,
    pub(crate) load_start: u64,
    /// This worker takes arrivals `worker`, `worker + workers`, … of an arrival-rate plan.
    pub(crate) worker: u64,
    pub(crate) workers: u64,
    pub(crate) run_id: Arc<str>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) target: Arc<Target>,
    pub(crate) clock: Clock,
    pub(crate) progress: Arc<Progress>,
    pub(crate) rng: SmallRng,
    pub(crate) agg: Aggregate,
    pub(crate) end_us: u64,
    pub(crate) stats: Stats,
}

/// A worker's agents and what it knows of them.
struct Roster {
    agents: Vec<Agent>,
    /// Ticks and retries by due time.
    heap: BinaryHeap<Reverse<Due>>,
    /// Whether each agent counts as active (for the progress gauge).
    active: Vec<bool>,
    /// Arrival rate: agents free to carry the next arrival, the next arrival's number and due time.
    idle: std::collections::VecDeque<usize>,
    next_arrival: u64,
    arrival_at: Option<u64>,
    /// Uploads under way, polled by this worker's own task: no task spawned per upload, and one
    /// wake-up of the worker serves every upload whose answer came in meanwhile.
    inflight: FuturesUnordered<BoxFuture<'static, Attempt>>,
    slot_of: HashMap<u32, usize>,
    /// Closed model: uploads each agent has begun (retries not counted), against `iterations`.
    begun: Vec<u32>,
}

/// A scheduled event: an agent's upload tick, or a retry after backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at_us: u64,
    slot: usize,
    retry: bool,
}

impl Worker {
    /// The worker's agents with their first due times: in the agent and closed models each
    /// active agent's first tick, with an arrival rate every agent idle and active.
    fn roster(&self, agents: Vec<Agent>) -> Roster {
        let upload_us = self.plan.upload_interval.as_micros() as u64;
        let model = self.plan.model;
        let mut sh = Roster {
            heap: BinaryHeap::new(),
            active: vec![false; agents.len()],
            idle: std::collections::VecDeque::new(),
            // Arrival k is this process's when k ≡ shard (mod shards); among its workers,
            // worker w takes every `workers`-th of those.
            next_arrival: u64::from(self.plan.shard.0)
                + u64::from(self.plan.shard.1.max(1)) * self.worker,
            arrival_at: self.arrival_us(self.worker),
            inflight: FuturesUnordered::new(),
            begun: vec![0; agents.len()],
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
        sh
    }

    pub(crate) async fn run(
        mut self,
        agents: Vec<Agent>,
        mut stop: watch::Receiver<bool>,
    ) -> (Aggregate, Stats) {
        let mut sh = self.roster(agents);
        // One timer, moved rather than re-created: the loop turns once per event.
        let sleep = tokio::time::sleep_until(self.clock.instant(self.end_us).into());
        tokio::pin!(sleep);
        let mut stop_open = !*stop.borrow();
        let mut deadline = self.end_us;
        loop {
            // A stop that came before the load began (while provisioning, or waiting for the
            // start) is never announced again: look, not only listen.
            if *stop.borrow() {
                break;
            }
            // Windows before the previous one are closed (packed, on disk), so that a long
            // run's memory stays flat.
            self.agg.moved_to(self.clock.now_us());
            // Everything that has finished, then everything that is due, without waiting.
            while let Some(Some(done)) = sh.inflight.next().now_or_never() {
                self.complete(&mut sh, done);
            }
            let now = self.clock.now_us();
            self.start_due(&mut sh, now);
            // The stages are over: no new work. Checked after starting what was due before the
            // end, so that a worker woken late still starts (late) or drops (counted) every
            // arrival and tick of the stages, never losing one silently.
            if now >= self.end_us {
                break;
            }
            // Every agent has made its iterations: nothing is left to do (checked after the
            // drain above, which may have taken in the last uploads).
            if self.plan.iterations.is_some() && sh.heap.is_empty() && sh.inflight.is_empty() {
                break;
            }
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
                Some(done) = sh.inflight.next(), if !sh.inflight.is_empty() => {
                    self.complete(&mut sh, done);
                }
                () = &mut sleep => {}
            }
        }
        // Drain: in-flight uploads get the grace period (at most a second when a signal stopped the
        // run: its directory is promised within two); whatever is still out after it is dropped.
        let grace = if *stop.borrow() {
            self.plan.grace.min(SIGNAL_GRACE)
        } else {
            self.plan.grace
        };
        let deadline = tokio::time::Instant::now() + grace;
        while !sh.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, sh.inflight.next()).await {
                Ok(Some(attempt)) => {
                    let slot = sh.slot_of[&attempt.index];
                    let mut ignored = BinaryHeap::new();
                    self.finish(&mut sh.agents[slot], attempt, &mut ignored, slot);
                }
                Ok(None) => break,
                Err(_) => {
                    self.agg.abandoned += sh.inflight.len() as u64;
                    self.stats.rows_abandoned += self.stats.rows_out.values().sum::<u64>();
                    sh.inflight.clear();
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
    fn complete(&mut self, sh: &mut Roster, attempt: Attempt) {
        let slot = sh.slot_of[&attempt.index];
        if !self.finish(&mut sh.agents[slot], attempt, &mut sh.heap, slot) {
            return;
        }
        match self.plan.model {
            LoadModel::ArrivalRate => sh.idle.push_back(slot),
            LoadModel::Closed => {
                let at = self.clock.now_us() + self.plan.think_time.as_micros() as u64;
                let more = self.plan.iterations.is_none_or(|n| sh.begun[slot] < n);
                if more && at < sh.agents[slot].until_us {
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
    fn start_due(&mut self, sh: &mut Roster, now: u64) {
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
            sh.next_arrival += self.workers * u64::from(self.plan.shard.1.max(1));
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
                sh.begun[d.slot] += 1;
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
    fn launch(
        &mut self,
        a: &mut Agent,
        now: u64,
        inflight: &mut FuturesUnordered<BoxFuture<'static, Attempt>>,
    ) {
        if let Some(upload) = self.ready(a, now) {
            self.progress.in_flight.fetch_add(1, Relaxed);
            self.stats
                .rows_out
                .insert(upload.index, upload.rows.len() as u64);
            let target = self.target.clone();
            let clock = self.clock;
            inflight.push(Box::pin(async move { upload.run(&target, &clock).await }));
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

    /// After an upload that did not fail for a retryable reason: rows still waiting go at once (the
    /// agent stays busy, `false`), else the agent is idle again (`true`).
    fn idle_unless_backlog(
        &self,
        a: &Agent,
        heap: &mut BinaryHeap<Reverse<Due>>,
        slot: usize,
    ) -> bool {
        if a.backlog.is_empty() {
            return true;
        }
        heap.push(Reverse(Due {
            at_us: self.clock.now_us(),
            slot,
            retry: true,
        }));
        false
    }

    fn finish(
        &mut self,
        a: &mut Agent,
        attempt: Attempt,
        heap: &mut BinaryHeap<Reverse<Due>>,
        slot: usize,
    ) -> bool {
        self.progress.in_flight.fetch_sub(1, Relaxed);
        self.stats.rows_out.remove(&attempt.index);
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
                self.idle_unless_backlog(a, heap, slot)
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
                self.idle_unless_backlog(a, heap, slot)
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
