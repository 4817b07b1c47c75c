//! A run against its baseline: what moved beyond the tolerances is flagged, jitter is not, and
//! the comparison shows in the run's page and survives a re-render.
//!
//! The slowest 2 % made 50 ms slower flags exactly p99, p99.9 and max; 0.6 ms of jitter, or a
//! 200 % rise on a sub-millisecond operation, is not a regression (unless the floor is lowered);
//! 0.5 % new errors flag the error rate; `compare.json` is kept; a missing baseline is refused.

mod common;

use std::time::SystemTime;

use fleetbench_metrics::{Aggregate, Outcome, Sample, Summary};
use fleetbench_report::LoadShape;
use fleetbench_report::compare::{Tolerance, compare};
use fleetbench_report::rundir::{compare_dirs, write};

/// 1,000 uploads with latencies `base + i µs` for i in 0..1000 (plus a `tail` on the slowest 2 %),
/// `errors` of them failed; one `auth.password` at 400 µs.
fn run(id: &str, base_us: u64, tail_us: u64, errors: u64) -> (Summary, Aggregate) {
    let mut agg = Aggregate::new(1_000_000);
    for i in 0..1_000u64 {
        let lat = base_us + i + if i >= 980 { tail_us } else { 0 };
        agg.add(&Sample {
            operation: "rest.insert_metrics",
            intended_us: i * 1_000,
            sent_us: i * 1_000,
            done_us: i * 1_000 + lat,
            outcome: if i < errors {
                Outcome::Error("http_503".into())
            } else {
                Outcome::Ok
            },
            rows: 1,
            bytes: 1,
        });
    }
    agg.add(&Sample {
        operation: "auth.password",
        intended_us: 0,
        sent_us: 0,
        done_us: 400,
        outcome: Outcome::Ok,
        rows: 0,
        bytes: 0,
    });
    let facts = common::facts(id, "cmp", 1.0);
    (Summary::new(&agg, facts, &[]), agg)
}

fn flagged(c: &fleetbench_report::compare::Comparison) -> Vec<(String, String)> {
    c.regressions()
        .map(|ch| (ch.operation.clone(), ch.metric.clone()))
        .collect()
}

#[test]
fn regressions_beyond_the_tolerances_are_flagged_and_jitter_is_not() {
    let (base, _) = run("base", 10_000, 0, 0);
    // The same run: nothing moves.
    assert!(flagged(&compare(&base, &base, Tolerance::default())).is_empty());
    // The slowest 2 % got 50 ms slower: p99, p99.9 and max regress; p50..p95 do not.
    let (tail, _) = run("tail", 10_000, 50_000, 0);
    let c = compare(&base, &tail, Tolerance::default());
    let want: Vec<(String, String)> = ["p99", "p999", "max"]
        .iter()
        .map(|m| ("rest.insert_metrics".to_string(), m.to_string()))
        .collect();
    assert_eq!(flagged(&c), want);
    let p99 = c
        .changes
        .iter()
        .find(|ch| ch.metric == "p99" && ch.operation == "rest.insert_metrics")
        .unwrap();
    assert!(
        p99.run > 55.0 && p99.baseline < 12.0 && p99.relative.unwrap() > 3.0,
        "{p99:?}"
    );
    // Everything 0.6 ms slower: 6 % and under 1 ms, jitter under both tolerances.
    let (jitter, _) = run("jitter", 10_600, 0, 0);
    assert!(flagged(&compare(&base, &jitter, Tolerance::default())).is_empty());
    // 20 % slower but a sub-millisecond operation: under the absolute floor.
    let (fast_base, _) = run("fb", 100, 0, 0);
    let (fast_run, _) = run("fr", 300, 0, 0);
    assert!(flagged(&compare(&fast_base, &fast_run, Tolerance::default())).is_empty());
    assert!(
        !flagged(&compare(
            &fast_base,
            &fast_run,
            Tolerance {
                min_delta_ms: 0.1,
                ..Tolerance::default()
            }
        ))
        .is_empty()
    );
    // 0.5 % of uploads now fail: the error rate regresses by 0.5 points.
    let (errs, _) = run("errs", 10_000, 0, 5);
    assert_eq!(
        flagged(&compare(&base, &errs, Tolerance::default())),
        vec![(
            "rest.insert_metrics".to_string(),
            "error_rate_pct".to_string()
        )]
    );
}

#[test]
fn the_comparison_is_kept_beside_the_run_and_shown_in_its_page() {
    let tmp = tempfile::tempdir().unwrap();
    let load = LoadShape {
        unit: "active agents".into(),
        points: vec![],
        gauges: vec![],
    };
    let (b, bagg) = run("base-run", 10_000, 0, 0);
    let (r, ragg) = run("new-run", 10_000, 50_000, 0);
    let (bd, rd) = (tmp.path().join("base"), tmp.path().join("run"));
    // The server: 100 transactions a second in the baseline, 250 in the run.
    let server = |per_s: f64| fleetbench_metrics::server::ServerSeries {
        source: "https://abc.supabase.co".into(),
        interval_s: 5.0,
        scrapes: (0..4)
            .map(|i| fleetbench_metrics::server::Scrape {
                t: f64::from(i) * 5.0,
                values: [(
                    "pg_stat_database_xact_commit_total".to_string(),
                    f64::from(i) * 5.0 * per_s,
                )]
                .into(),
            })
            .collect(),
        failed: 0,
        statements: Vec::new(),
        pooler_max_clients: None,
    };
    let (bs, rs) = (server(100.0), server(250.0));
    for (dir, s, a, sv) in [(&bd, &b, &bagg, &bs), (&rd, &r, &ragg, &rs)] {
        std::fs::create_dir_all(dir).unwrap();
        write(dir, "", s, a, &load, Some(sv), SystemTime::UNIX_EPOCH).unwrap();
    }
    let c = compare_dirs(&bd, &rd, Tolerance::default()).unwrap();
    assert_eq!(c.regressions().count(), 3);
    let mean = c
        .server
        .iter()
        .find(|x| x.figure == "Transactions: commits + rollbacks mean")
        .unwrap();
    assert_eq!((mean.baseline, mean.run), (100.0, 250.0));
    assert_eq!(mean.relative, Some(1.5));
    let page = std::fs::read_to_string(rd.join("index.html")).unwrap();
    assert!(
        page.contains("Compared with baseline base-run") && page.matches("REGRESSED").count() == 3
    );
    assert!(page.contains("The server, baseline and run") && page.contains("+150.0 %"));
    // A re-render keeps the comparison.
    fleetbench_report::rundir::rerender(&rd).unwrap();
    assert_eq!(
        std::fs::read_to_string(rd.join("index.html")).unwrap(),
        page
    );
    let err = compare_dirs(&tmp.path().join("missing"), &rd, Tolerance::default())
        .err()
        .unwrap();
    assert!(
        err.contains("missing") && err.contains("summary.json"),
        "{err}"
    );
}
