//! `abort_on_fail`: the watched operations aggregated live across workers, and the once-a-second
//! evaluation that stops the run when one of those thresholds is crossed.

use std::sync::Arc;
use std::time::Duration;

use fleetbench_metrics::Aggregate;
use fleetbench_scenario::Plan;
use tokio::sync::watch;

use crate::Clock;

/// Operations aggregated across workers as samples arrive (a lock per sample of those operations
/// only), for what reads the run while it goes: the `abort_on_fail` evaluation, and the live export.
#[derive(Debug)]
pub struct Live {
    /// The operations watched; `None`: every one (the run is exported live).
    operations: Option<Vec<String>>,
    agg: std::sync::Mutex<Aggregate>,
}

impl Live {
    /// The live aggregate `plan` needs: every operation when it is exported live, else those its
    /// `abort_on_fail` thresholds watch; none when nothing reads the run live.
    pub(crate) fn for_plan(plan: &Plan, window_us: u64) -> Option<Live> {
        let operations: Vec<String> = plan
            .thresholds
            .iter()
            .filter(|t| t.abort_on_fail)
            .map(|t| t.operation.clone())
            .collect();
        let agg = std::sync::Mutex::new(Aggregate::new(window_us));
        if plan.prometheus_remote_write.is_some() {
            return Some(Live {
                operations: None,
                agg,
            });
        }
        (!operations.is_empty()).then_some(Live {
            operations: Some(operations),
            agg,
        })
    }

    pub(crate) fn add(&self, s: &fleetbench_metrics::Sample) {
        let watched = self
            .operations
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| o == s.operation));
        if watched {
            self.agg.lock().expect("live aggregate").add(s);
        }
    }

    /// What has been measured so far.
    pub fn snapshot(&self) -> Aggregate {
        self.agg.lock().expect("live aggregate").clone()
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
        let agg = live.snapshot();
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
