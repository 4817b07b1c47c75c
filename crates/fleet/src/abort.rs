//! `abort_on_fail`: the watched operations aggregated live across workers, and the once-a-second
//! evaluation that stops the run when one of those thresholds is crossed.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use fleetbench_metrics::aggregate::Counts;
use fleetbench_scenario::Plan;
use tokio::sync::watch;

use crate::Clock;

/// Operations' totals across workers as samples arrive, for what reads the run while it goes:
/// the `abort_on_fail` evaluation, and the live export. Only totals are kept (no time windows, so
/// its memory does not grow with the run's length), and the workers' lock guards only what came
/// since the last read: a reader takes that away in one swap and adds it to its totals outside the
/// workers' lock, so a reader never holds the workers up for longer than the swap.
#[derive(Debug)]
pub struct Live {
    /// The operations watched; `None`: every one (the run is exported live).
    operations: Option<Vec<String>>,
    /// What the workers added since the last read.
    fresh: Mutex<Totals>,
    /// Everything read so far (only readers take this lock).
    seen: Mutex<Totals>,
}

/// Operation → its counts.
pub type Totals = BTreeMap<String, Counts>;

impl Live {
    /// The live totals `plan` needs: every operation when it is exported live, else those its
    /// `abort_on_fail` thresholds watch; none when nothing reads the run live.
    pub(crate) fn for_plan(plan: &Plan) -> Option<Live> {
        let operations: Vec<String> = plan
            .thresholds
            .iter()
            .filter(|t| t.abort_on_fail)
            .map(|t| t.operation.clone())
            .collect();
        let live = |operations| Live {
            operations,
            fresh: Mutex::default(),
            seen: Mutex::default(),
        };
        if plan.prometheus_remote_write.is_some() {
            return Some(live(None));
        }
        (!operations.is_empty()).then(|| live(Some(operations)))
    }

    pub(crate) fn add(&self, s: &fleetbench_metrics::Sample) {
        let watched = self
            .operations
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| o == s.operation));
        if !watched {
            return;
        }
        let mut fresh = self.fresh.lock().expect("live totals");
        if !fresh.contains_key(s.operation) {
            fresh.insert(s.operation.to_string(), Counts::default());
        }
        fresh.get_mut(s.operation).expect("inserted above").add(s);
    }

    /// What has been measured so far, each operation's totals (held until the guard drops).
    pub fn totals(&self) -> MutexGuard<'_, Totals> {
        let mut seen = self.seen.lock().expect("live totals");
        let fresh = std::mem::take(&mut *self.fresh.lock().expect("live totals"));
        for (name, c) in fresh {
            match seen.get_mut(&name) {
                Some(mine) => mine.merge(&c),
                None => {
                    seen.insert(name, c);
                }
            }
        }
        seen
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
        let totals = live.totals();
        for t in plan
            .thresholds
            .iter()
            .filter(|t| t.abort_on_fail && elapsed >= t.delay_abort_eval)
        {
            let Some(op) = totals.get(&t.operation) else {
                continue;
            };
            let observed =
                fleetbench_metrics::summary::observe_counts(t, op, elapsed.as_secs_f64());
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
