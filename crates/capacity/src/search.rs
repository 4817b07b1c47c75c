//! `fleetbench capacity`: the largest load that still holds every SLO expression. The load is
//! stepped up geometrically from `start` until a step breaks the SLO (or `max` holds), then the
//! interval between the last step that held and the first that broke is bisected until it is
//! narrower than `resolution`. Each step runs the scenario held at one level; what it measured
//! during its warm-up is left out. The search stops early, keeping what it found, when a step shows
//! the target degraded (most requests failing, or latency far past the SLO) or the time bound is
//! reached. The knee is measured once more at the end, for a repeat-variance note.
//!
//! The search is a function of a `measure(level)` closure, so that the stepping logic is tested
//! apart from any target.

use std::time::{Duration, Instant};

use fleetbench_metrics::Aggregate;
use fleetbench_metrics::aggregate::Counts;
use fleetbench_metrics::summary::observe_counts;
use fleetbench_scenario::Threshold;
use serde::{Deserialize, Serialize};

/// `op: expr, expr; op: expr` → thresholds (each `op` must be a known operation).
pub fn parse_slo(text: &str) -> Result<Vec<Threshold>, String> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (op, exprs) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?}: write an SLO as `operation: expression, expression`, e.g. `rest.insert_metrics: p(99) < 300ms, error_rate < 0.5%`"))?;
        let op = op.trim();
        if !fleetbench_scenario::OPERATIONS.contains(&op) {
            return Err(format!(
                "unknown operation {op:?} in the SLO: expected one of {:?}",
                fleetbench_scenario::OPERATIONS
            ));
        }
        for e in exprs.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            out.push(Threshold::parse(op, e).map_err(|m| format!("SLO {op}: {m}"))?);
        }
    }
    if out.is_empty() {
        return Err("the SLO is empty".into());
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub start: f64,
    pub max: f64,
    /// Each step up multiplies the level by this.
    pub growth: f64,
    /// Bisection stops when (first broken − last held) / last held is below this.
    pub resolution: f64,
    /// The whole search stops (keeping what it found) after this.
    pub time_limit: Duration,
    /// Levels are whole numbers (agents) or not (uploads per second).
    pub whole: bool,
}

/// What one step measured at one level.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    pub level: f64,
    /// Uploads per second the plan asked for, and what the target completed, after warm-up.
    pub offered_per_s: f64,
    pub achieved_per_s: f64,
    /// Per SLO expression: (operation, expression, observed, held).
    pub slo: Vec<(String, String, Option<f64>, bool)>,
    /// Per SLO operation: (operation, p50 ms, p99 ms, error rate).
    pub operations: Vec<(String, f64, f64, f64)>,
    /// Arrivals that found no idle agent, and uploads started late: the generator could not offer
    /// the load, which breaks the step too.
    pub dropped: u64,
    pub late: u64,
    /// Resources seen at the end of the step: (name, value, limit if known).
    pub resources: Vec<(String, f64, Option<f64>)>,
    pub seconds: f64,
    /// Set when this step showed the target degraded (the search stops going up).
    pub degraded: Option<String>,
}

impl Step {
    pub fn held(&self) -> bool {
        self.slo.iter().all(|s| s.3) && self.degraded.is_none()
    }
}

/// The search's result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SearchOutcome {
    pub steps: Vec<Step>,
    /// The largest level that held every expression, and the smallest that broke one.
    pub knee: Option<f64>,
    pub broke_at: Option<f64>,
    /// The expression that broke at `broke_at`, with its operation.
    pub broke_first: Option<String>,
    /// Why the search ended before its bisection did (the time bound, a signal).
    pub stopped_early: Option<String>,
    /// The step at which the target degraded (the search went no higher).
    pub degraded: Option<String>,
    /// The knee measured again: (first p99 ms, repeat p99 ms) of the first SLO operation.
    pub repeat: Option<(f64, f64)>,
}

/// The steady-state counts of an operation: the whole windows from `from_us` on.
pub fn steady(agg: &Aggregate, operation: &str, from_us: u64) -> Option<Counts> {
    let op = agg.operations.get(operation)?;
    let first = from_us.div_ceil(agg.window_us);
    let mut total: Option<Counts> = None;
    for (_, c) in op.windows_from(first) {
        match &mut total {
            None => total = Some(c.into_owned()),
            Some(t) => t.merge(&c),
        }
    }
    total
}

/// Judges a step's steady state against the SLO: fills `slo`, `operations` and `degraded`.
pub fn judge(step: &mut Step, agg: &Aggregate, from_us: u64, seconds: f64, slo: &[Threshold]) {
    let mut seen = Vec::new();
    for t in slo {
        let counts = steady(agg, &t.operation, from_us);
        let observed = counts.as_ref().and_then(|c| observe_counts(t, c, seconds));
        let held = observed.is_some_and(|v| t.cmp.holds(v, t.value));
        step.slo
            .push((t.operation.clone(), t.expr.clone(), observed, held));
        if let Some(c) = counts.filter(|_| !seen.contains(&t.operation)) {
            seen.push(t.operation.clone());
            let ms = |q: f64| c.latency.value_at_quantile(q) as f64 / 1000.0;
            let err = c.errors as f64 / c.count.max(1) as f64;
            step.operations
                .push((t.operation.clone(), ms(0.5), ms(0.99), err));
            if err > 0.5 {
                step.degraded = Some(format!(
                    "{} failed {:.0} % of its requests",
                    t.operation,
                    err * 100.0
                ));
            }
            // A latency bound exceeded tenfold: the target is past saturation, not near it.
            if let (fleetbench_scenario::Metric::Percentile(_), Some(v)) = (t.metric, observed)
                && t.value > 0.0
                && v > 10.0 * t.value
            {
                step.degraded = Some(format!(
                    "{} at {v:.0} ms, over ten times its bound ({})",
                    t.operation, t.expr
                ));
            }
        }
    }
    if step.offered_per_s > 0.0 && step.dropped as f64 > 0.01 * step.offered_per_s * seconds {
        step.slo.push((
            "generator".into(),
            "dropped arrivals < 1 %".into(),
            Some(step.dropped as f64),
            false,
        ));
    }
}

fn round(level: f64, whole: bool) -> f64 {
    if whole { level.round().max(1.0) } else { level }
}

pub async fn search<F, Fut>(settings: &Settings, mut measure: F) -> SearchOutcome
where
    F: FnMut(f64) -> Fut,
    Fut: std::future::Future<Output = Step>,
{
    let started = Instant::now();
    let mut out = SearchOutcome::default();
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut level = round(settings.start, settings.whole);
    let over_time = |out: &mut SearchOutcome| {
        if started.elapsed() >= settings.time_limit {
            out.stopped_early = Some(format!(
                "the time bound ({:?}) was reached",
                settings.time_limit
            ));
            true
        } else {
            false
        }
    };
    // Up, geometrically.
    loop {
        let step = measure(level).await;
        let held = step.held();
        let degraded = step.degraded.clone();
        if !held && hi.is_none() {
            out.broke_first = step
                .slo
                .iter()
                .find(|s| !s.3)
                .map(|s| format!("{}: {}", s.0, s.1))
                .or(degraded.clone());
        }
        out.steps.push(step);
        if held {
            lo = Some(level);
        } else {
            hi = Some(level);
            if let Some(d) = degraded {
                // Safe: no level above this one is tried; the bisection below it goes on.
                out.degraded = Some(format!("the target degraded at {level}: {d}"));
            }
            break;
        }
        if level >= settings.max || over_time(&mut out) {
            break;
        }
        level = round((level * settings.growth).min(settings.max), settings.whole);
    }
    // Then between the last level that held and the first that broke.
    if let (Some(mut l), Some(mut h)) = (lo, hi) {
        while (h - l) / l > settings.resolution && !over_time(&mut out) {
            let mid = round((l + h) / 2.0, settings.whole);
            if mid <= l || mid >= h {
                break;
            }
            let step = measure(mid).await;
            let held = step.held();
            if !held {
                out.broke_first = step
                    .slo
                    .iter()
                    .find(|s| !s.3)
                    .map(|s| format!("{}: {}", s.0, s.1))
                    .or(step.degraded.clone());
            }
            out.steps.push(step);
            if held {
                l = mid;
            } else {
                h = mid;
            }
        }
        (lo, hi) = (Some(l), Some(h));
    }
    out.knee = lo;
    out.broke_at = hi;
    // The knee once more: how much a step's figures move between runs.
    if let Some(k) = lo
        && !over_time(&mut out)
    {
        let first = out
            .steps
            .iter()
            .rev()
            .find(|s| s.level == k)
            .and_then(|s| s.operations.first())
            .map(|o| o.2);
        let again = measure(k).await;
        let second = again.operations.first().map(|o| o.2);
        if let (Some(a), Some(b)) = (first, second) {
            out.repeat = Some((a, b));
        }
        out.steps.push(again);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target that holds the SLO up to `knee` and degrades far above it.
    fn target(knee: f64) -> impl FnMut(f64) -> std::future::Ready<Step> {
        move |level| {
            let held = level <= knee;
            std::future::ready(Step {
                level,
                slo: vec![(
                    "rest.insert_metrics".into(),
                    "p(99) < 300ms".into(),
                    Some(if held { 100.0 } else { 900.0 }),
                    held,
                )],
                operations: vec![(
                    "rest.insert_metrics".into(),
                    10.0,
                    if held { 100.0 } else { 900.0 },
                    0.0,
                )],
                degraded: (level > 4.0 * knee).then(|| "far past it".to_string()),
                ..Default::default()
            })
        }
    }

    fn settings(whole: bool) -> Settings {
        Settings {
            start: 100.0,
            max: 100_000.0,
            growth: 2.0,
            resolution: 0.05,
            time_limit: Duration::from_secs(60),
            whole,
        }
    }

    #[tokio::test]
    async fn the_knee_is_bracketed_to_the_resolution() {
        for knee in [100.0, 137.0, 730.0, 5_000.0, 12_345.0] {
            let out = search(&settings(true), target(knee)).await;
            let (k, b) = (out.knee.unwrap(), out.broke_at.unwrap());
            assert!(k <= knee && knee < b, "{knee}: bracket {k}..{b}");
            assert!(
                (b - k) / k <= 0.05 || b - k <= 1.0,
                "{knee}: bracket {k}..{b} wider than 5 %"
            );
            assert_eq!(
                out.broke_first.as_deref(),
                Some("rest.insert_metrics: p(99) < 300ms")
            );
            // Levels tried: up by doubling, then only inside the bracket; the knee once more.
            assert!(
                out.steps.iter().all(|s| s.level <= 2.0 * knee.max(100.0)),
                "{knee}: went past the first break"
            );
            assert_eq!(out.steps.last().unwrap().level, k);
            assert_eq!(out.repeat, Some((100.0, 100.0)));
        }
    }

    #[tokio::test]
    async fn a_degraded_target_is_not_pushed_further_and_the_first_level_may_break() {
        // Doubling from 100 jumps from 200 (held) to 400: four times the knee, degraded.
        let out = search(&settings(true), target(90.0)).await;
        assert_eq!((out.knee, out.broke_at), (None, Some(100.0)));
        let out = search(
            &Settings {
                start: 50.0,
                growth: 8.0,
                ..settings(true)
            },
            target(60.0),
        )
        .await;
        assert!(out.degraded.is_some());
        assert_eq!(out.steps.iter().map(|s| s.level).fold(0.0, f64::max), 400.0);
        let (k, b) = (out.knee.unwrap(), out.broke_at.unwrap());
        assert!(k <= 60.0 && 60.0 < b && (b - k) / k <= 0.05, "{k}..{b}");
        // Everything held up to the maximum: no knee above it is claimed.
        let out = search(
            &Settings {
                max: 1_000.0,
                ..settings(true)
            },
            target(1e9),
        )
        .await;
        assert_eq!((out.knee, out.broke_at), (Some(1_000.0), None));
    }

    #[tokio::test]
    async fn the_time_bound_stops_the_search_with_what_it_found() {
        let slow = |level: f64| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Step {
                level,
                slo: vec![("a.b".into(), "x".into(), Some(1.0), level <= 700.0)],
                ..Default::default()
            }
        };
        let out = search(
            &Settings {
                time_limit: Duration::from_millis(100),
                ..settings(false)
            },
            slow,
        )
        .await;
        assert!(
            out.stopped_early
                .as_deref()
                .is_some_and(|s| s.contains("time bound")),
            "{out:?}"
        );
        assert!(out.steps.len() <= 5, "{}", out.steps.len());
        assert!(out.knee.is_some());
    }

    #[test]
    fn slo_text_parses_and_refuses_unknown_operations() {
        let t = parse_slo(
            "rest.insert_metrics: p(99) < 300ms, error_rate < 0.5%; rpc.match_memories: p(95) < 1s",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[2].operation.as_str(), t[2].value),
            ("rpc.match_memories", 1000.0)
        );
        assert!(
            parse_slo("nope.op: p(99) < 1s")
                .unwrap_err()
                .contains("unknown operation")
        );
        assert!(parse_slo("rest.insert_metrics p(99) < 1s").is_err());
        assert!(parse_slo("").is_err());
    }
}
