//! Fault survival against a misbehaving sink: for each fault, a fleet run through the binary
//! reaches its end without a panic, counts exactly the faulted answers under the fault's error
//! kind, recovers after the fault window (every sampled row written once, nothing lost), writes a
//! complete run directory, and exits as its thresholds say.

use std::sync::atomic::Ordering::Relaxed;

use super::*;

/// The fault window on the sink's clock: the run's load phase starts within a second or so.
const FROM: Duration = Duration::from_secs(3);
const TO: Duration = Duration::from_secs(5);
const AGENTS: u64 = 20;

struct Survived {
    summary: serde_json::Value,
    sink: std::sync::Arc<fleetbench_sink::Sink>,
    stderr: String,
}

/// A 9 s run of 20 agents uploading every 500 ms against a sink with `fault` over 3..5 s.
async fn survive(fault: &str, threshold: &str, extra: &[&str], exit: i32) -> Survived {
    survive_with(fault, threshold, extra, exit, |_| {}).await
}

/// [`survive`] with the sink set up by `setup` first.
async fn survive_with(
    fault: &str,
    threshold: &str,
    extra: &[&str],
    exit: i32,
    setup: impl FnOnce(&fleetbench_sink::Sink),
) -> Survived {
    let window = format!("{fault}@{}s..{}s", FROM.as_secs(), TO.as_secs());
    let (url, sink) = sink_on("127.0.0.1", "2ms", None, &[window]).await;
    setup(&sink);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("faults.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"faults\"\n[fleet]\nagents = {AGENTS}\n[load]\ngrace = \"2s\"\n[[load.stages]]\nduration = \"0s\"\nagents = {AGENTS}\n\
             [[load.stages]]\nduration = \"9s\"\nagents = {AGENTS}\n[workload]\nsample_interval = \"100ms\"\nupload_interval = \"500ms\"\n\
             request_timeout = \"1s\"\ningest = {{ rest = 1.0 }}\n[thresholds]\n\"rest.insert_metrics\" = [\"{threshold}\"]\n"
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("run");
    let mut args = vec![
        "run".to_string(),
        scenario.display().to_string(),
        "--out".into(),
        out_dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_fleetbench"))
            .args(args)
            .env("SUPABASE_URL", url)
            .env("SUPABASE_ANON_KEY", "anon")
            .env("SUPABASE_SERVICE_ROLE_KEY", "service")
            .env_remove("SUPABASE_DB_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(exit), "{fault}: {stderr}");
    assert!(!stderr.contains("panicked"), "{fault}: {stderr}");
    // The run directory is complete.
    let summary = complete_run_dir(&out_dir, fault);
    assert_eq!(summary["interrupted"], false);
    // Nothing lost, nothing twice: every sampled row reached the sink once or is still held.
    let (sampled, written, unsent, dropped, abandoned) = rows_account(&stderr);
    assert_eq!(written as u64, sink.rows.load(Relaxed), "{fault}: {stderr}");
    assert_eq!(
        summary["operations"]["rest.insert_metrics"]["rows"],
        written
    );
    assert_eq!(
        (written + unsent, dropped, abandoned),
        (sampled, 0, 0),
        "{fault}: {stderr}"
    );
    // The agents came back: inserts were taken after the fault ended.
    let last = Duration::from_micros(sink.last_insert_us.load(Relaxed));
    assert!(
        last > TO + Duration::from_secs(1),
        "{fault}: last insert at {last:?}"
    );
    Survived {
        summary,
        sink,
        stderr,
    }
}

fn errors(s: &Survived, op: &str, kind: &str) -> u64 {
    s.summary["operations"][op]["errors_by_kind"][kind]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_burst_of_5xx_is_counted_and_retried_and_a_crossed_threshold_still_exits_99() {
    let s = survive("status:503", "error_rate < 1%", &[], 99).await;
    let faulted = s.sink.faulted.load(Relaxed);
    assert!(faulted > 0);
    assert_eq!(
        errors(&s, "rest.insert_metrics", "http_503"),
        faulted,
        "{}",
        s.stderr
    );
    assert_eq!(s.summary["verdict"], "fail");
}

#[tokio::test]
async fn throttling_with_retry_after_is_honoured_and_without_it_backs_off() {
    let with = survive("throttle:1s", "error_rate < 60%", &[], 0).await;
    let faulted = with.sink.faulted.load(Relaxed);
    assert_eq!(errors(&with, "rest.insert_metrics", "http_429"), faulted);
    // An agent told to wait a second asks at most once a second through the 2 s window (plus the
    // request already on its way): far fewer than its 500 ms cadence would.
    let window_s = (TO - FROM).as_secs();
    assert!(
        faulted <= AGENTS * (window_s + 1),
        "{faulted} 429s for {AGENTS} agents told to wait 1 s over {window_s} s"
    );
    let without = survive("throttle", "error_rate < 60%", &[], 0).await;
    assert_eq!(
        errors(&without, "rest.insert_metrics", "http_429"),
        without.sink.faulted.load(Relaxed)
    );
    assert!(without.sink.faulted.load(Relaxed) > 0);
}

#[tokio::test]
async fn answers_slower_than_the_request_timeout_are_timeouts() {
    // The sink holds answers for 3 s; the scenario gives up after 1 s.
    let s = survive("slow:3s", "error_rate < 60%", &[], 0).await;
    let faulted = s.sink.faulted.load(Relaxed);
    assert!(faulted > 0);
    assert_eq!(
        errors(&s, "rest.insert_metrics", "timeout"),
        faulted,
        "{}",
        s.stderr
    );
}

#[tokio::test]
async fn answers_broken_off_mid_way_are_transport_errors() {
    let s = survive("reset", "error_rate < 60%", &[], 0).await;
    let faulted = s.sink.faulted.load(Relaxed);
    assert!(faulted > 0);
    assert_eq!(
        errors(&s, "rest.insert_metrics", "transport"),
        faulted,
        "{}",
        s.stderr
    );
}

#[tokio::test]
async fn a_refused_refresh_token_means_signing_in_again() {
    // Tokens that live 2 s are refreshed every second or so, and the sink refuses the grant as
    // GoTrue refuses a reused token from 3 s to 5 s.
    let s = survive_with("refresh_reuse", "error_rate < 1%", &[], 0, |sink| {
        sink.set_token_lifetime(Duration::from_secs(2))
    })
    .await;
    let faulted = s.sink.faulted.load(Relaxed);
    assert!(faulted > 0);
    assert_eq!(
        errors(&s, "auth.refresh", "http_400"),
        faulted,
        "{}",
        s.stderr
    );
    // Each refusal was followed by a password sign-in (beyond the 20 at provisioning), and the
    // uploads themselves never failed.
    let sign_ins = s.summary["operations"]["auth.password"]["count"]
        .as_u64()
        .unwrap();
    assert_eq!(sign_ins, AGENTS + faulted);
    assert_eq!(s.summary["operations"]["rest.insert_metrics"]["errors"], 0);
}

/// A run whose every tenth agent can never sign in (the sink refuses agents 0 and 10 of 20)
/// delivers 18 of its 20 planned agents: it fails (exit 99) with the reason on the terminal, in
/// `summary.json` and at the top of the report; the same run passes when its scenario accepts
/// 90 % of its agents.
#[tokio::test]
async fn a_run_short_of_its_agents_fails_unless_its_scenario_accepts_it() {
    let (url, sink) = sink_on(
        "127.0.0.1",
        "2ms",
        None,
        &["signin_refused:10@0s..10m".into()],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("short.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"short\"\n[fleet]\nagents = {AGENTS}\n[[load.stages]]\nduration = \"0s\"\nagents = {AGENTS}\n\
             [[load.stages]]\nduration = \"2s\"\nagents = {AGENTS}\n[workload]\nsample_interval = \"100ms\"\n\
             upload_interval = \"500ms\"\ningest = {{ rest = 1.0 }}\n"
        ),
    )
    .unwrap();
    // The truth, from the fault's rule: indices 0..20 that are multiples of 10.
    let refused = (0..AGENTS).filter(|i| i % 10 == 0).count() as u64;
    let strict = dir.path().join("strict");
    let (code, stderr) = run_remote(&scenario, &strict, &[], &url).await;
    assert_eq!(code, Some(99), "{stderr}");
    let reason = format!("{} of {AGENTS} planned agents ran", AGENTS - refused);
    assert!(
        stderr.contains(&reason) && stderr.contains("Invalid login credentials"),
        "{stderr}"
    );
    let summary = complete_run_dir(&strict, "short run");
    assert_eq!(summary["verdict"], "fail");
    let delivery = &summary["delivery"];
    assert_eq!(delivery["agents_planned"], AGENTS);
    assert_eq!(delivery["agents_ran"], AGENTS - refused);
    assert!(
        delivery["shortfall"][0].as_str().unwrap().contains(&reason),
        "{delivery}"
    );
    let page = std::fs::read_to_string(strict.join("index.html")).unwrap();
    assert!(
        page.contains("Less delivered than planned"),
        "the report does not say so"
    );
    assert!(sink.faulted.load(Relaxed) >= refused);

    let loose = dir.path().join("loose");
    let (code, stderr) =
        run_remote(&scenario, &loose, &["--set", "delivery.agents=0.9"], &url).await;
    assert_eq!(code, Some(0), "{stderr}");
    let summary = complete_run_dir(&loose, "short run, 90 % accepted");
    assert_eq!(summary["verdict"], "pass");
    assert_eq!(summary["delivery"]["agents_ran"], AGENTS - refused);
    assert_eq!(summary["delivery"]["shortfall"], serde_json::json!([]));
}

/// A run that fails once provisioning began (every sign-in refused, so no agent got in): it ends
/// with exit 1 and, having no SQL access to clean up with, spells out the exact command that
/// removes the users it created.
#[tokio::test]
async fn a_run_that_fails_after_provisioning_spells_out_its_cleanup() {
    let (url, sink) = sink_on(
        "127.0.0.1",
        "2ms",
        None,
        &["signin_refused:1@0s..10m".into()],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("refused.toml");
    std::fs::write(
        &scenario,
        "name = \"refused\"\n[fleet]\nagents = 3\n[[load.stages]]\nduration = \"0s\"\nagents = 3\n\
         [[load.stages]]\nduration = \"2s\"\nagents = 3\n[workload]\nsample_interval = \"100ms\"\n\
         upload_interval = \"500ms\"\ningest = { rest = 1.0 }\n",
    )
    .unwrap();
    let run_id = uuid::Uuid::new_v4().to_string();
    let (code, stderr) = run_remote(
        &scenario,
        &dir.path().join("run"),
        &["--run-id", &run_id],
        &url,
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(sink.faulted.load(Relaxed) >= 3, "{stderr}");
    assert!(
        stderr.contains(&format!("`fleetbench cleanup --run-id {run_id}`")),
        "{stderr}"
    );
}
