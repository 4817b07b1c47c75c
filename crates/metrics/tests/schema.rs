//! `summary.json` against its committed JSON Schema (`crates/metrics/summary.schema.json`): a
//! summary with every kind of content validates, and documents that break the contract do not.

use fleetbench_metrics::summary::{RunFacts, TargetFacts};
use fleetbench_metrics::{Aggregate, Outcome, Sample, Summary};

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/summary.schema.json"))
        .unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn summary() -> serde_json::Value {
    let mut agg = Aggregate::new(1_000_000);
    for i in 0..100u64 {
        agg.add(&Sample {
            operation: "rest.insert_metrics",
            intended_us: i * 10_000,
            sent_us: i * 10_000 + 100,
            done_us: i * 10_000 + 5_000,
            outcome: if i % 10 == 0 {
                Outcome::Error("http_503".into())
            } else {
                Outcome::Ok
            },
            rows: 10,
            bytes: 500,
        });
    }
    agg.add(&Sample {
        operation: "auth.password",
        intended_us: 0,
        sent_us: 0,
        done_us: 9_000,
        outcome: Outcome::Ok,
        rows: 0,
        bytes: 0,
    });
    agg.late = 3;
    agg.dropped = 2;
    let thresholds = vec![
        fleetbench_scenario::Threshold::parse("rest.insert_metrics", "p(99) < 250ms").unwrap(),
        // No samples for this one: observed is null and it fails.
        fleetbench_scenario::Threshold::parse("rest.select_metrics", "error_rate < 1%").unwrap(),
    ];
    let facts = RunFacts {
        run_id: "6f1c".into(),
        scenario: "schema".into(),
        started_at: "2026-11-26T07:00:00+00:00".into(),
        duration_s: 1.5,
        load_phase: Some(fleetbench_metrics::summary::LoadPhase {
            started_at: "2026-11-26T07:00:00.500+00:00".into(),
            duration_s: 1.0,
        }),
        target: TargetFacts {
            kind: "remote".into(),
            url: "https://abc.supabase.co".into(),
        },
        interrupted: true,
        aborted: None,
        environment: Default::default(),
    };
    let mut summary = Summary::new(&agg, facts, &thresholds);
    summary.probes.insert(
        "rag".into(),
        fleetbench_metrics::summary::ProbeReport {
            title: "RAG memory search".into(),
            verdict: "info".into(),
            figures: vec![fleetbench_metrics::summary::Figure {
                name: "recall@10".into(),
                value: 0.97,
                unit: "".into(),
                published: None,
            }],
            findings: vec![],
            claim: "pgvector serves RAG".into(),
            tables: vec![fleetbench_metrics::summary::Table {
                title: "ef_search sweep".into(),
                columns: vec!["ef_search".into(), "recall".into()],
                rows: vec![vec!["40".into(), "0.98".into()]],
            }],
            charts: vec![fleetbench_metrics::summary::ProbeChart {
                title: "latency".into(),
                x_label: "rows".into(),
                y_label: "ms".into(),
                series: vec![fleetbench_metrics::summary::ChartSeries {
                    name: "q".into(),
                    points: vec![(1.0, 2.0)],
                }],
            }],
        },
    );
    serde_json::to_value(summary).unwrap()
}

#[test]
fn summaries_validate_against_the_committed_schema() {
    let v = schema();
    let doc = summary();
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(doc["thresholds"][1]["observed"].is_null() && doc["verdict"] == "fail");
    // Rates are over the load phase (1 s), not the whole run (1.5 s).
    let op = &doc["operations"]["rest.insert_metrics"];
    assert_eq!(op["rate_per_s"].as_f64(), op["count"].as_f64());
}

#[test]
fn documents_that_break_the_contract_are_refused() {
    let v = schema();
    type Break = fn(&mut serde_json::Value);
    let breaks: [(&str, Break); 8] = [
        ("a probe with an unknown verdict", |d| {
            d["probes"]["rag"]["verdict"] = "maybe".into()
        }),
        ("a chart point that is not a pair", |d| {
            d["probes"]["rag"]["charts"][0]["series"][0]["points"][0] = serde_json::json!([1.0])
        }),
        ("a missing field", |d| {
            d.as_object_mut().unwrap().remove("operations");
        }),
        ("an unknown verdict", |d| d["verdict"] = "maybe".into()),
        ("another schema version", |d| d["schema_version"] = 2.into()),
        ("a percentile missing", |d| {
            d["operations"]["rest.insert_metrics"]["latency_ms"]
                .as_object_mut()
                .unwrap()
                .remove("p99");
        }),
        ("a negative count", |d| {
            d["operations"]["auth.password"]["count"] = (-1).into()
        }),
        ("an operation name that is not dotted", |d| {
            let op = d["operations"]["auth.password"].clone();
            d["operations"]["Password"] = op;
        }),
    ];
    for (what, break_it) in breaks {
        let mut doc = summary();
        break_it(&mut doc);
        assert!(!v.is_valid(&doc), "{what} was accepted");
    }
}
