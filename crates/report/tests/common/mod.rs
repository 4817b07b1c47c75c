//! What the report tests share: a run's facts with only what a test varies.

use fleetbench_metrics::summary::{RunFacts, TargetFacts};

/// A local run started at 07:00 on 2026-11-26, not interrupted or aborted.
pub fn facts(run_id: &str, scenario: &str, duration_s: f64) -> RunFacts {
    RunFacts {
        run_id: run_id.into(),
        scenario: scenario.into(),
        started_at: "2026-11-26T07:00:00+00:00".into(),
        duration_s,
        load_phase: None,
        target: TargetFacts {
            kind: "local".into(),
            url: "http://127.0.0.1:1".into(),
        },
        interrupted: false,
        aborted: None,
        environment: Default::default(),
    }
}
