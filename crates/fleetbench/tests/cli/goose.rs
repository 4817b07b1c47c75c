//! `fleetbench goose --cross-check` against a sink with a known latency model: fleetbench's engine
//! and goose 0.19 count the same requests (and the sink saw both), and neither answers sooner than
//! the model allows (how close their percentiles come is the goose cross-check benchmark's figure:
//! it depends on the machine); and (called by the stack test) goose users on the local stack.

use super::*;

#[tokio::test]
async fn fleetbench_and_goose_agree_on_a_sink() {
    // Every answer waits 4..12 ms, uniformly: median 8 ms, p99 11.92 ms.
    let (url, sink) = sink("uniform:4ms..12ms").await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_fleetbench"))
                .args(args)
                .current_dir(workspace_root())
                .env("SUPABASE_URL", url)
                .env("SUPABASE_ANON_KEY", "anon")
                .env("SUPABASE_SERVICE_ROLE_KEY", "service")
                .env_remove("SUPABASE_DB_URL")
                .env_remove("SUPABASE_DB_SESSION_URL")
                .output()
                .unwrap()
        })
    };
    let out_dir = dir.path().join("xc");
    let out = run(vec![
        "goose".into(),
        "scenarios/goose-cross-check.toml".into(),
        "--cross-check".into(),
        // Counts are compared exactly; how close the two generators' percentiles come depends on
        // how busy the machine is, so that comparison is a benchmark's
        // (reports/benchmarks/2026-11-26-goose-cross-check), not this test's.
        "--min-delta".into(),
        "1h".into(),
        "--out".into(),
        out_dir.display().to_string(),
        "--".into(),
        "--quiet".into(),
    ])
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stderr}",
        out.status.code()
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("cross-check.json")).unwrap())
            .unwrap();
    let ops = doc["operations"].as_array().unwrap();
    let op = |name: &str| ops.iter().find(|o| o["operation"] == name).unwrap().clone();
    let uploads = op("rest.insert_metrics");
    assert_eq!(uploads["fleetbench_count"], 20 * 25, "{uploads}");
    assert_eq!(uploads["goose_count"], 20 * 25, "{uploads}");
    assert_eq!(uploads["percentiles_compared"], true);
    for name in [
        "auth.admin_create_user",
        "auth.password",
        "rest.create_device",
    ] {
        let o = op(name);
        assert_eq!(
            (o["fleetbench_count"].clone(), o["goose_count"].clone()),
            (20.into(), 20.into()),
            "{o}"
        );
    }
    assert!(ops.iter().all(|o| o["agree"] == true), "{doc:#}");
    // The sink's own account: both runs' inserts and requests, nothing else.
    assert_eq!(
        sink.inserts.load(std::sync::atomic::Ordering::Relaxed),
        2 * 500
    );
    assert_eq!(
        sink.requests.load(std::sync::atomic::Ordering::Relaxed),
        2 * (500 + 3 * 20)
    );
    // Against the model: no answer comes sooner than the service time (what a generator adds on
    // top depends on the machine: a benchmark's figure).
    for side in ["fleetbench", "goose"] {
        let p50 = uploads[format!("{side}_p50_ms")].as_f64().unwrap();
        let p99 = uploads[format!("{side}_p99_ms")].as_f64().unwrap();
        assert!(p50 >= 7.6, "{side} median {p50} ms, model 8 ms");
        assert!(p99 >= 11.5, "{side} p99 {p99} ms, model 11.92 ms");
    }

    // goose's own thresholds decide the exit code as fleetbench's do: a median under 1 ms cannot hold.
    let crossed = run(vec![
        "goose".into(),
        "scenarios/goose-cross-check.toml".into(),
        "--out".into(),
        dir.path().join("threshold").display().to_string(),
        "--".into(),
        "--quiet".into(),
        "--threshold".into(),
        "p50<1ms".into(),
    ])
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&crossed.stderr);
    assert_eq!(crossed.status.code(), Some(99), "{said}");
    assert!(said.contains("p50<1ms (observed"), "{said}");
    assert!(dir.path().join("threshold/goose-report.html").exists());

    // A workload that cannot be counted exactly is refused before anything is sent.
    let before = sink.requests.load(std::sync::atomic::Ordering::Relaxed);
    let refused = run(vec![
        "goose".into(),
        "scenarios/smoke.toml".into(),
        "--cross-check".into(),
        "--out".into(),
        dir.path().join("refused").display().to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("workload.iterations"));
    // Goose's own flag errors are invalid input too.
    let bad = run(vec![
        "goose".into(),
        "scenarios/goose-cross-check.toml".into(),
        "--".into(),
        "--users".into(),
        "many".into(),
    ])
    .await
    .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert_eq!(
        sink.requests.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
}

/// On the local stack (called by the stack test, which owns it): the same agents as goose users,
/// 6 users, 3 uploads each, half of them through the pooler (recorded as goose custom requests);
/// goose's reports written; the rows in the database are those the agents sampled, as goose
/// counted the uploads.
pub(super) async fn users_on_the_stack(dir: &Path, db: &tokio_postgres::Client) {
    let goose_dir = dir.join("goose");
    let goose = ok(fleetbench(
        dir,
        &[
            "goose",
            "scenarios/smoke.toml",
            "--out",
            goose_dir.to_str().unwrap(),
            "--set",
            "output.cleanup=false",
            "--set",
            "workload.ingest={rest=0.5,pooler=0.5}",
            "--",
            "--users",
            "6",
            "--iterations",
            "3",
            "--quiet",
        ],
    ));
    assert!(goose.contains("goose-report.html"), "{goose}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(goose_dir.join("goose-rows.json")).unwrap())
            .unwrap();
    let goose_run = rows["run_id"].as_str().unwrap().to_string();
    // smoke.toml: a batch is 1 s of samples every 100 ms.
    assert_eq!(rows["rows_written"], 6 * 3 * 10, "{rows}");
    assert_eq!(run_owns(db, goose_run.clone()).await, (6, 6 * 3 * 10));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(goose_dir.join("goose-report.json")).unwrap(),
    )
    .unwrap();
    let text = report.to_string();
    assert!(
        text.contains("rest.insert_metrics") && text.contains("pooler.insert_metrics"),
        "both ingestion paths in goose's report: {text:.2000}"
    );
    ok(fleetbench(dir, &["cleanup", "--run-id", &goose_run]));
    assert_eq!(run_owns(db, goose_run).await, (0, 0));
}
