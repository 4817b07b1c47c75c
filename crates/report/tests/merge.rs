//! Shard runs merged: the merged run directory holds exactly what one run over all the shards'
//! samples would hold, and is itself a run directory that reads back and draws again.
//!
//! 30,000 long-tailed samples dealt into 3 shard run directories: every operation's intended-start
//! and service percentiles, counts, errors by kind and threshold results equal one aggregate over
//! all the samples; the planned load is the shards' sum; shards with different windows, or a
//! directory without saved data, are refused with the reason.

mod common;

use std::time::{Duration, SystemTime};

use fleetbench_metrics::{Aggregate, Outcome, Sample, Summary};
use fleetbench_report::LoadShape;
use fleetbench_report::rundir::{merge, read, rerender, write};

/// 30,000 samples with a long-tailed latency, some errors, over 30 one-second windows.
fn samples() -> Vec<Sample> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..30_000u64)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let intended = i * 1_000;
            let service = 200 + x % 5_000 + if x.is_multiple_of(97) { 250_000 } else { 0 };
            Sample {
                operation: if i % 5 == 0 {
                    "auth.refresh"
                } else {
                    "rest.insert_metrics"
                },
                intended_us: intended,
                sent_us: intended + x % 300,
                done_us: intended + x % 300 + service,
                outcome: if x.is_multiple_of(41) {
                    Outcome::Error("http_503".into())
                } else {
                    Outcome::Ok
                },
                rows: 10,
                bytes: 480,
            }
        })
        .collect()
}

fn summary(agg: &Aggregate, id: &str) -> Summary {
    let thresholds = vec![
        fleetbench_scenario::Threshold::parse("rest.insert_metrics", "p(99) < 100ms").unwrap(),
        fleetbench_scenario::Threshold::parse("rest.insert_metrics", "error_rate < 5%").unwrap(),
    ];
    let facts = common::facts(id, "shards", 30.0);
    Summary::new(agg, facts, &thresholds)
}

#[test]
fn merged_shards_equal_one_run_over_the_same_samples() {
    let all = samples();
    let mut one = Aggregate::new(1_000_000);
    let mut shards = [
        Aggregate::new(1_000_000),
        Aggregate::new(1_000_000),
        Aggregate::new(1_000_000),
    ];
    for (i, s) in all.iter().enumerate() {
        one.add(s);
        shards[i % 3].add(s);
    }
    let tmp = tempfile::tempdir().unwrap();
    let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let load = LoadShape {
        unit: "active agents".into(),
        points: vec![(0.0, 0.0), (1.0, 10.0), (30.0, 10.0)],
        gauges: vec![(0.0, 0.0, 0.0), (1.0, 10.0, 2.0), (2.0, 10.0, 3.0)],
    };
    // The Metrics API as the shards scraped it (each saw the same project).
    let server = fleetbench_metrics::server::ServerSeries {
        source: "https://abc.supabase.co".into(),
        interval_s: 5.0,
        scrapes: [0.0, 5.0, 10.0]
            .iter()
            .map(|t| fleetbench_metrics::server::Scrape {
                t: *t,
                values: [("pg_stat_database_xact_commit_total".to_string(), t * 100.0)].into(),
            })
            .collect(),
        failed: 0,
        statements: Vec::new(),
        pooler_max_clients: None,
    };
    let mut dirs = Vec::new();
    for (k, agg) in shards.iter().enumerate() {
        let dir = tmp.path().join(format!("shard-{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        write(
            &dir,
            "name = \"shards\"\n",
            &summary(agg, &format!("s{k}")),
            agg,
            &load,
            Some(&server),
            started,
        )
        .unwrap();
        dirs.push(dir);
    }
    let out = tmp.path().join("merged");
    let merged = merge(&dirs, &out).unwrap();
    let truth = summary(&one, "one");
    // Every operation's counts and every percentile, intended start and service time, exactly.
    assert_eq!(merged.operations.len(), truth.operations.len());
    for (name, want) in &truth.operations {
        let got = &merged.operations[name];
        assert_eq!(got.latency_ms, want.latency_ms, "{name} latency");
        assert_eq!(got.service_ms, want.service_ms, "{name} service");
        assert_eq!(
            (got.count, got.errors, got.rows, got.bytes),
            (want.count, want.errors, want.rows, want.bytes),
            "{name}"
        );
        assert_eq!(got.errors_by_kind, want.errors_by_kind, "{name}");
    }
    for (g, w) in merged.thresholds.iter().zip(&truth.thresholds) {
        assert_eq!((g.observed, g.pass), (w.observed, w.pass), "{}", w.expr);
    }
    assert_eq!(merged.run_id, "s0+s1+s2");
    // The merged directory is a run directory: it reads back to the one-run aggregate, window by
    // window, and draws the same page again; the planned load is the shards' sum.
    let back = read(&out).unwrap();
    assert_eq!(back.server.as_ref(), Some(&server));
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("<h2>Server</h2>") && page.contains("Transactions"));
    for (name, op) in &one.operations {
        let b = &back.agg.operations[name];
        assert_eq!(b.total.latency, op.total.latency);
        for (w, c) in op.windows() {
            let d = b.window(w).unwrap();
            assert_eq!(d.latency, c.latency, "{name} window {w}");
            assert_eq!(d.count, c.count);
        }
    }
    assert_eq!(
        back.load.points,
        vec![(0.0, 0.0), (1.0, 30.0), (30.0, 30.0)]
    );
    let page = std::fs::read(out.join("index.html")).unwrap();
    rerender(&out).unwrap();
    assert!(std::fs::read(out.join("index.html")).unwrap() == page);
}

#[test]
fn shards_that_cannot_merge_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let load = LoadShape {
        unit: "active agents".into(),
        points: vec![],
        gauges: vec![],
    };
    let mut dirs = Vec::new();
    for (k, window) in [1_000_000u64, 5_000_000].iter().enumerate() {
        let mut agg = Aggregate::new(*window);
        agg.add(&samples()[k]);
        let dir = tmp.path().join(format!("s{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        write(
            &dir,
            "",
            &summary(&agg, "x"),
            &agg,
            &load,
            None,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        dirs.push(dir);
    }
    let err = merge(&dirs, &tmp.path().join("m")).err().unwrap();
    assert!(err.contains("s1") && err.contains("output.window"), "{err}");
    let err = merge(&[tmp.path().join("nothing-here")], &tmp.path().join("m"))
        .err()
        .unwrap();
    assert!(err.contains("summary.json"), "{err}");
}

/// Shards of one run where each failed on its own (an interruption, a failed probe, a delivery
/// short of the plan) and every threshold holds: the merged run fails, naming each shard and why,
/// in summary.json, JUnit and summary.md; a shard count of four billion is refused at once.
#[test]
fn a_shard_that_failed_on_its_own_fails_the_merged_run() {
    let tmp = tempfile::tempdir().unwrap();
    let load = LoadShape {
        unit: "active agents".into(),
        points: vec![],
        gauges: vec![],
    };
    let all = samples();
    let mut dirs = Vec::new();
    for k in 0..3u32 {
        let mut agg = Aggregate::new(1_000_000);
        all.iter()
            .skip(k as usize)
            .step_by(3)
            .for_each(|s| agg.add(s));
        let mut s = summary(&agg, "run");
        s.thresholds.clear();
        s.shard = Some(fleetbench_metrics::summary::Shard { index: k, count: 3 });
        match k {
            0 => {
                let probe: fleetbench_metrics::summary::ProbeReport =
                    serde_json::from_value(serde_json::json!({
                        "title": "Row-level security", "claim": "each user sees only their own data",
                        "verdict": "fail", "figures": [], "findings": ["a leak"]
                    }))
                    .unwrap();
                s.probes.insert("rls".into(), probe);
            }
            1 => s.interrupted = true,
            _ => {}
        }
        let dir = tmp.path().join(format!("shard-{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, "", &s, &agg, &load, None, SystemTime::UNIX_EPOCH).unwrap();
        dirs.push(dir);
    }
    let out = tmp.path().join("merged");
    let merged = merge(&dirs, &out).unwrap();
    assert_eq!(merged.verdict, "fail");
    assert_eq!(merged.shards_failed.len(), 2, "{:?}", merged.shards_failed);
    assert!(
        merged.shards_failed[0].starts_with("shard 0/3")
            && merged.shards_failed[0].contains("probe rls failed")
    );
    assert!(
        merged.shards_failed[1].starts_with("shard 1/3")
            && merged.shards_failed[1].contains("signal")
    );
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("type=\"shard\""), "{junit}");
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("FAIL") && md.contains("**Shard failed:** shard 1/3"),
        "{md}"
    );
    let back: Summary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(back.shards_failed, merged.shards_failed);
    // Written whole under temporary names and renamed, summary.json last: none is left over, and
    // no file was put in place after the summary.
    let modified = |name: &str| {
        std::fs::metadata(out.join(name))
            .unwrap()
            .modified()
            .unwrap()
    };
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "{name} left over");
        assert!(
            modified(&name) <= modified("summary.json"),
            "{name} after summary.json"
        );
    }
    // A crafted shard count: refused with the reason, in no time and no memory.
    let path = dirs[0].join("summary.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"count\": 3", "\"count\": 4000000000")).unwrap();
    let err = merge(&dirs, &out).err().unwrap();
    assert!(err.contains("4000000000 shards"), "{err}");
}
