//! `fleetbench compare BASELINE_DIR RUN_DIR`: per operation present in both runs, each latency
//! percentile (from the intended start), the error rate and the throughput of the run against the
//! baseline. A latency percentile regresses when it is both `tolerance` (relative) and `min_delta_ms`
//! (absolute) worse, so sub-millisecond jitter is not a regression; the error rate when it rises by
//! more than `error_tolerance` (percentage points); the rate when it falls by more than `tolerance`.
//! When both runs scraped their target's Metrics API, the server's figures (each panel line's mean
//! and peak) are set side by side too, for reading the latency changes against.

use fleetbench_metrics::Summary;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Relative: 0.10 = 10 % worse.
    pub relative: f64,
    pub min_delta_ms: f64,
    /// Percentage points of error rate.
    pub error_points: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            relative: 0.10,
            min_delta_ms: 1.0,
            error_points: 0.1,
        }
    }
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub operation: String,
    /// `p50` … `p999`, `max`, `error_rate_pct`, `rate_per_s`.
    pub metric: String,
    pub baseline: f64,
    pub run: f64,
    /// (run − baseline) / baseline; null when the baseline is 0.
    pub relative: Option<f64>,
    pub regressed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline_run_id: String,
    pub run_id: String,
    pub tolerance_pct: f64,
    pub min_delta_ms: f64,
    pub error_tolerance_points: f64,
    pub changes: Vec<Change>,
    /// Operations in only one of the two runs.
    pub only_in_baseline: Vec<String>,
    pub only_in_run: Vec<String>,
    /// What the target's server did in each run (both had a Metrics API): informational, never a
    /// regression by itself.
    #[serde(default)]
    pub server: Vec<ServerChange>,
}

/// One server-side figure of both runs (a panel line's mean or peak).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerChange {
    pub figure: String,
    pub unit: String,
    pub baseline: f64,
    pub run: f64,
    pub relative: Option<f64>,
}

/// The server-side figures both runs have, baseline beside run.
pub fn server_changes(
    base: &fleetbench_metrics::server::ServerSeries,
    run: &fleetbench_metrics::server::ServerSeries,
) -> Vec<ServerChange> {
    let before = base.figures();
    run.figures()
        .into_iter()
        .filter_map(|(figure, unit, r)| {
            let (_, _, b) = before.iter().find(|x| x.0 == figure)?;
            Some(ServerChange {
                relative: (*b != 0.0).then(|| (r - b) / b.abs()),
                figure,
                unit,
                baseline: *b,
                run: r,
            })
        })
        .collect()
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.regressed)
    }
}

pub fn compare(base: &Summary, run: &Summary, tol: Tolerance) -> Comparison {
    let mut changes = Vec::new();
    let relative = |b: f64, r: f64| (b > 0.0).then(|| (r - b) / b);
    for (name, r) in &run.operations {
        let Some(b) = base.operations.get(name) else {
            continue;
        };
        let (bl, rl) = (&b.latency_ms, &r.latency_ms);
        for (metric, bv, rv) in [
            ("p50", bl.p50, rl.p50),
            ("p90", bl.p90, rl.p90),
            ("p95", bl.p95, rl.p95),
            ("p99", bl.p99, rl.p99),
            ("p999", bl.p999, rl.p999),
            ("max", bl.max, rl.max),
        ] {
            changes.push(Change {
                operation: name.clone(),
                metric: metric.into(),
                baseline: bv,
                run: rv,
                relative: relative(bv, rv),
                regressed: rv > bv * (1.0 + tol.relative) && rv - bv > tol.min_delta_ms,
            });
        }
        let pct = |o: &fleetbench_metrics::summary::OperationSummary| {
            if o.count > 0 {
                o.errors as f64 * 100.0 / o.count as f64
            } else {
                0.0
            }
        };
        let (be, re) = (pct(b), pct(r));
        changes.push(Change {
            operation: name.clone(),
            metric: "error_rate_pct".into(),
            baseline: be,
            run: re,
            relative: relative(be, re),
            regressed: re - be > tol.error_points,
        });
        changes.push(Change {
            operation: name.clone(),
            metric: "rate_per_s".into(),
            baseline: b.rate_per_s,
            run: r.rate_per_s,
            relative: relative(b.rate_per_s, r.rate_per_s),
            regressed: r.rate_per_s < b.rate_per_s * (1.0 - tol.relative),
        });
    }
    Comparison {
        baseline_run_id: base.run_id.clone(),
        run_id: run.run_id.clone(),
        tolerance_pct: tol.relative * 100.0,
        min_delta_ms: tol.min_delta_ms,
        error_tolerance_points: tol.error_points,
        changes,
        only_in_baseline: base
            .operations
            .keys()
            .filter(|k| !run.operations.contains_key(*k))
            .cloned()
            .collect(),
        only_in_run: run
            .operations
            .keys()
            .filter(|k| !base.operations.contains_key(*k))
            .cloned()
            .collect(),
        server: Vec::new(),
    }
}
