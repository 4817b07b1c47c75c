//! Nothing lost on a signal: SIGINT or SIGTERM stops new work and writes the complete run directory
//! with every answered upload in it, also when it comes while the fleet is still being provisioned
//! (no load phase follows); a second signal exits at once and still leaves readable data.

use std::sync::atomic::Ordering::Relaxed;

use super::*;

struct Running {
    child: std::process::Child,
    out_dir: PathBuf,
    stderr: PathBuf,
    _work: tempfile::TempDir,
}

/// A long run of 30 agents against `sink_url`, output to files (read at the end).
fn start(sink_url: &str) -> Running {
    start_with(sink_url, "", &[])
}

/// [`start`] with `fleet` settings added to `[fleet]`, and `args` after `run`'s own.
fn start_with(sink_url: &str, fleet: &str, args: &[&str]) -> Running {
    let work = tempfile::tempdir().unwrap();
    let scenario = work.path().join("long.toml");
    std::fs::write(
        &scenario,
        "name = \"long\"\n[fleet]\nagents = 30\n".to_string() + fleet + "\n[load]\ngrace = \"30s\"\n[[load.stages]]\nduration = \"0s\"\nagents = 30\n\
         [[load.stages]]\nduration = \"5m\"\nagents = 30\n[workload]\nsample_interval = \"100ms\"\nupload_interval = \"200ms\"\ningest = { rest = 1.0 }\n",
    )
    .unwrap();
    let out_dir = work.path().join("run");
    let stderr = work.path().join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .args(args)
        .env("SUPABASE_URL", sink_url)
        .env("SUPABASE_ANON_KEY", "anon")
        .env("SUPABASE_SERVICE_ROLE_KEY", "service")
        .env_remove("SUPABASE_DB_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    Running {
        child,
        out_dir,
        stderr,
        _work: work,
    }
}

/// Waits until the sink has seen `n` requests of the run's load (bounded).
async fn until_requests(sink: &fleetbench_sink::Sink, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sink.requests.load(Relaxed) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

async fn wait(mut child: std::process::Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

/// Waits until the run's stderr says `text` (bounded); `what` names it if it never does.
async fn until_said(run: &Running, text: &str, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&run.stderr).unwrap().contains(text) {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGINT to the run's process: how long it took to exit, and how it exited.
async fn interrupt(child: std::process::Child) -> (Duration, std::process::ExitStatus) {
    let sent = std::time::Instant::now();
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let status = wait(child).await;
    (sent.elapsed(), status)
}

#[tokio::test]
async fn sigint_and_sigterm_write_the_whole_run_directory_within_two_seconds() {
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let (url, sink) = sink("2ms").await;
        let run = start(&url);
        until_requests(&sink, 400).await;
        let sent = std::time::Instant::now();
        signal(&run.child, sig);
        let status = wait(run.child).await;
        let took = sent.elapsed();
        let stderr = std::fs::read_to_string(&run.stderr).unwrap();
        assert!(
            took < Duration::from_secs(2),
            "{sig:?}: the run took {took:?} to write its directory and exit"
        );
        assert_eq!(status.code(), Some(0), "{sig:?}: {stderr}");
        for file in [
            "index.html",
            "summary.json",
            "histograms.hlog",
            "scenario.toml",
        ] {
            let len = std::fs::metadata(run.out_dir.join(file)).map_or(0, |m| m.len());
            assert!(len > 0, "{sig:?}: {file} missing or empty");
        }
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.out_dir.join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(summary["interrupted"], true);
        // Every upload the sink answered is in the run's figures, with its rows.
        let ops = &summary["operations"]["rest.insert_metrics"];
        assert_eq!(
            ops["count"],
            sink.inserts.load(Relaxed),
            "{sig:?}: {stderr}"
        );
        assert_eq!(ops["rows"], sink.rows.load(Relaxed));
        assert_eq!(summary["abandoned"], 0);
    }
}

/// SIGINT while every upload waits on a sink that answers inserts a minute later: the drain gives
/// them a second, then leaves them; their rows are counted as abandoned, so every sampled row is
/// still accounted for (sampled = written + unsent + dropped + abandoned).
#[tokio::test]
async fn rows_of_uploads_left_in_flight_at_a_signal_are_counted() {
    let (url, sink) = sink_on("127.0.0.1", "1ms", None, &["slow:60s@0s..10m".into()]).await;
    let run = start(&url);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sink.faulted.load(Relaxed) < 30 {
        assert!(std::time::Instant::now() < deadline, "no uploads in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (took, status) = interrupt(run.child).await;
    let stderr = std::fs::read_to_string(&run.stderr).unwrap();
    assert!(took < Duration::from_secs(2), "took {took:?}\n{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let (sampled, written, unsent, dropped, abandoned) = rows_account(&stderr);
    assert_eq!(written, 0, "{stderr}");
    assert!(abandoned >= 30, "{stderr}");
    assert_eq!(sampled, written + unsent + dropped + abandoned, "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert!(summary["abandoned"].as_u64() >= Some(30), "{summary}");
}

/// A signal while the fleet is still being provisioned (one agent at a time, 300 ms a call): the
/// run stops provisioning, runs no load at all, and writes its directory within 2 s.
#[tokio::test]
async fn a_signal_while_provisioning_ends_the_run_without_a_load_phase() {
    let (url, sink) = sink("300ms").await;
    let run = start_with(&url, "provision_concurrency = 1", &[]);
    // Two agents in (three calls each): well inside the ~27 s the provisioning would take.
    until_requests(&sink, 6).await;
    let (took, status) = interrupt(run.child).await;
    let stderr = std::fs::read_to_string(&run.stderr).unwrap();
    assert!(took < Duration::from_secs(2), "took {took:?}\n{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let summary = complete_run_dir(&run.out_dir, "stopped while provisioning");
    assert_eq!(summary["interrupted"], true);
    // Nothing of the load was sent: no insert reached the sink, none is in the run's figures.
    assert_eq!(sink.inserts.load(Relaxed), 0, "{stderr}");
    assert!(
        summary["operations"].get("rest.insert_metrics").is_none(),
        "{summary}"
    );
    let ran = summary["delivery"]["agents_ran"].as_u64().unwrap();
    assert!((1..30).contains(&ran), "{summary}");
}

/// A shard waiting for its run's start (a minute ahead) when the signal comes: it stops waiting,
/// runs no load, and writes its directory within 2 s.
#[tokio::test]
async fn a_signal_while_waiting_for_the_start_ends_the_run_at_once() {
    let (url, sink) = sink("2ms").await;
    let start_at = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    let run_id = uuid::Uuid::new_v4().to_string();
    let args = [
        "--shard",
        "0/2",
        "--run-id",
        &run_id,
        "--start-at",
        &start_at,
    ];
    let run = start_with(&url, "", &args);
    // Shard 0 of 2 provisions 15 agents (three calls each), then waits.
    until_requests(&sink, 15 * 3).await;
    until_said(
        &run,
        "the load starts at",
        "the shard never said when it starts",
    )
    .await;
    let (took, status) = interrupt(run.child).await;
    let stderr = std::fs::read_to_string(&run.stderr).unwrap();
    assert!(took < Duration::from_secs(2), "took {took:?}\n{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let summary = complete_run_dir(&run.out_dir, "stopped while waiting for the start");
    assert_eq!(summary["interrupted"], true);
    assert_eq!(sink.inserts.load(Relaxed), 0, "{stderr}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once_and_leaves_readable_partial_data() {
    // Answers take 5 s: after the first signal the drain has uploads to wait for.
    let (url, sink) = sink("5s").await;
    let run = start(&url);
    // Provisioning (90 calls) done and uploads on their way.
    until_requests(&sink, 30 * 3 + 30).await;
    signal(&run.child, nix::sys::signal::Signal::SIGINT);
    // The first signal is taken when the stop message is out.
    let said = "second signal exits at once";
    until_said(&run, said, "the first signal was not taken").await;
    let (took, status) = interrupt(run.child).await;
    let stderr = std::fs::read_to_string(&run.stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    // At once: well before the 1 s drain and the 5 s answers it waits for.
    assert!(took < Duration::from_millis(900), "{took:?}\n{stderr}");
    assert!(!run.out_dir.join("summary.json").exists());
    let partial: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.out_dir.join("partial.json")).unwrap())
            .unwrap();
    assert_eq!(partial["complete"], false);
    assert_eq!(partial["progress"]["agents_provisioned"], 30);
    assert!(
        partial["progress"]["in_flight"].as_u64().unwrap() > 0,
        "{partial}"
    );
    let scenario = std::fs::read_to_string(run.out_dir.join("scenario.toml")).unwrap();
    assert!(scenario.contains("agents = 30"), "{scenario}");
}
