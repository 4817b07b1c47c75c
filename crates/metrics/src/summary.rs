//! `summary.json`: the machine-readable result of a run (INTERFACE.md), and threshold verdicts
//! computed from it.

use std::collections::BTreeMap;

use fleetbench_scenario::threshold::{Metric, Threshold};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, Counts};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperationSummary {
    pub count: u64,
    pub errors: u64,
    pub rate_per_s: f64,
    pub rows: u64,
    pub bytes: u64,
    /// From the intended start.
    pub latency_ms: Percentiles,
    /// From the actual send.
    pub service_ms: Percentiles,
    pub errors_by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetFacts {
    pub kind: String,
    /// Scheme, host and port only.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdResult {
    pub operation: String,
    pub expr: String,
    /// `null` when the operation has no samples (the threshold then fails).
    pub observed: Option<f64>,
    pub pass: bool,
}

impl ThresholdResult {
    /// What the threshold observed, in its metric's unit (`7.64 ms`, `0.120 %`), or `no samples`.
    pub fn observed_text(&self) -> String {
        match (self.observed, Threshold::parse(&self.operation, &self.expr)) {
            (None, _) => "no samples".into(),
            (Some(v), Ok(t)) => t.metric.show(v),
            (Some(v), Err(_)) => format!("{v}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub schema_version: u32,
    pub run_id: String,
    pub scenario: String,
    pub started_at: String,
    pub duration_s: f64,
    /// When the load phase began and how long it lasted (provisioning is before it, probes
    /// finishing after it); operations' `rate_per_s` is over it. Absent for a run without a fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_phase: Option<LoadPhase>,
    pub target: TargetFacts,
    pub verdict: String,
    pub thresholds: Vec<ThresholdResult>,
    pub operations: BTreeMap<String, OperationSummary>,
    /// Scheduled work that started more than one window late, work never started, and work still
    /// in flight when the grace period ended.
    pub late: u64,
    pub dropped: u64,
    pub abandoned: u64,
    pub interrupted: bool,
    /// The `abort_on_fail` threshold that stopped the run early (the verdict is then `fail`).
    pub aborted: Option<String>,
    pub environment: Environment,
    /// Probe name (`realtime`, `rag`, …) → its results; empty when no probe ran.
    #[serde(default)]
    pub probes: BTreeMap<String, ProbeReport>,
    /// What the fleet delivered of its plan, judged against `[delivery]`; absent for a run
    /// without a fleet (a probe alone) and in summaries written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Which shard of a sharded run this is (`--shard I/N`); absent for a whole run and for a
    /// merged one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// A merged run: each way one of its shards failed on its own (a probe, its delivery, a stop
    /// signal, an abort), naming the shard; the verdict is then `fail`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards_failed: Vec<String>,
}

/// The load phase of a run: its start (RFC 3339) and length.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadPhase {
    pub started_at: String,
    pub duration_s: f64,
}

/// One shard of a run: agents `index + k·count`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Planned against achieved: agents that ran, uploads dropped for want of an idle agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    pub agents_planned: u64,
    pub agents_ran: u64,
    /// `[delivery] agents`: the least share of planned agents that must run.
    pub agents_required: f64,
    /// Uploads the schedule called for (started, plus dropped).
    pub uploads_planned: u64,
    pub uploads_dropped: u64,
    /// `[delivery] dropped`: the most share of planned uploads that may be dropped.
    pub dropped_allowed: f64,
    /// Each way the run fell short of its plan beyond what `[delivery]` allows (then the verdict is
    /// `fail`); empty when it did not.
    pub shortfall: Vec<String>,
}

impl Delivery {
    /// The deliveries of the shards of one run, added up and judged again as one plan (the
    /// shares are the first shard's: every shard ran the same scenario); `None` when no shard
    /// ran a fleet.
    pub fn merged<'a>(
        shards: impl IntoIterator<Item = &'a Delivery>,
        interrupted: bool,
    ) -> Option<Delivery> {
        let mut total: Option<Delivery> = None;
        for d in shards {
            let t = total.get_or_insert_with(|| Delivery {
                agents_required: d.agents_required,
                dropped_allowed: d.dropped_allowed,
                ..Delivery::default()
            });
            t.agents_planned += d.agents_planned;
            t.agents_ran += d.agents_ran;
            t.uploads_planned += d.uploads_planned;
            t.uploads_dropped += d.uploads_dropped;
        }
        total.map(|t| t.judge((!interrupted).then_some(None)))
    }

    /// The shortfalls of a run that ran `agents_ran` of `agents_planned` agents and dropped
    /// `uploads_dropped` of `uploads_planned` uploads, judged against the two shares. `agents`
    /// is `None` when missing agents are not judged (a stop signal ended provisioning), else
    /// the last refusal that explains them, if any.
    pub fn judge(mut self, agents: Option<Option<&str>>) -> Delivery {
        let needed = (self.agents_required * self.agents_planned as f64).ceil() as u64;
        if let Some(why) = agents
            && self.agents_ran < needed
        {
            self.shortfall.push(format!(
                "{} of {} planned agents ran ({:.1} %; delivery.agents = {} requires {needed}){}",
                self.agents_ran,
                self.agents_planned,
                100.0 * self.agents_ran as f64 / self.agents_planned.max(1) as f64,
                self.agents_required,
                why.map_or(String::new(), |w| format!("; the last refusal: {w}"))
            ));
        }
        let share = self.uploads_dropped as f64 / self.uploads_planned.max(1) as f64;
        if share > self.dropped_allowed {
            self.shortfall.push(format!(
                "{} of {} planned uploads were dropped for want of an idle agent ({:.1} %; delivery.dropped = {} allows {:.1} %)",
                self.uploads_dropped,
                self.uploads_planned,
                100.0 * share,
                self.dropped_allowed,
                100.0 * self.dropped_allowed
            ));
        }
        self
    }
}

/// An operation's figures from its counts, its rate over `duration_s`.
pub fn operation(c: &Counts, duration_s: f64) -> OperationSummary {
    OperationSummary {
        count: c.count,
        errors: c.errors,
        rate_per_s: if duration_s > 0.0 {
            c.count as f64 / duration_s
        } else {
            0.0
        },
        rows: c.rows,
        bytes: c.bytes,
        latency_ms: percentiles(&c.latency),
        service_ms: percentiles(&c.service),
        errors_by_kind: c.errors_by_kind.clone(),
    }
}

/// What threshold `t` observes on `c`, measured over `elapsed_s` (for rates), during a run.
pub fn observe_counts(t: &Threshold, c: &Counts, elapsed_s: f64) -> Option<f64> {
    observe(&operation(c, elapsed_s), c, t.metric)
}

/// What a threshold metric observed for one operation, if it has samples.
pub fn observe(op: &OperationSummary, c: &Counts, metric: Metric) -> Option<f64> {
    if op.count == 0 {
        return None;
    }
    Some(match metric {
        Metric::Percentile(p) => ms(c.latency.value_at_quantile(p / 100.0)),
        Metric::Avg => op.latency_ms.mean,
        Metric::Min => ms(c.latency.min()),
        Metric::Max => op.latency_ms.max,
        Metric::Med => op.latency_ms.p50,
        Metric::ErrorRate => op.errors as f64 / op.count as f64,
        Metric::Rate => op.rate_per_s,
        Metric::Count => op.count as f64,
        // Delivery probes report loss as their error rate (a lost event is an error of kind `lost`).
        Metric::Loss => {
            op.errors_by_kind.get("lost").copied().unwrap_or(0) as f64 / op.count as f64
        }
    })
}

/// One figure a probe measured, with the published hosted figure beside it when there is one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// For context: what Supabase publishes for the same quantity (wire reference), as text.
    pub published: Option<String>,
}

/// The results of one end-to-end probe (Realtime delivery, RAG, partitions, pooler, webhooks,
/// RLS, collectors), as the report shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProbeReport {
    pub title: String,
    /// The architecture's claim the probe checks, in its words.
    #[serde(default)]
    pub claim: String,
    /// `pass`, `fail`, or `info` (a measurement with nothing to hold).
    pub verdict: String,
    pub figures: Vec<Figure>,
    /// Sentences worth a reader's attention (a caveat confirmed, a claim disproved).
    pub findings: Vec<String>,
    /// Tables of measurements (an `ef_search` sweep, queries by data size).
    #[serde(default)]
    pub tables: Vec<Table>,
    /// Line charts (latency against data size).
    #[serde(default)]
    pub charts: Vec<ProbeChart>,
}

/// A probe's table: a header row and rows of already formatted cells.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// A probe's line chart: named series of (x, y) points.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProbeChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<ChartSeries>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChartSeries {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// What ran the run: fleetbench's version and commit, and the machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Environment {
    pub fleetbench_version: String,
    /// The commit fleetbench was built from (`unknown` outside a git checkout; `+dirty` when the
    /// tree had changes).
    pub git_commit: String,
    pub os: String,
    pub kernel: String,
    pub cpus: u32,
    pub memory_bytes: u64,
}

pub struct RunFacts {
    pub environment: Environment,
    /// The `abort_on_fail` threshold that stopped the run early, if one did.
    pub aborted: Option<String>,
    pub run_id: String,
    pub scenario: String,
    pub started_at: String,
    pub duration_s: f64,
    pub load_phase: Option<LoadPhase>,
    pub target: TargetFacts,
    pub interrupted: bool,
}

impl Summary {
    pub fn new(agg: &Aggregate, facts: RunFacts, thresholds: &[Threshold]) -> Summary {
        let rate_s = facts
            .load_phase
            .as_ref()
            .map_or(facts.duration_s, |l| l.duration_s);
        let operations: BTreeMap<String, OperationSummary> = agg
            .operations
            .iter()
            .map(|(k, op)| (k.clone(), operation(&op.total, rate_s)))
            .collect();
        let results: Vec<ThresholdResult> = thresholds
            .iter()
            .map(|t| {
                let observed = match (
                    operations.get(&t.operation),
                    agg.operations.get(&t.operation),
                ) {
                    (Some(op), Some(a)) => observe(op, &a.total, t.metric),
                    _ => None,
                };
                ThresholdResult {
                    operation: t.operation.clone(),
                    expr: t.expr.clone(),
                    observed,
                    pass: observed.is_some_and(|v| t.cmp.holds(v, t.value)),
                }
            })
            .collect();
        let pass = results.iter().all(|r| r.pass) && facts.aborted.is_none();
        Summary {
            schema_version: SCHEMA_VERSION,
            run_id: facts.run_id,
            scenario: facts.scenario,
            started_at: facts.started_at,
            duration_s: facts.duration_s,
            load_phase: facts.load_phase,
            target: facts.target,
            verdict: if pass { "pass" } else { "fail" }.into(),
            thresholds: results,
            operations,
            late: agg.late,
            dropped: agg.dropped,
            abandoned: agg.abandoned,
            interrupted: facts.interrupted,
            aborted: facts.aborted,
            environment: facts.environment,
            probes: BTreeMap::new(),
            delivery: None,
            shard: None,
            shards_failed: Vec::new(),
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }

    /// Records how the shards of a merged run failed on their own; any failure fails the run.
    pub fn attach_shard_failures(&mut self, failures: Vec<String>) {
        if !failures.is_empty() {
            self.verdict = "fail".into();
        }
        self.shards_failed = failures;
    }

    /// Records what the fleet delivered; a shortfall fails the run.
    pub fn attach_delivery(&mut self, delivery: Delivery) {
        if !delivery.shortfall.is_empty() {
            self.verdict = "fail".into();
        }
        self.delivery = Some(delivery);
    }
}
