//! A run in-process, against the calibration sink on a free port: the library entry point the
//! binary calls, checked against the sink's own counters.
//!
//! Contents:
//! - a scenario run writes its whole run directory, and the summary's counts and rows are the
//!   sink's; a run with cleanup asks for it (no SQL access here, and it says so).
//! - a run stopped by the stop flag still writes its directory, marked interrupted.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use fleetbench_fleet::{Clock, Progress, TargetConfig};
use fleetbench_runner::{Cleanup, Endpoints, RunSpec};
use fleetbench_sink::{Model, Sink};

const SCENARIO: &str = r#"name = "runner"
[fleet]
agents = 4
seed = 1
[[load.stages]]
duration = "500ms"
agents = 4
[[load.stages]]
duration = "1500ms"
agents = 4
[workload]
sample_interval = "100ms"
upload_interval = "250ms"
ingest = { rest = 1.0 }
[output]
cleanup = true
[thresholds]
"rest.insert_metrics" = ["error_rate < 1%"]
"#;

async fn sink() -> (String, Arc<Sink>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sink = Sink::new(Model {
        latency: "1ms".parse().unwrap(),
        stall: None,
        capacity: None,
    });
    tokio::spawn(fleetbench_sink::serve(listener, sink.clone()));
    (url, sink)
}

fn spec(
    url: String,
    out: &std::path::Path,
    overrides: &[&str],
) -> RunSpec<fleetbench_scenario::Plan> {
    let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
    let (_, plan, resolved_toml) =
        fleetbench_scenario::load_str(SCENARIO, "runner.toml", &overrides).unwrap();
    RunSpec {
        plan,
        resolved_toml,
        endpoints: Endpoints {
            config: TargetConfig {
                kind: "remote".into(),
                api_url: url,
                anon_key: "k".into(),
                service_key: "k".into(),
                db_url: None,
                forward_ip: false,
                auth_limit: None,
            },
            admin_db_url: None,
            direct_db_url: None,
        },
        run_id: uuid::Uuid::new_v4().to_string(),
        clock: Clock::new(),
        out: out.to_path_buf(),
        environment: Default::default(),
        remote_write_auth: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_its_directory_and_counts_what_the_sink_saw() {
    let (url, sink) = sink().await;
    let dir = tempfile::tempdir().unwrap();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let said = std::sync::Mutex::new(Vec::<String>::new());
    let finished = fleetbench_runner::run(
        spec(url, dir.path(), &[]),
        Arc::new(Progress::default()),
        stop,
        &|line| said.lock().unwrap().push(line.to_string()),
    )
    .await
    .unwrap();
    for file in [
        "index.html",
        "summary.json",
        "histograms.hlog",
        "timeline.json",
        "junit.xml",
        "scenario.toml",
    ] {
        let len = std::fs::metadata(dir.path().join(file)).map_or(0, |m| m.len());
        assert!(len > 0, "{file} missing or empty");
    }
    let s = &finished.summary;
    assert_eq!(s.verdict, "pass", "{:?}", s.thresholds);
    let inserts = &s.operations["rest.insert_metrics"];
    assert_eq!(inserts.count, sink.inserts.load(Relaxed));
    assert_eq!(inserts.rows, sink.rows.load(Relaxed));
    assert!(inserts.count > 0);
    let fleet = finished.fleet.as_ref().unwrap();
    assert_eq!(fleet.agents, 4);
    assert_eq!(
        fleet.rows_written.values().sum::<u64>(),
        sink.rows.load(Relaxed)
    );
    // The written summary is the returned one.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(written["run_id"], s.run_id.as_str());
    assert_eq!(
        written["operations"]["rest.insert_metrics"]["count"],
        inserts.count
    );
    assert_eq!(finished.cleanup, Cleanup::NoSqlAccess);
    // The run said which Auth mode it is in (no forwarding: one shared bucket), that the sink has
    // no Metrics API (no Server section, no server.json), and that it cleans up.
    let said = said.lock().unwrap();
    assert!(
        said.len() == 3
            && said[0].starts_with("run: Auth:")
            && said[0].contains("this machine's address")
            && said[1].starts_with("run: server metrics: none (")
            && said[2] == "run: removing the run's users and rows",
        "{said:?}"
    );
    assert!(!dir.path().join("server.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_still_writes_its_directory() {
    let (url, sink) = sink().await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, stop) = tokio::sync::watch::channel(false);
    let spec = spec(url, dir.path(), &["load.stages.1.duration=\"60s\""]);
    let progress = Arc::new(Progress::default());
    let watched = progress.clone();
    // Stop once the sink has taken ten inserts: the run is in its load phase.
    let sink_seen = sink.clone();
    tokio::spawn(async move {
        let mut phase = watched.phase.subscribe();
        let _ = phase.wait_for(|p| *p >= 1).await;
        while sink_seen.inserts.load(Relaxed) < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = tx.send(true);
        // Held open, as the binary's signal handler holds it (waiting for a second signal).
        std::future::pending::<()>().await;
    });
    let finished = fleetbench_runner::run(spec, progress, stop, &|_| {})
        .await
        .unwrap();
    assert!(finished.summary.interrupted);
    assert!(finished.summary.duration_s < 30.0);
    assert_eq!(
        finished.summary.operations["rest.insert_metrics"].count,
        sink.inserts.load(Relaxed)
    );
    assert!(dir.path().join("index.html").exists());
}
