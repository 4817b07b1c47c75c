//! Staging safety: allowlist, hard caps, the run directory.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_targets_need_an_allowlist_and_every_run_has_hard_caps() {
    // A "remote" project on another loopback address, so nothing leaves the machine.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sink = fleetbench_fleet::sink::Sink::new(fleetbench_fleet::sink::Model {
        latency: "1ms".parse().unwrap(),
        stall: None,
        capacity: None,
    });
    tokio::spawn(fleetbench_fleet::sink::serve(listener, sink.clone()));
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
