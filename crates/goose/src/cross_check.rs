//! The cross-check (`fleetbench goose --cross-check`): the same closed workload through fleetbench's engine, then
//! as goose users against the same target, compared operation by operation (request counts equal,
//! medians and 99th percentiles within the tolerance).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetbench_fleet::Target;
use fleetbench_runner::Endpoints;
use fleetbench_scenario::Plan;
use serde::Serialize;

/// One operation as each side measured it.
#[derive(Debug, Serialize)]
pub struct Agreement {
    pub operation: String,
    pub fleetbench_count: u64,
    pub goose_count: u64,
    /// Milliseconds: fleetbench's latency (from the intended start), goose's response time.
    pub fleetbench_p50_ms: f64,
    pub goose_p50_ms: f64,
    pub fleetbench_p99_ms: f64,
    pub goose_p99_ms: f64,
    /// Percentiles are compared only from [`MIN_SAMPLES`] requests on each side: the medians of
    /// 20 sign-ins differ by chance more than any tolerance worth stating.
    pub percentiles_compared: bool,
    pub agree: bool,
    pub why_not: Vec<String>,
}

/// Requests each side needs before its percentiles are compared.
pub const MIN_SAMPLES: u64 = 200;

/// Whether two figures agree: within `tolerance` of the larger, or `min_delta` apart.
fn close(a: f64, b: f64, tolerance: f64, min_delta_ms: f64) -> bool {
    (a - b).abs() <= (tolerance * a.max(b)).max(min_delta_ms)
}

/// Operation by operation, fleetbench's aggregate against goose's metrics.
pub fn agreement(
    ours: &fleetbench_metrics::Aggregate,
    theirs: &BTreeMap<String, (u64, f64, f64)>,
    tolerance: f64,
    min_delta: Duration,
) -> Vec<Agreement> {
    let min_ms = min_delta.as_secs_f64() * 1e3;
    let names: std::collections::BTreeSet<&String> =
        ours.operations.keys().chain(theirs.keys()).collect();
    names
        .into_iter()
        .map(|op| {
            let (count, p50, p99) = ours.operations.get(op).map_or((0, 0.0, 0.0), |o| {
                let h = &o.total.latency;
                (
                    o.total.count,
                    h.value_at_quantile(0.5) as f64 / 1e3,
                    h.value_at_quantile(0.99) as f64 / 1e3,
                )
            });
            let (g_count, g50, g99) = theirs.get(op).copied().unwrap_or_default();
            let mut why_not = Vec::new();
            if count != g_count {
                why_not.push(format!("{count} requests against goose's {g_count}"));
            }
            let compared = count.min(g_count) >= MIN_SAMPLES;
            if compared && !close(p50, g50, tolerance, min_ms) {
                why_not.push(format!("median {p50:.2} ms against goose's {g50:.2} ms"));
            }
            if compared && !close(p99, g99, tolerance, min_ms) {
                why_not.push(format!("p99 {p99:.2} ms against goose's {g99:.2} ms"));
            }
            Agreement {
                operation: op.clone(),
                fleetbench_count: count,
                goose_count: g_count,
                fleetbench_p50_ms: p50,
                goose_p50_ms: g50,
                fleetbench_p99_ms: p99,
                goose_p99_ms: g99,
                percentiles_compared: compared,
                agree: why_not.is_empty(),
                why_not,
            }
        })
        .collect()
}

/// Goose's requests by operation name (its `METHOD name` keys without the method): count,
/// median and p99 in milliseconds, from its microsecond buckets.
pub fn goose_operations(
    metrics: &goose::metrics::GooseMetrics,
) -> BTreeMap<String, (u64, f64, f64)> {
    metrics
        .requests
        .iter()
        .map(|(key, r)| {
            let name = key
                .split_once(' ')
                .map_or(key.as_str(), |(_, n)| n)
                .to_string();
            let t = &r.raw_data;
            (
                name,
                (
                    t.counter as u64,
                    t.percentile_us(0.5) as f64 / 1e3,
                    t.percentile_us(0.99) as f64 / 1e3,
                ),
            )
        })
        .collect()
}

/// The same plan through fleetbench's own engine (its users cleaned up after).
pub async fn engine_run(
    plan: &Plan,
    resolved: &Endpoints,
) -> anyhow::Result<fleetbench_metrics::Aggregate> {
    let run_id = uuid::Uuid::new_v4().to_string();
    eprintln!("goose --cross-check: fleetbench's engine first (run {run_id})");
    let target = Arc::new(
        Target::new(
            resolved.config.clone(),
            16,
            plan.connections as usize,
            plan.request_timeout,
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    let (_keep, stop) = tokio::sync::watch::channel(false);
    let progress = Arc::new(fleetbench_fleet::Progress::default());
    let outcome = fleetbench_fleet::run(plan.clone(), target, run_id.clone(), progress, stop)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if plan.cleanup {
        let cleanup = fleetbench_runner::finish::clean(resolved, &run_id).await;
        eprintln!("{}", cleanup.describe("goose --cross-check", &run_id));
    }
    Ok(outcome.aggregate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_metrics::{Aggregate, Outcome, Sample};

    fn ours(latencies_ms: &[f64]) -> Aggregate {
        let mut agg = Aggregate::new(1_000_000);
        for (i, ms) in latencies_ms.iter().enumerate() {
            let sent = i as u64 * 1_000;
            agg.add(&Sample {
                operation: "rest.insert_metrics",
                intended_us: sent,
                sent_us: sent,
                done_us: sent + (ms * 1e3) as u64,
                rows: 1,
                bytes: 1,
                outcome: Outcome::Ok,
            });
        }
        agg
    }

    #[test]
    fn counts_must_match_and_percentiles_be_close() {
        // 1..=300 ms: median 150, p99 297 (within HdrHistogram's 0.1 %).
        let lat: Vec<f64> = (1..=300).map(f64::from).collect();
        let agg = ours(&lat);
        let near = BTreeMap::from([("rest.insert_metrics".to_string(), (300, 155.0, 300.0))]);
        let [a] = agreement(&agg, &near, 0.10, Duration::ZERO)
            .try_into()
            .unwrap();
        assert!(a.agree && a.percentiles_compared, "{a:?}");
        assert!(
            (a.fleetbench_p50_ms - 150.0).abs() < 0.5 && (a.fleetbench_p99_ms - 297.0).abs() < 0.5
        );
        // One request more on goose's side, or a median 20 % away, is a disagreement.
        let more = BTreeMap::from([("rest.insert_metrics".to_string(), (301, 150.0, 297.0))]);
        let [b] = agreement(&agg, &more, 0.10, Duration::ZERO)
            .try_into()
            .unwrap();
        assert!(!b.agree && b.why_not[0].contains("300 requests against goose's 301"));
        let slow = BTreeMap::from([("rest.insert_metrics".to_string(), (300, 180.0, 297.0))]);
        let [c] = agreement(&agg, &slow, 0.10, Duration::ZERO)
            .try_into()
            .unwrap();
        assert!(!c.agree && c.why_not[0].starts_with("median"));
        // ... unless the difference is under the absolute floor.
        let [d] = agreement(&agg, &slow, 0.10, Duration::from_millis(40))
            .try_into()
            .unwrap();
        assert!(d.agree);
        // An operation only one side made disagrees on its count.
        let other = BTreeMap::from([("auth.refresh".to_string(), (3, 1.0, 1.0))]);
        let both = agreement(&agg, &other, 0.10, Duration::ZERO);
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(|r| !r.agree));
    }

    #[test]
    fn too_few_requests_compare_counts_only() {
        let agg = ours(&[1.0; 20]);
        let far = BTreeMap::from([("rest.insert_metrics".to_string(), (20, 50.0, 90.0))]);
        let [a] = agreement(&agg, &far, 0.10, Duration::ZERO)
            .try_into()
            .unwrap();
        assert!(a.agree && !a.percentiles_compared);
    }
}
