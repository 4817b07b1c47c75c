//! Fault survival against the local stack: a fleet on both ingestion paths with the realtime probe
//! beside it, while the gateway (the stack daemon), PgBouncer and Postgres are each killed and the
//! stack brought up again (`stack up` restarts a partly running stack on its ports). The run
//! reaches its end without a panic, counts the outages' errors by kind, recovers after each
//! (new rows reach the database), loses no row, and writes a complete run directory; the
//! dashboards' sockets, closed by the server, subscribe again.

use super::*;

/// Rows of the fleet's agents in `system_metrics`, each (device, time) once; `None` while the
/// database is away.
async fn agent_rows(db_url: &str) -> Option<i64> {
    let (db, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    let row = db
        .query_one(
            "select count(*) from (select distinct m.device_id, m.ts from public.system_metrics m \
             join auth.users u on u.id = m.user_id where u.email like 'agent-%') d",
            &[],
        )
        .await
        .ok()?;
    Some(row.get(0))
}

/// Polls `rows` until it passes `above` (the agents are writing again), for at most a minute.
async fn rows_pass(db_url: &str, above: i64, log: &Path) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(n) = agent_rows(db_url).await.filter(|n| *n > above) {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new rows past {above} within a minute; the run said:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_run_survives_the_gateway_pgbouncer_and_postgres_going_away() {
    let _instance = Instance::new("fleetbench-test-faults-");
    let dir = _instance.0.clone();
    ok(fleetbench(&dir, &["stack", "up"]));
    ok(fleetbench(&dir, &["migrate"]));
    // Outside the instance: `stack up` stops every process holding a file in it.
    let work = tempfile::tempdir().unwrap();
    let scenario = work.path().join("faults.toml");
    std::fs::write(
        &scenario,
        r#"name = "stack-faults"
[fleet]
agents = 20
[load]
grace = "2s"
[[load.stages]]
duration = "1s"
agents = 20
[[load.stages]]
duration = "40s"
agents = 20
[workload]
sample_interval = "100ms"
upload_interval = "500ms"
request_timeout = "2s"
ingest = { rest = 0.5, pooler = 0.5 }
[probes.realtime]
subscribers = 4
alerts = 70
interval = "500ms"
wait = "15s"
reconnect = false
[thresholds]
"rest.insert_metrics" = ["error_rate < 50%"]
"pooler.insert_metrics" = ["error_rate < 50%"]
[output]
cleanup = false
"#,
    )
    .unwrap();
    let out_dir = work.path().join("run");
    // Its output goes to files: a pipe nobody reads until the end would fill and stall the run.
    let (stdout_file, stderr_file) = (
        work.path().join("run.stdout"),
        work.path().join("run.stderr"),
    );
    let mut run = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .current_dir(workspace_root())
        .env("FLEETBENCH_HOME", workspace_root().join(".fleetbench"))
        .env("FLEETBENCH_STACK_DIR", &dir)
        .env_remove("SUPABASE_URL")
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let state = || fleetbench_stack::StackState::load(&dir.join("state.json")).unwrap();
    let db_url = state().direct_db_url();
    let mut rows = rows_pass(&db_url, 0, &stderr_file).await;
    let mut killed = Vec::new();
    for victim in ["gateway", "pgbouncer", "postgres"] {
        let s = state();
        let (pid, signal) = match victim {
            "gateway" => (
                s.daemon.as_ref().unwrap().pid.unwrap(),
                nix::sys::signal::Signal::SIGKILL,
            ),
            "pgbouncer" => (
                s.pooler_transaction.pid.unwrap(),
                nix::sys::signal::Signal::SIGKILL,
            ),
            // A fast shutdown: every backend's connection is closed under it.
            _ => (s.postgres.pid.unwrap(), nix::sys::signal::Signal::SIGINT),
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
        let gone = std::time::Instant::now() + Duration::from_secs(30);
        while process::is_alive(pid) {
            assert!(std::time::Instant::now() < gone, "{victim} did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        killed.push(victim);
        ok(fleetbench(&dir, &["stack", "up"]));
        // The agents write again: rows past those already there.
        rows = rows_pass(&db_url, rows, &stderr_file).await;
    }
    let status = tokio::task::spawn_blocking(move || run.wait().unwrap())
        .await
        .unwrap();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let summary = complete_run_dir(&out_dir, &format!("after {killed:?}"));
    // The exit code is the verdict's.
    let expected = if summary["verdict"] == "pass" { 0 } else { 99 };
    assert_eq!(status.code(), Some(expected), "{stderr}");
    // The outages show as errors, by kind, on both paths.
    for op in ["rest.insert_metrics", "pooler.insert_metrics"] {
        let kinds = summary["operations"][op]["errors_by_kind"]
            .as_object()
            .unwrap();
        let total: u64 = kinds.values().map(|v| v.as_u64().unwrap()).sum();
        assert!(total > 0, "{op}: no errors through three outages");
        assert_eq!(
            total, summary["operations"][op]["errors"],
            "{op}: {kinds:?}"
        );
    }
    // Nothing lost: every sampled row is in the database or still held by its agent; an upload
    // whose answer was lost with the gateway may have landed before its retry, so the database's
    // distinct rows lie between what was acknowledged and that plus what is still held.
    let (sampled, written, unsent, dropped, abandoned) = rows_account(&stderr);
    assert_eq!(
        (written + unsent, dropped, abandoned),
        (sampled, 0, 0),
        "{stderr}"
    );
    let in_db = agent_rows(&db_url).await.unwrap();
    assert!(
        (written..=written + unsent).contains(&in_db),
        "{in_db} distinct rows in the database; {stderr}"
    );
    // Every dashboard socket closed by the server came back.
    let probe = &summary["probes"]["realtime"];
    let rejoins = &summary["operations"]["realtime.rejoin"];
    assert!(rejoins["count"].as_u64().unwrap() >= 4, "{probe}");
    assert_eq!(rejoins["errors"], 0, "{probe}");
    assert!(probe.to_string().contains("the server closed"), "{probe}");
    ok(fleetbench(&dir, &["stack", "down"]));
}
