//! fleetbench against staging, rehearsed on the hosted double (`stack up --profile hosted`), given
//! only what `stack env` prints, as CI is given staging's settings: HTTPS, WSS and `verify-full`
//! pooler URLs, the Management API's token, Auth limits at their defaults.
//!
//! - `scenarios/claims.toml` with every probe passes with the publishable and secret keys (IP
//!   forwarding on), and with the legacy keys (one address; the `/token` limit raised through the
//!   Management API, as a staging owner would).
//! - 2,000 agents with forwarding provision without a single 429; without it the preflight refuses
//!   with the computed provisioning time, and accepting a slow ramp provisions every agent with
//!   the server sending no 429 storm (counted on the server, from its Metrics API).
//! - Tokens living 60 s for 5 minutes: refreshes as the refresh period predicts, and every
//!   dashboard's alert delivered while its channels' tokens are refreshed.
//! - A signal while the probes run or while the run cleans up ends it within 2 s, with the run
//!   directory complete and the cleanup's command said.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::hosted::{fleetbench_with, hosted, trusting};
use super::*;

const LEGACY: [&str; 3] = [
    "SUPABASE_ANON_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_JWT_SECRET",
];
const NEW_KEYS: [&str; 2] = ["SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY"];

/// `env` without `names`, with `add`.
fn with(
    env: &BTreeMap<String, String>,
    without: &[&str],
    add: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut e = env.clone();
    for n in without {
        e.remove(*n);
    }
    for (k, v) in add {
        e.insert(k.to_string(), v.to_string());
    }
    e
}

/// `PATCH` the project's Auth configuration through the Management API.
async fn patch_auth(env: &BTreeMap<String, String>, body: Value) {
    let r = trusting(env)
        .patch(format!(
            "{}/v1/projects/{}/config/auth",
            env["FLEETBENCH_MANAGEMENT_API"], env["SUPABASE_PROJECT_REF"]
        ))
        .bearer_auth(&env["SUPABASE_ACCESS_TOKEN"])
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// 429s Auth has sent so far, from the Metrics API.
async fn server_429s(env: &BTreeMap<String, String>) -> u64 {
    let scraped = super::platform::scrape(env).await;
    scraped
        .get("http_status_codes_total{code=429}")
        .map_or(0, |v| *v as u64)
}

/// `fleetbench run SCENARIO --out DIR ARGS…`: its output and summary (when written).
fn run(
    dir: &Path,
    env: &BTreeMap<String, String>,
    scenario: &str,
    name: &str,
    args: &[&str],
) -> (Output, Option<Value>) {
    let out_dir = dir.join(name);
    let mut all = vec!["run", scenario, "--out", out_dir.to_str().unwrap()];
    all.extend(args);
    let out = fleetbench_with(dir, env, &all);
    let summary = std::fs::read(out_dir.join("summary.json"))
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    (out, summary)
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A passing run: its summary, every probe's verdict pass, every planned agent ran.
fn passed(out: &Output, summary: Option<Value>) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        said(out)
    );
    let summary = summary.expect("a summary");
    assert_eq!(summary["verdict"], "pass", "{summary}");
    let delivery = &summary["delivery"];
    assert_eq!(
        delivery["agents_ran"], delivery["agents_planned"],
        "{summary}"
    );
    summary
}

/// claims.toml's thresholds with every latency bound ten times looser.
const LOOSER_LATENCY: &str = "thresholds={ \"rest.insert_metrics\" = [\"p(95) < 5s\", \"error_rate < 1%\"], \
    \"pooler.insert_metrics\" = [\"p(95) < 5s\", \"error_rate < 1%\"], \
    \"realtime.alert_delivery\" = [\"p(95) < 10s\", \"loss == 0\"], \
    \"functions.webhook_delivery\" = [\"p(95) < 50s\", \"loss == 0\"], \
    \"rpc.match_memories\" = [\"p(95) < 5s\", \"error_rate < 1%\"], \"pooler.connect\" = [\"error_rate == 0\"] }";

/// claims.toml's probes, each passed.
fn every_probe_passed(summary: &Value) {
    for probe in ["partitions", "pooler", "rag", "realtime", "rls", "webhook"] {
        assert_eq!(
            summary["probes"][probe]["verdict"], "pass",
            "{probe}: {summary}"
        );
    }
}

/// claims.toml, its load shortened; `more` settings after.
fn claims(dir: &Path, env: &BTreeMap<String, String>, name: &str, more: &[&str]) -> Value {
    let receiver = format!(
        "probes.webhook.receiver=\"{}/fleetbench/v1/webhook-receiver\"",
        env["SUPABASE_URL"]
    );
    // 100 agents and lighter probes: every probe of claims.toml, sized for a 2-core machine that
    // runs other tests beside this one. Every error, loss and probe verdict holds as claims.toml
    // has it; the latency bounds are ten times looser: a debug-built double sharing two cores with
    // the generator and other tests is no latency reference (staging is).
    let mut args = vec![
        "--set",
        "load.stages.0.duration=\"5s\"",
        "--set",
        "load.stages.1.duration=\"25s\"",
        "--set",
        &receiver,
    ];
    for setting in [
        "fleet.agents=100",
        "load.stages.0.agents=100",
        "load.stages.1.agents=100",
        "probes.rag.memories=1000",
        "probes.rag.queries=100",
        "probes.realtime.alerts=40",
        "probes.webhook.alerts=20",
        "probes.partitions.rows_per_month=5000",
        "probes.pooler.clients=300",
        "probes.pooler.concurrency=20",
        LOOSER_LATENCY,
    ] {
        args.extend(["--set", setting]);
    }
    args.extend(more);
    let (out, summary) = run(dir, env, "scenarios/claims.toml", name, &args);
    let summary = passed(&out, summary);
    every_probe_passed(&summary);
    // claims.toml's eleven thresholds, each judged.
    assert_eq!(
        summary["thresholds"].as_array().unwrap().len(),
        11,
        "{summary}"
    );
    summary
}

#[tokio::test]
async fn claims_and_fleet_scale_against_the_hosted_double() {
    // The pooler probe's 300 clients: a size whose pooler takes them (Medium: 120 / 600).
    let (instance, env) = hosted("fleetbench-test-staging-", &["--compute", "medium"]);
    let dir = instance.0.clone();
    let db = fleetbench_tls::pg::connect(&env["SUPABASE_DB_SESSION_URL"])
        .await
        .unwrap();

    // The new keys only, each agent its own forwarded address: not one 429. The Server section
    // from the double's Metrics API, and the live series into a real Prometheus.
    let new_keys = with(&env, &LEGACY, &[("FLEETBENCH_IP_FORWARDING", "on")]);
    let before = server_429s(&env).await;
    let prom = super::export::prometheus().await;
    let write_url = format!("{}/api/v1/write", prom.url);
    let s = claims(
        &dir,
        &new_keys,
        "claims-new-keys",
        &["--prometheus-remote-write", &write_url],
    );
    server_section(&dir.join("claims-new-keys"), &s);
    super::export::exported(&prom, &s).await;
    assert_eq!(
        server_429s(&env).await,
        before,
        "429s during the forwarded run"
    );
    assert_eq!(
        run_owns(&db, s["run_id"].as_str().unwrap().into()).await,
        (0, 0)
    );

    // The legacy keys alone, from one address, with the limit raised through the Management API
    // (fleetbench reads it there): the claims again.
    patch_auth(&env, json!({ "rate_limit_token_refresh": 100_000 })).await;
    let legacy = with(&env, &NEW_KEYS, &[]);
    let s = claims(&dir, &legacy, "claims-legacy-keys", &[]);
    assert_eq!(
        run_owns(&db, s["run_id"].as_str().unwrap().into()).await,
        (0, 0)
    );
    patch_auth(&env, json!({ "rate_limit_token_refresh": 150 })).await;

    fleet_scale(&dir, &env).await;
    drop(db);
    ok(fleetbench(&dir, &["stack", "down"]));
}

/// smoke.toml with `agents` agents uploading every 10 s for 10 s.
fn fleet_args(agents: &str) -> Vec<String> {
    let a = agents;
    [
        format!("fleet.agents={a}"),
        format!("load.stages.0.agents={a}"),
        format!("load.stages.1.agents={a}"),
        "load.stages.1.duration=\"7s\"".into(),
        "workload.sample_interval=\"1s\"".into(),
        "workload.upload_interval=\"10s\"".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

/// 2,000 agents with forwarding; the same without it refused with the time it would take; a slow
/// ramp accepted at a raised limit, paced without a 429 storm.
async fn fleet_scale(dir: &Path, env: &BTreeMap<String, String>) {
    let args = fleet_args("2000");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let forwarded = with(env, &[], &[("FLEETBENCH_IP_FORWARDING", "on")]);
    let before = server_429s(env).await;
    let (out, summary) = run(dir, &forwarded, "scenarios/smoke.toml", "fleet-2000", &args);
    let summary = passed(&out, summary);
    assert_eq!(summary["delivery"]["agents_ran"], 2000, "{summary}");
    assert_eq!(summary["operations"]["auth.password"]["count"], 2000);
    assert_eq!(server_429s(env).await, before, "no 429 with forwarding");

    // One address at 150 per 5 min: (2,000 − 30) / 0.5 per s = 3,940 s, refused before sending.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let (out, _) = run(dir, env, "scenarios/smoke.toml", "fleet-2000-dry", &dry);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("takes 65 min 40 s"), "{}", said(&out));

    // 300 agents at 3,000 per 5 min (10 a second): (300 − 30) / 10 = 27 s, over a 10 s allowance:
    // refused, then accepted as a slow ramp.
    patch_auth(env, json!({ "rate_limit_token_refresh": 3000 })).await;
    let args = fleet_args("300");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let slow = with(env, &[], &[("FLEETBENCH_MAX_PROVISIONING", "10s")]);
    let (out, _) = run(
        dir,
        &slow,
        "scenarios/smoke.toml",
        "fleet-300-refused",
        &args,
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("takes 27 s"), "{}", said(&out));
    args.push("--accept-slow-provisioning");
    let before = server_429s(env).await;
    let (out, summary) = run(dir, &slow, "scenarios/smoke.toml", "fleet-300", &args);
    let summary = passed(&out, summary);
    assert_eq!(summary["delivery"]["agents_ran"], 300, "{summary}");
    // The client's budget (nine tenths of the bucket) keeps the server's refusals to a trickle.
    let refused = server_429s(env).await - before;
    assert!(
        refused <= 3,
        "{refused} 429s for a paced ramp: {}",
        said(&out)
    );
    patch_auth(env, json!({ "rate_limit_token_refresh": 150 })).await;
}

/// Access tokens living 60 s, a 5-minute run: each agent refreshes every half lifetime (plus half
/// an upload interval on average, as the refresh waits for the next upload), and the realtime
/// probe's dashboards keep every channel alive by pushing their refreshed tokens to it.
#[tokio::test]
async fn sixty_second_tokens_for_five_minutes() {
    let (instance, env) = hosted("fleetbench-test-tokens-", &[]);
    let dir = instance.0.clone();
    patch_auth(&env, json!({ "jwt_exp": 60 })).await;
    let env = with(&env, &[], &[("FLEETBENCH_IP_FORWARDING", "on")]);
    let (agents, load_s) = (20.0, 300.0);
    let args = [
        "--set",
        "fleet.agents=20",
        "--set",
        "load.stages.0.agents=20",
        "--set",
        "load.stages.1.agents=20",
        "--set",
        "load.stages.0.duration=\"2s\"",
        "--set",
        "load.stages.1.duration=\"298s\"",
        "--set",
        "workload.sample_interval=\"1s\"",
        "--set",
        "workload.upload_interval=\"1s\"",
        "--set",
        "probes.realtime={ subscribers = 3, alerts = 29, interval = \"10s\", wait = \"15s\" }",
    ];
    let (out, summary) = run(&dir, &env, "scenarios/smoke.toml", "tokens-60s", &args);
    assert!(
        said(&out).contains("access tokens live 60 s"),
        "{}",
        said(&out)
    );
    let summary = passed(&out, summary);
    let period = 30.0 + 0.5;
    let expected = agents * load_s / period;
    let refreshes = summary["operations"]["auth.refresh"]["count"]
        .as_f64()
        .unwrap();
    assert!(
        (refreshes - expected).abs() <= 0.1 * expected,
        "{refreshes} refreshes, {expected:.0} expected"
    );
    assert_eq!(summary["operations"]["auth.refresh"]["errors"], 0);
    let figure = |name: &str| probe_figure(&summary, "realtime", name);
    assert_eq!(figure("alerts injected"), 29.0);
    assert_eq!(figure("alerts delivered once"), 29.0);
    // Three dashboards, each refreshing every 30 s over the probe's ~300 s.
    assert!(figure("tokens refreshed") >= 3.0 * 8.0, "{summary}");
    // Not one channel was closed by the server for an expired token: no socket had to rejoin.
    let rejoins = summary["operations"]["realtime.rejoin"]["count"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(rejoins, 0, "{}", summary["probes"]["realtime"]);
    ok(fleetbench(&dir, &["stack", "down"]));
}

/// `fleetbench run smoke.toml ARGS…` in the background, stderr to a file.
fn spawn_run(
    dir: &Path,
    env: &BTreeMap<String, String>,
    name: &str,
    args: &[&str],
) -> (std::process::Child, PathBuf, PathBuf) {
    let (out_dir, stderr) = (dir.join(name), dir.join(format!("{name}.stderr")));
    let child = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args([
            "run",
            "scenarios/smoke.toml",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .args(args)
        .current_dir(workspace_root())
        .env("FLEETBENCH_HOME", workspace_root().join(".fleetbench"))
        .env("FLEETBENCH_STACK_DIR", dir)
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    (child, out_dir, stderr)
}

/// Waits (bounded) until `stderr` says `text`.
async fn until_said(stderr: &Path, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(stderr).unwrap().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "never said {text:?}: {}",
            std::fs::read_to_string(stderr).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGINT: how long the run took to exit, its exit code and what it said.
async fn interrupt(
    mut child: std::process::Child,
    stderr: &Path,
) -> (Duration, Option<i32>, String) {
    let sent = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    (
        sent.elapsed(),
        status.code(),
        std::fs::read_to_string(stderr).unwrap(),
    )
}

/// While the probes run after the load: they stop, the directory is written and the cleanup done,
/// all within 2 s. While the cleanup runs (held up by a lock this test takes on `alerts`): it is
/// left within 2 s and the command that finishes it is said; that command then removes everything.
#[tokio::test]
async fn a_signal_while_probes_or_cleanup_run_ends_the_run_within_two_seconds() {
    let (instance, env) = hosted("fleetbench-test-phases-", &[]);
    let dir = instance.0.clone();
    let env = with(&env, &[], &[("FLEETBENCH_IP_FORWARDING", "on")]);
    let db = fleetbench_tls::pg::connect(&env["SUPABASE_DB_SESSION_URL"])
        .await
        .unwrap();
    let short = [
        "--set",
        "fleet.agents=5",
        "--set",
        "load.stages.0.agents=5",
        "--set",
        "load.stages.1.agents=5",
        "--set",
        "load.stages.0.duration=\"1s\"",
        "--set",
        "load.stages.1.duration=\"2s\"",
        "--set",
        "workload.anomalies={}",
    ];

    // The probes phase: a realtime probe injecting for a minute after a 3 s load.
    let mut args = short.to_vec();
    args.extend([
        "--set",
        "probes.realtime={ subscribers = 2, alerts = 600, interval = \"100ms\", wait = \"10s\" }",
    ]);
    let (child, out_dir, stderr) = spawn_run(&dir, &env, "signal-probes", &args);
    until_said(&stderr, "waiting for the probes to finish").await;
    let (took, code, said) = interrupt(child, &stderr).await;
    assert!(took < Duration::from_secs(2), "took {took:?}\n{said}");
    assert_eq!(code, Some(0), "{said}");
    let summary = complete_run_dir(&out_dir, "stopped while the probes ran");
    assert_eq!(summary["interrupted"], true);
    let findings = summary["probes"]["realtime"]["findings"].to_string();
    assert!(
        findings.contains("interrupted before it finished"),
        "{findings}"
    );
    assert!(said.contains("cleaned up"), "{said}");
    let run_id = summary["run_id"].as_str().unwrap().to_string();
    assert_eq!(run_owns(&db, run_id).await, (0, 0));

    // The cleanup phase: `alerts` locked against deletes, so the cleanup waits on it.
    let mut lock = fleetbench_tls::pg::connect(&env["SUPABASE_DB_SESSION_URL"])
        .await
        .unwrap();
    let held = lock.transaction().await.unwrap();
    held.batch_execute("lock table public.alerts in share mode")
        .await
        .unwrap();
    let (child, out_dir, stderr) = spawn_run(&dir, &env, "signal-cleanup", &short);
    until_said(&stderr, "removing the run's users and rows").await;
    let (took, code, said) = interrupt(child, &stderr).await;
    assert!(took < Duration::from_secs(2), "took {took:?}\n{said}");
    assert_eq!(code, Some(0), "{said}");
    let summary = complete_run_dir(&out_dir, "stopped while cleaning up");
    let run_id = summary["run_id"].as_str().unwrap().to_string();
    let command = format!("`fleetbench cleanup --run-id {run_id}`");
    assert!(
        said.contains(&format!("before its cleanup finished: {command}")),
        "{said}"
    );
    held.rollback().await.unwrap();
    ok(fleetbench_with(
        &dir,
        &env,
        &["cleanup", "--run-id", &run_id],
    ));
    assert_eq!(run_owns(&db, run_id).await, (0, 0));
    ok(fleetbench(&dir, &["stack", "down"]));
}
