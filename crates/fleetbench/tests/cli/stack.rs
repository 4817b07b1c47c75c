//! The stack end to end through the binary (see the crate doc).

use super::*;

#[tokio::test]
async fn stack_up_migrate_schedule_env_down() {
    let instance = Instance::new("fleetbench-test-cli-");
    let dir = instance.0.clone();

    let status = ok(fleetbench(&dir, &["stack", "up"]));
    for service in [
        "postgres",
        "pgbouncer (transaction mode)",
        "pgbouncer (session mode)",
        "stack daemon",
        "edge function anomaly-webhook",
    ] {
        let line = status
            .lines()
            .find(|l| l.contains(service))
            .unwrap_or_else(|| panic!("{service} missing:\n{status}"));
        assert!(line.ends_with("running"), "{line}");
    }

    let env = ok(fleetbench(&dir, &["stack", "env"]));
    let var = |name: &str| -> String {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}='")))
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{name} missing from stack env:\n{env}"))
            .to_string()
    };
    for name in [
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_DB_URL",
        "SUPABASE_DB_SESSION_URL",
        "SUPABASE_JWT_SECRET",
    ] {
        assert!(!var(name).is_empty());
    }

    // The gateway behind SUPABASE_URL speaks Auth and wants an apikey, as Kong does.
    let http = reqwest::Client::new();
    let settings = http
        .get(format!("{}/auth/v1/settings", var("SUPABASE_URL")))
        .header("apikey", var("SUPABASE_ANON_KEY"))
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), 200);
    let no_key = http
        .get(format!("{}/auth/v1/settings", var("SUPABASE_URL")))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);

    // Listen before migrating, so the scheduler's first run cannot be missed.
    let (client, mut conn) =
        tokio_postgres::connect(&var("SUPABASE_DB_SESSION_URL"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut runs) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client
        .batch_execute("listen fleetbench_schedule_runs")
        .await
        .unwrap();

    let first = ok(fleetbench(&dir, &["migrate"]));
    assert!(
        first.contains("5 applied now") || first.contains("applied now, 0 already"),
        "{first}"
    );
    let second = ok(fleetbench(&dir, &["migrate"]));
    assert!(second.contains("0 applied now"), "{second}");

    let job = tokio::time::timeout(Duration::from_secs(30), runs.recv())
        .await
        .expect("the stack daemon ran no scheduled job within 30 s of migrate")
        .unwrap();
    assert_eq!(job, "system-metrics-partitions");
    let row = client
        .query_one("select status from fleetbench.schedule_runs where name = 'system-metrics-partitions' order by id desc limit 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");

    // The daemon's Data API sees the tables the migration made after it started, and reaches them
    // as `authenticator` through the transaction pooler.
    let devices = http
        .get(format!("{}/rest/v1/devices?select=id", var("SUPABASE_URL")))
        .header("apikey", var("SUPABASE_SERVICE_ROLE_KEY"))
        .header(
            "Authorization",
            format!("Bearer {}", var("SUPABASE_SERVICE_ROLE_KEY")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(devices.status(), 200);
    assert_eq!(devices.text().await.unwrap(), "[]");
    let through_pooler = client
        .query_one(
            "select count(*) from pg_stat_activity where usename = 'authenticator'",
            &[],
        )
        .await
        .unwrap();
    assert!(through_pooler.get::<_, i64>(0) >= 1);
    drop(client);

    // Edge Functions behind the same URL: verify_jwt first, then the Deno process answers.
    let function = format!("{}/functions/v1/anomaly-webhook", var("SUPABASE_URL"));
    let payload = serde_json::json!({ "type": "UPDATE", "table": "alerts", "schema": "public", "record": {}, "old_record": {} });
    let unsigned = http.post(&function).json(&payload).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let signed = http
        .post(&function)
        .bearer_auth(var("SUPABASE_ANON_KEY"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    assert_eq!(
        signed.json::<serde_json::Value>().await.unwrap()["forwarded"],
        false
    );

    // A short smoke fleet through the binary: exit 0, the run directory, the report path printed,
    // and no secret in any file it wrote.
    let out_dir = dir.join("run-smoke");
    let short = [
        "--set",
        "fleet.agents=6",
        "--set",
        "load.stages.0.agents=6",
        "--set",
        "load.stages.1.agents=6",
        "--set",
        "load.stages.1.duration=\"2s\"",
    ];
    let mut args = vec![
        "run",
        "scenarios/smoke.toml",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend(short);
    // Two probes beside the fleet: alerts through the stack's webhook into the daemon's receiver,
    // and the RLS attempts.
    args.extend([
        "--set",
        "probes.webhook.alerts=5",
        "--set",
        "probes.webhook.interval=\"100ms\"",
        "--set",
        "probes.rls={}",
        "--set",
        "workload.collectors=1",
    ]);
    // Live into a real Prometheus as well.
    let prom = super::export::prometheus().await;
    let write_url = format!("{}/api/v1/write", prom.url);
    args.extend(["--prometheus-remote-write", &write_url]);
    // Another team's SQL on the same database through the run (a shared staging project): the
    // statements the run publishes are its own roles' only.
    let other_team = OtherTeam::start(&var("SUPABASE_DB_SESSION_URL"));
    let printed = ok(fleetbench(&dir, &args));
    let other_queries = other_team.stop();
    assert!(
        other_queries >= 3,
        "the other team ran {other_queries} queries"
    );
    assert_eq!(
        printed.trim(),
        out_dir.join("index.html").display().to_string()
    );
    let server: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("server.json")).unwrap())
            .unwrap();
    let statements: Vec<&str> = server["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["query"].as_str().unwrap())
        .collect();
    assert!(
        statements.iter().any(|q| q.contains("system_metrics")),
        "{statements:?}"
    );
    assert!(
        !statements.iter().any(|q| q.contains("other_team_ledger")),
        "{statements:?}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["verdict"], "pass", "{summary}");
    assert_eq!(summary["target"]["kind"], "local");
    server_section(&out_dir, &summary);
    super::export::exported(&prom, &summary).await;
    // The run's facts name the build and the machine (checked against /proc and git).
    let env = &summary["environment"];
    let head = head_commit();
    assert!(
        env["git_commit"].as_str().unwrap().starts_with(&head),
        "{env}"
    );
    assert_eq!(
        env["cpus"].as_u64().unwrap() as usize,
        std::thread::available_parallelism().unwrap().get()
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let reported = env["memory_bytes"].as_u64().unwrap();
    assert!(
        reported.abs_diff(total_kib * 1024) < total_kib * 1024 / 100,
        "{reported} vs {total_kib} KiB"
    );
    // The real summary.json keeps the committed schema.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("crates/metrics/summary.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let errors: Vec<String> = jsonschema::validator_for(&schema)
        .unwrap()
        .iter_errors(&summary)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The probes' reports and operations are in the summary and the page.
    for probe in ["webhook", "rls"] {
        assert_eq!(summary["probes"][probe]["verdict"], "pass", "{summary}");
    }
    let hooks = &summary["operations"]["functions.webhook_delivery"];
    assert_eq!(
        (hooks["count"].as_u64(), hooks["errors"].as_u64()),
        (Some(5), Some(0)),
        "{summary}"
    );
    // The real collector beside the fleet is its own group.
    let collector = &summary["operations"]["collector.insert_metrics"];
    assert!(collector["count"].as_u64().unwrap_or(0) >= 1, "{summary}");
    assert_eq!(collector["errors"], 0);
    let page = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(page.contains("<h2>Probes</h2>") && page.contains("attempts by user A on user B"));
    // `fleetbench probe` alone: its own run directory; bad settings are invalid input.
    let probe_dir = dir.join("run-probe");
    let printed = ok(fleetbench(
        &dir,
        &["probe", "rls", "--out", probe_dir.to_str().unwrap()],
    ));
    assert_eq!(
        printed.trim(),
        probe_dir.join("index.html").display().to_string()
    );
    let alone: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(probe_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(alone["probes"]["rls"]["verdict"], "pass", "{alone}");
    assert_eq!(alone["verdict"], "pass");
    // Two shard processes of one run (shared run id and start), merged, against one process of the
    // same scenario: the same users, the same rows, the same uploads per operation.
    let shard_run = uuid::Uuid::new_v4().to_string();
    let start_at = (chrono::Utc::now() + chrono::Duration::seconds(10)).to_rfc3339();
    let keep = ["--set", "output.cleanup=false"];
    let shard_dirs: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("shard-{i}"))).collect();
    let shards: Vec<_> = (0..2)
        .map(|i| {
            let (dir, out, run, start) = (
                dir.clone(),
                shard_dirs[i].clone(),
                shard_run.clone(),
                start_at.clone(),
            );
            std::thread::spawn(move || {
                let shard = format!("{i}/2");
                let mut args = vec![
                    "run",
                    "scenarios/smoke.toml",
                    "--shard",
                    &shard,
                    "--run-id",
                    &run,
                    "--start-at",
                    &start,
                    "--out",
                    out.to_str().unwrap(),
                ];
                args.extend(short);
                args.extend(keep);
                fleetbench(&dir, &args)
            })
        })
        .collect();
    // A shard's own thresholds may lack samples (no pooler agent in it): they are judged merged.
    for s in shards {
        let out = s.join().unwrap();
        assert!(
            matches!(out.status.code(), Some(0) | Some(99)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let single_dir = dir.join("single");
    let mut args = vec![
        "run",
        "scenarios/smoke.toml",
        "--out",
        single_dir.to_str().unwrap(),
    ];
    args.extend(short);
    args.extend(keep);
    ok(fleetbench(&dir, &args));
    let merged_dir = dir.join("merged");
    let mut args = vec!["merge"];
    let shard_paths: Vec<String> = shard_dirs.iter().map(|d| d.display().to_string()).collect();
    args.extend(shard_paths.iter().map(String::as_str));
    args.extend(["--out", merged_dir.to_str().unwrap()]);
    ok(fleetbench(&dir, &args));
    let read = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap()
    };
    let (merged, single) = (read(&merged_dir), read(&single_dir));
    assert_eq!(merged["run_id"], shard_run.as_str());
    for op in [
        "auth.admin_create_user",
        "rest.insert_metrics",
        "pooler.insert_metrics",
    ] {
        for key in ["count", "rows"] {
            assert_eq!(
                merged["operations"][op][key], single["operations"][op][key],
                "{op} {key}: merged {merged} vs single {single}"
            );
        }
    }
    let state = fleetbench_stack::StackState::load(&dir.join("state.json")).unwrap();
    let (db, conn) = tokio_postgres::connect(&state.direct_db_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let owned = |run: String| run_owns(&db, run);
    let single_run = single["run_id"].as_str().unwrap().to_string();
    let (ours, theirs) = (
        owned(shard_run.clone()).await,
        owned(single_run.clone()).await,
    );
    assert_eq!(
        ours, theirs,
        "users and rows: sharded {ours:?} vs one process {theirs:?}"
    );
    assert_eq!(ours.0, 6);
    let written = merged["operations"]["rest.insert_metrics"]["rows"]
        .as_i64()
        .unwrap()
        + merged["operations"]["pooler.insert_metrics"]["rows"]
            .as_i64()
            .unwrap_or(0);
    assert_eq!(ours.1, written);
    // Shards of another scenario, or started apart, are refused with the reason.
    let mut other = read(&shard_dirs[1]);
    other["scenario"] = "steady".into();
    std::fs::write(shard_dirs[1].join("summary.json"), other.to_string()).unwrap();
    let refused = fleetbench(&dir, &args);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only shards of one scenario merge"));
    // Cleanup removes exactly one run: zero of its users and rows left, the other run untouched.
    ok(fleetbench(&dir, &["cleanup", "--run-id", &shard_run]));
    assert_eq!(owned(shard_run.clone()).await, (0, 0));
    assert_eq!(owned(single_run.clone()).await, theirs);
    ok(fleetbench(&dir, &["cleanup", "--run-id", &single_run]));
    assert_eq!(owned(single_run.clone()).await, (0, 0));

    #[cfg(feature = "goose")]
    goose::users_on_the_stack(&dir, &db).await;

    // `capacity` on the local stack: bounded in time, every step's resources seen, a binding limit named.
    let cap_dir = dir.join("capacity-local");
    let t0 = std::time::Instant::now();
    let cap = fleetbench(
        &dir,
        &[
            "capacity",
            "scenarios/smoke.toml",
            "--slo",
            "rest.insert_metrics: p(99) < 2s, error_rate < 1%",
            "--start",
            "4",
            "--max",
            "16",
            "--warmup",
            "1s",
            "--hold",
            "2s",
            "--time-limit",
            "20s",
            "--out",
            cap_dir.to_str().unwrap(),
        ],
    );
    let took = t0.elapsed();
    assert!(
        matches!(cap.status.code(), Some(0) | Some(99)),
        "{}",
        String::from_utf8_lossy(&cap.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cap_dir.join("capacity.json")).unwrap())
            .unwrap();
    // The bound plus one step in progress when it passed (a step: provisioning, 3 s, cleanup).
    assert!(took < Duration::from_secs(20 + 30), "{took:?}");
    assert!(!report["binding"].as_str().unwrap().is_empty(), "{report}");
    for step in report["outcome"]["steps"].as_array().unwrap() {
        let names: Vec<&str> = step["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_str().unwrap())
            .collect();
        // The local stack's Metrics API gives the target's side (the pooler as Supavisor's
        // clients, as hosted shows them); the processes' CPU beside it.
        for want in [
            "machine CPU % (load generator and local stack)",
            "local stack CPU % (of all cores)",
            "database connections",
            "pooler clients (transaction mode)",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }
    // `collect --push`: this machine as its own user, its rows in system_metrics.
    let device = ok(fleetbench(
        &dir,
        &[
            "collect",
            "--push",
            "--interval",
            "200ms",
            "--duration",
            "2s",
            "--upload-interval",
            "500ms",
        ],
    ));
    let device: uuid::Uuid = device.trim().parse().unwrap();
    let state = fleetbench_stack::StackState::load(&dir.join("state.json")).unwrap();
    let (db, conn) = tokio_postgres::connect(&state.direct_db_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let pushed: i64 = db
        .query_one(
            "select count(*) from public.system_metrics where device_id = $1",
            &[&device],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (8..=11).contains(&pushed),
        "{pushed} rows for 2 s at 200 ms"
    );
    let bad = fleetbench(&dir, &["probe", "rag", "--set", "k=0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("probes.rag.k must be at least 1"));
    // `fleetbench report` re-renders the very same page from the saved data alone.
    let page = std::fs::read(out_dir.join("index.html")).unwrap();
    std::fs::remove_file(out_dir.join("index.html")).unwrap();
    let printed = ok(fleetbench(&dir, &["report", out_dir.to_str().unwrap()]));
    assert_eq!(
        printed.trim(),
        out_dir.join("index.html").display().to_string()
    );
    assert!(
        std::fs::read(out_dir.join("index.html")).unwrap() == page,
        "the re-rendered page differs"
    );
    let empty = dir.join("not-a-run");
    std::fs::create_dir_all(&empty).unwrap();
    let out = fleetbench(&dir, &["report", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("summary.json"));
    let rows = summary["operations"]["rest.insert_metrics"]["rows"]
        .as_u64()
        .unwrap()
        + summary["operations"]["pooler.insert_metrics"]["rows"]
            .as_u64()
            .unwrap_or(0);
    assert!(rows > 0, "{summary}");
    let state = fleetbench_stack::StackState::load(&dir.join("state.json")).unwrap();
    // The agents' and probe users' passwords, as the run derived them from its service key.
    // (keyed by the service-role key, or by the secret key when the stack forwards addresses).
    let run_id = summary["run_id"].as_str().unwrap();
    let key = match (&state.secrets.opaque, state.ip_forwarding) {
        (Some(k), true) => &k.secret,
        _ => &state.secrets.service_role_key,
    };
    let agent_password = fleetbench_fleet::agent::credentials(key, run_id, 0).1;
    let probe_password = fleetbench_fleet::agent::password(key, run_id, "probe-rls-0");
    let secrets = [
        &state.secrets.anon_key,
        &state.secrets.service_role_key,
        &state.secrets.jwt_secret,
        &state.secrets.postgres_password,
        &state.secrets.authenticator_password,
        &agent_password,
        &probe_password,
    ];
    // Every file of the run directory, whatever it is named.
    let files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() >= 6, "{files:?}");
    for file in [
        "summary.json",
        "timeline.json",
        "index.html",
        "junit.xml",
        "scenario.toml",
        "histograms.hlog",
    ] {
        assert!(
            files.iter().any(|f| f == file),
            "{file} missing from {files:?}"
        );
    }
    for file in &files {
        let text =
            String::from_utf8_lossy(&std::fs::read(out_dir.join(file)).unwrap()).into_owned();
        assert!(!text.is_empty(), "{file} is empty");
        for s in secrets {
            assert!(!text.contains(s.as_str()), "a secret leaked into {file}");
        }
    }
    // `compare`: the run against itself has no regression; against a baseline whose insert p99
    // was a microsecond, p99 regresses and the exit code is 3.
    ok(fleetbench(
        &dir,
        &[
            "compare",
            out_dir.to_str().unwrap(),
            out_dir.to_str().unwrap(),
        ],
    ));
    let base_dir = dir.join("baseline");
    std::fs::create_dir_all(&base_dir).unwrap();
    let mut base = summary.clone();
    base["operations"]["rest.insert_metrics"]["latency_ms"]["p99"] = 0.001.into();
    std::fs::write(base_dir.join("summary.json"), base.to_string()).unwrap();
    let out = fleetbench(
        &dir,
        &[
            "compare",
            base_dir.to_str().unwrap(),
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("REGRESSED rest.insert_metrics p99"));
    assert!(
        std::fs::read_to_string(out_dir.join("index.html"))
            .unwrap()
            .contains("Compared with baseline")
    );
    // A threshold that cannot hold: exit 99 and a failed JUnit case; a broken scenario: exit 2.
    let strict = dir.join("strict.toml");
    let smoke = std::fs::read_to_string(workspace_root().join("scenarios/smoke.toml")).unwrap();
    std::fs::write(
        &strict,
        smoke.replace(
            "[\"p(99) < 2s\", \"error_rate < 1%\"]",
            "[\"p(50) < 0.001ms\"]",
        ),
    )
    .unwrap();
    let mut args = vec![
        "run",
        strict.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend(short);
    let crossed = fleetbench(&dir, &args);
    assert_eq!(
        crossed.status.code(),
        Some(99),
        "{}",
        String::from_utf8_lossy(&crossed.stderr)
    );
    assert!(
        std::fs::read_to_string(out_dir.join("junit.xml"))
            .unwrap()
            .contains("<failure")
    );
    std::fs::write(
        &strict,
        smoke.replace("agents = 20\nseed", "agents = \"many\"\nseed"),
    )
    .unwrap();
    let invalid = fleetbench(&dir, &["run", strict.to_str().unwrap()]);
    assert_eq!(invalid.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(stderr.contains("strict.toml:8:10"), "{stderr}");

    let gateway = var("SUPABASE_URL");
    let pids = fleetbench_stack::StackState::load(&dir.join("state.json"))
        .unwrap()
        .pids();
    let down = ok(fleetbench(&dir, &["stack", "down"]));
    assert!(down.contains("stopped postgres"), "{down}");
    assert!(!down.contains("killed"), "{down}");
    assert!(
        pids.iter().all(|&p| !process::is_alive(p)),
        "pids alive after down: {pids:?}"
    );
    assert!(process::pids_using(&dir).is_empty());
    let port = gateway.rsplit(':').next().unwrap();
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "the gateway still answers"
    );
    drop(instance);
}

/// Queries of a role the run never uses, on a thread of their own, until stopped: each sleeps
/// 50 ms, so that unfiltered they would be among the statements that took the most time.
struct OtherTeam {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl OtherTeam {
    fn start(db_url: &str) -> OtherTeam {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (url, flag) = (db_url.to_string(), stop.clone());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                db.batch_execute(
                    "do $$ begin create role other_team; exception when duplicate_object then null; end $$; \
                     create table if not exists public.other_team_ledger (id int); \
                     grant select on public.other_team_ledger to other_team; set role other_team",
                )
                .await
                .unwrap();
                ready_tx.send(()).unwrap();
                let mut n = 0;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    db.simple_query("select pg_sleep(0.05), count(*) from public.other_team_ledger")
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        });
        ready.recv().expect("the other team's session started");
        OtherTeam { stop, thread }
    }

    /// Stops the queries: how many ran.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
