//! Staging safety: allowlist, hard caps, the run directory, the Auth preflight.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_targets_need_an_allowlist_and_every_run_has_hard_caps() {
    // A "remote" project on another loopback address, so nothing leaves the machine.
    let (url, sink) = sink_on("127.0.0.2", "1ms", None, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |extra_env: &[(&str, &str)], extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetbench"));
        c.args(["run", "scenarios/smoke.toml"]);
        if !extra.contains(&"--out") {
            c.args(["--out", dir.path().join("r").to_str().unwrap()]);
        }
        c.args([
            "--set",
            "fleet.agents=4",
            "--set",
            "load.stages.0.agents=4",
            "--set",
            "load.stages.1.agents=4",
        ])
        .args([
            "--set",
            "load.stages.1.duration=\"1s\"",
            "--set",
            "workload.ingest.pooler=0",
            "--set",
            "thresholds={}",
        ])
        .args(extra)
        .current_dir(workspace_root())
        .env("SUPABASE_URL", &url)
        .env("SUPABASE_ANON_KEY", "x")
        .env("SUPABASE_SERVICE_ROLE_KEY", "x")
        .env_remove("FLEETBENCH_ALLOW_HOSTS");
        for (k, v) in extra_env {
            c.env(k, v);
        }
        // The sink runs on this test's runtime: the child is waited for off it.
        tokio::task::block_in_place(|| c.output().unwrap())
    };
    let sent = || sink.requests.load(std::sync::atomic::Ordering::Relaxed);
    // On no allowlist: refused, exit 2, not one request.
    let out = run(&[], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.2, which no allowlist names"));
    assert_eq!(sent(), 0);
    // The allowlist judges the host the clients connect to: text after `#@` names another host
    // but the request would go to the sink's. A database URL is judged too.
    let bypass = format!("{url}#@127.0.0.3");
    for (env, refused) in [
        (
            vec![
                ("SUPABASE_URL", bypass.as_str()),
                ("FLEETBENCH_ALLOW_HOSTS", "127.0.0.3"),
            ],
            "SUPABASE_URL points at 127.0.0.2",
        ),
        (
            vec![
                ("FLEETBENCH_ALLOW_HOSTS", "127.0.0.2"),
                (
                    "SUPABASE_DB_URL",
                    "postgresql://u:p@127.0.0.4:5432/postgres",
                ),
            ],
            "SUPABASE_DB_URL points at 127.0.0.4",
        ),
    ] {
        let out = run(&env, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(refused), "{env:?}: {stderr}");
        assert_eq!(sent(), 0);
    }
    // A run directory that cannot be written (under a file): found before anything is sent.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = run(
        &[("FLEETBENCH_ALLOW_HOSTS", "127.0.0.2")],
        &["--out", file.join("run").to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be written"));
    assert_eq!(sent(), 0);
    // Over a hard cap (agents, or the load's duration): refused the same way.
    let out = run(
        &[("FLEETBENCH_ALLOW_HOSTS", "127.0.0.2")],
        &["--set", "fleet.agents=300000"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("300000 agents (cap 200000"));
    let out = run(
        &[
            ("FLEETBENCH_ALLOW_HOSTS", "127.0.0.2"),
            ("FLEETBENCH_MAX_DURATION", "2s"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLEETBENCH_MAX_DURATION"));
    assert_eq!(sent(), 0);
    // Allowed by the environment, by the scenario, or by the long flag (with a warning).
    for (env, extra) in [
        (
            vec![("FLEETBENCH_ALLOW_HOSTS", "staging.example, 127.0.0.2")],
            vec![],
        ),
        (vec![], vec!["--set", "target.allow_hosts=[\"127.0.0.2\"]"]),
        (
            vec![],
            vec!["--i-accept-this-target-is-not-on-the-allowlist"],
        ),
    ] {
        let before = sent();
        let out = run(&env, &extra);
        assert!(
            out.status.success(),
            "{env:?} {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(sent() > before);
    }
    assert!(
        String::from_utf8_lossy(
            &run(&[], &["--i-accept-this-target-is-not-on-the-allowlist"]).stderr
        )
        .contains("on no allowlist")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_one_located_message_exit_2_and_nothing_sent() {
    let (url, sink) = sink("1ms").await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("r").display().to_string();
    let good_db = format!("postgresql://postgres:sekrit-pw@{}/postgres", &url[7..]);
    let base_env: Vec<(&str, String)> = vec![
        ("SUPABASE_URL", url.clone()),
        ("SUPABASE_ANON_KEY", "anon".into()),
        ("SUPABASE_SERVICE_ROLE_KEY", "service".into()),
        ("SUPABASE_DB_URL", good_db),
    ];
    let long_run_id = "a".repeat(65);
    // (what, environment changes, arguments after the scenario, what the message must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "URL without scheme",
            vec![("SUPABASE_URL", "demo.supabase.co")],
            vec![],
            "SUPABASE_URL (://demo.supabase.co) is not an http(s) URL",
        ),
        (
            "URL of another scheme",
            vec![("SUPABASE_URL", "ftp://127.0.0.1/")],
            vec![],
            "is not an http(s) URL",
        ),
        (
            "URL with a space",
            vec![("SUPABASE_URL", "http://exa mple")],
            vec![],
            "is not an http(s) URL",
        ),
        (
            "anon key with a newline",
            vec![("SUPABASE_ANON_KEY", "eyJhbGci\nOiJIUzI1NiJ9")],
            vec![],
            "SUPABASE_ANON_KEY holds characters",
        ),
        (
            "service key with a space",
            vec![("SUPABASE_SERVICE_ROLE_KEY", "sekrit service")],
            vec![],
            "SUPABASE_SERVICE_ROLE_KEY holds characters",
        ),
        (
            "broken pooler URL",
            vec![("SUPABASE_DB_URL", "postgres://u:sekrit-pw@host:notaport/db")],
            vec![],
            "SUPABASE_DB_URL is not a Postgres connection string",
        ),
        (
            "broken session URL",
            vec![(
                "SUPABASE_DB_SESSION_URL",
                "postgres://u:sekrit-pw@host:99999999/db",
            )],
            vec![],
            "SUPABASE_DB_SESSION_URL is not a Postgres connection string",
        ),
        (
            "pooler path without a pooler URL",
            vec![("SUPABASE_DB_URL", "")],
            vec!["--set", "workload.ingest.pooler=1"],
            "SUPABASE_DB_URL is not set",
        ),
        (
            "a cap that is not a number",
            vec![("FLEETBENCH_MAX_AGENTS", "lots")],
            vec![],
            "FLEETBENCH_MAX_AGENTS=\"lots\" is not a positive number",
        ),
        (
            "a negative cap",
            vec![("FLEETBENCH_MAX_DURATION", "-1")],
            vec![],
            "FLEETBENCH_MAX_DURATION",
        ),
        (
            "a run over the agent cap",
            vec![("FLEETBENCH_MAX_AGENTS", "10")],
            vec![],
            "FLEETBENCH_MAX_AGENTS",
        ),
        (
            "--set without a value",
            vec![],
            vec!["--set", "fleet.agents"],
            "fleet.agents",
        ),
        (
            "--set of an unknown key",
            vec![],
            vec!["--set", "fleet.agnets=5"],
            "agnets",
        ),
        (
            "--set of a wrong type",
            vec![],
            vec!["--set", "fleet.agents=\"many\""],
            "fleet.agents",
        ),
        (
            "a shard past the count",
            vec![],
            vec!["--shard", "3/2"],
            "--shard",
        ),
        (
            "a start that is no time",
            vec![],
            vec!["--start-at", "tomorrow"],
            "--start-at",
        ),
        ("an unknown flag", vec![], vec!["--agents", "5"], "--agents"),
        // Run ids tag every user and row and name them in cleanup: empty, short, multi-byte at
        // byte 8 (which used to panic) or beyond 64 characters are refused.
        (
            "an empty run id",
            vec![],
            vec!["--run-id", ""],
            "is not a run id",
        ),
        (
            "a short run id",
            vec![],
            vec!["--run-id", "abc"],
            "is not a run id",
        ),
        (
            "a multi-byte run id",
            vec![],
            vec!["--run-id", "abcdefgé-1234"],
            "is not a run id",
        ),
        (
            "a long run id",
            vec![],
            vec!["--run-id", long_run_id.as_str()],
            "is not a run id",
        ),
        (
            "a missing scenario",
            vec![],
            vec!["--set", "fleet.agents=5"],
            "no-such-scenario.toml",
        ),
    ];
    for (what, env, args, names) in cases {
        let scenario = if what == "a missing scenario" {
            "scenarios/no-such-scenario.toml"
        } else {
            "scenarios/smoke.toml"
        };
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetbench"));
        c.args(["run", scenario, "--out", &out_dir])
            .args(["--set", "workload.ingest={rest=1.0}"])
            .args(&args)
            .current_dir(workspace_root())
            .env_remove("FLEETBENCH_ALLOW_HOSTS")
            .env_remove("SUPABASE_DB_SESSION_URL");
        for (k, v) in &base_env {
            c.env(k, v);
        }
        for (k, v) in &env {
            c.env(k, v);
        }
        let out = tokio::task::block_in_place(|| c.output().unwrap());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(names),
            "{what}: the message should name {names:?}:\n{stderr}"
        );
        // One message: a single `error:` paragraph, no panic, no secret.
        assert_eq!(
            stderr.matches("error").count().min(1),
            1,
            "{what}: {stderr}"
        );
        assert!(
            stderr.lines().filter(|l| l.starts_with("error:")).count() <= 1,
            "{what}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("sekrit"),
            "{what}: {stderr}"
        );
        assert_eq!(
            sink.requests.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "{what}: a request was sent"
        );
    }
}

/// Every file under `dir`, as text (lossy).
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_reach_no_log_report_or_error() {
    // Keys, a JWT secret and two connection-string passwords, planted where a target's live; the
    // pooler URLs point at a port nobody serves, so the pooler path fails and is reported.
    // Errors too: their bodies and messages are reported.
    let (url, _sink) = sink_on("127.0.0.1", "1ms", None, &["status:401@0s..1h".into()]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    let secrets = [
        "planted-anon-key-5b1d0e",
        "planted-service-key-9c44aa",
        "planted-jwt-secret-31f0",
        "planted-pooler-password-77e2",
        "planted-session-password-0a9b",
    ];
    let env = [
        ("SUPABASE_URL", url.clone()),
        ("SUPABASE_ANON_KEY", secrets[0].to_string()),
        ("SUPABASE_SERVICE_ROLE_KEY", secrets[1].to_string()),
        ("SUPABASE_JWT_SECRET", secrets[2].to_string()),
        (
            "SUPABASE_DB_URL",
            format!(
                "postgresql://postgres.ref:{}@127.0.0.1:{dead_port}/postgres",
                secrets[3]
            ),
        ),
        (
            "SUPABASE_DB_SESSION_URL",
            format!(
                "postgresql://postgres.ref:{}@127.0.0.1:{dead_port}/postgres",
                secrets[4]
            ),
        ),
        // Every log line there is.
        ("FLEETBENCH_LOG", "trace".to_string()),
        ("RUST_BACKTRACE", "1".to_string()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let fleetbench_with = |args: Vec<String>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetbench"));
        c.args(args).current_dir(workspace_root());
        for (k, v) in &env {
            c.env(k, v);
        }
        tokio::task::block_in_place(|| c.output().unwrap())
    };
    let run_dir = dir.path().join("run");
    let goose_dir = dir.path().join("goose");
    let commands: Vec<Vec<String>> = vec![
        // A short fleet on both paths, its cleanup through the (dead) session URL.
        [
            "run",
            "scenarios/smoke.toml",
            "--out",
            run_dir.to_str().unwrap(),
            "--set",
            "load.stages.1.duration=\"2s\"",
            "--set",
            "thresholds={}",
        ]
        .map(String::from)
        .to_vec(),
        // The goose front end: its console, reports and logs.
        [
            "goose",
            "scenarios/goose-cross-check.toml",
            "--out",
            goose_dir.to_str().unwrap(),
            "--set",
            "workload.ingest={rest=0.5,pooler=0.5}",
            "--",
            "--iterations",
            "2",
            "--request-log",
            goose_dir.join("requests.log").to_str().unwrap(),
            "--error-log",
            goose_dir.join("errors.log").to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec(),
        [
            "cleanup",
            "--run-id",
            "00000000-0000-0000-0000-000000000000",
        ]
        .map(String::from)
        .to_vec(),
        ["report", run_dir.to_str().unwrap()]
            .map(String::from)
            .to_vec(),
        // Invalid input that names the variables.
        ["run", "scenarios/smoke.toml", "--set", "fleet.agents=0"]
            .map(String::from)
            .to_vec(),
    ];
    let mut outputs: Vec<(String, String)> = Vec::new();
    for args in commands {
        let out = fleetbench_with(args.clone());
        let what = args.join(" ");
        outputs.push((
            format!("{what}: stdout"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
        outputs.push((
            format!("{what}: stderr"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    for (p, text) in files_under(dir.path()) {
        outputs.push((p.display().to_string(), text));
    }
    // The runs did run (the search is over real outputs): a run directory, goose's reports, and
    // the failures the secrets could have leaked into.
    let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
    for file in [
        "summary.json",
        "index.html",
        "goose-report.html",
        "goose-report.json",
        "requests.log",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(file)),
            "{file} was not written: {names:?}"
        );
    }
    let all: String = outputs.iter().map(|(_, t)| t.as_str()).collect();
    assert!(all.contains("http_401"), "the 401s were reported");
    assert!(
        all.contains("pooler.insert_metrics"),
        "the pooler path was tried"
    );
    for (name, text) in &outputs {
        for s in secrets {
            assert!(!text.contains(s), "{s} leaked into {name}");
        }
    }
}

/// The Auth preflight speaks before anything is sent. 1,000 agents against a project whose
/// `/token` limit is the hosted default (stated in the scenario: 150 per 5 min, burst 30) take
/// (1,000 − 30) / 0.5 s = 32 min 20 s to provision from one address: `--dry-run` says so and exits
/// 2 as the run would (0 with the slow start accepted); a run is refused (exit 2) with the fixes;
/// the target sees no request in any case.
#[tokio::test]
async fn the_auth_preflight_speaks_before_anything_is_sent() {
    let (url, sink) = sink("2ms").await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("big.toml");
    std::fs::write(
        &scenario,
        "name = \"big\"\n[fleet]\nagents = 1000\n[target]\ntoken_rate_limit = 150\n[[load.stages]]\n\
         duration = \"10s\"\nagents = 1000\n[workload]\nsample_interval = \"1s\"\nupload_interval = \"10s\"\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let (code, stderr) = run_remote(&scenario, &out, &["--dry-run"], &url).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("provisioning takes 32 min 20 s"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    let accepted = ["--dry-run", "--accept-slow-provisioning"];
    let (code, stderr) = run_remote(&scenario, &out, &accepted, &url).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--dry-run: nothing was sent"), "{stderr}");
    let (code, stderr) = run_remote(&scenario, &out, &[], &url).await;
    assert_eq!(code, Some(2), "{stderr}");
    for fix in [
        "IP address forwarding",
        "token_rate_limit",
        "--shard",
        "--accept-slow-provisioning",
    ] {
        assert!(
            stderr.contains(fix),
            "the refusal does not name {fix:?}:\n{stderr}"
        );
    }
    assert_eq!(sink.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
}
