//! `abort_on_fail`: the watched operations aggregated live across workers, and the once-a-second
//! evaluation that stops the run when one of those thresholds is crossed.

use std::sync::Arc;
use std::time::Duration;

use fleetbench_metrics::Aggregate;
use fleetbench_scenario::Plan;
use tokio::sync::watch;

use crate::Clock;

/// The operations that `abort_on_fail` thresholds watch, aggregated across workers as samples
/// arrive (a lock per sample of those operations only), for the evaluation during the run.
pub(crate) struct Live {
    operations: Vec<String>,
    agg: std::sync::Mutex<Aggregate>,
}

impl Live {
    /// The live aggregate of the operations `plan`'s `abort_on_fail` thresholds watch; none when
    /// no threshold aborts.
    pub(crate) fn for_plan(plan: &Plan, window_us: u64) -> Option<Live> {
        let operations: Vec<String> = plan
            .thresholds
            .iter()
            .filter(|t| t.abort_on_fail)
            .map(|t| t.operation.clone())
            .collect();
        (!operations.is_empty()).then(|| Live {
            operations,
            agg: std::sync::Mutex::new(Aggregate::new(window_us)),
        })
    }

    pub(crate) fn add(&self, s: &fleetbench_metrics::Sample) {
        if self.operations.iter().any(|o| o == s.operation) {
            self.agg.lock().expect("live aggregate").add(s);
        }
    }
}

/// Every second of the load phase, the `abort_on_fail` thresholds on what has been measured so
/// far; the first one crossed (after its `delay_abort_eval`) stops the run and is returned.
pub(crate) async fn watch_aborts(
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
