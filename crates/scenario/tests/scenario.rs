//! Scenario files: the committed ones validate; bad ones are refused with every problem located.
//!
//! Contents:
//! - committed: every `scenarios/*.toml` loads and plans.
//! - errors: unknown keys, bad durations and thresholds, unknown operations, impossible stages,
//!   each with file, line and column, all in one pass.
//! - overrides: `--set` reaches plain keys and array elements; a bad path is refused.

use std::path::PathBuf;
use std::time::Duration;

use fleetbench_scenario::{load_file, load_str};

fn scenarios_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios"))
}

#[test]
fn committed_scenarios_validate() {
    // Scenario files name traces and profiles relative to the repository root, where fleetbench runs.
    std::env::set_current_dir(scenarios_dir().parent().unwrap()).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (_, plan, _) = load_file(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert!(plan.duration() > Duration::ZERO);
            names.push(plan.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "claims",
            "goose-cross-check",
            "offline-burst",
            "ramp",
            "replay",
            "smoke",
            "steady"
        ]
    );
    // The claims scenario runs every probe.
    let (_, claims, _) = load_file(&scenarios_dir().join("claims.toml"), &[]).unwrap();
    assert_eq!(
        claims.probes.names(),
        fleetbench_scenario::probes::PROBES.to_vec()
    );
}

#[test]
fn probe_sections_are_typed_defaulted_and_located() {
    // A section alone enables its probe with every default.
    let (_, plan, _) = load_str(
        &format!("{GOOD}[probes.rls]\n[probes.realtime]\n"),
        "p.toml",
        &[],
    )
    .unwrap();
    assert_eq!(plan.probes.names(), ["realtime", "rls"]);
    let rt = plan.probes.realtime.unwrap();
    assert_eq!(
        (rt.subscribers, rt.alerts, rt.interval),
        (10, 50, Duration::from_millis(200))
    );
    // Bad values point at their section; unknown keys and probes are refused.
    let bad = format!("{GOOD}[probes.rag]\nk = 0\nrate = \"fast\"\n");
    let e = load_str(&bad, "p.toml", &[]).unwrap_err().to_string();
    assert!(
        e.contains("p.toml:10:1: probes.rag.k must be at least 1"),
        "{e}"
    );
    assert!(
        e.contains("p.toml:12:8") && e.contains("\"fast\" is not a rate"),
        "{e}"
    );
    let e = load_str(
        &format!("{GOOD}[probes.pooler]\nclient = 5\n"),
        "p.toml",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `client`"), "{e}");
    let e = load_str(&format!("{GOOD}[probes.nope]\n"), "p.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `nope`"), "{e}");
    // `fleetbench probe NAME --set`: section keys or full paths.
    let p = fleetbench_scenario::probe_plan(
        "webhook",
        &[
            "alerts=7".into(),
            "probes.webhook.listen=\"127.0.0.1:0\"".into(),
        ],
    )
    .unwrap();
    let w = p.webhook.unwrap();
    assert_eq!(
        (w.alerts, w.listen),
        (7, Some("127.0.0.1:0".parse().unwrap()))
    );
    assert!(fleetbench_scenario::probe_plan("nope", &[]).is_err());
    let e = fleetbench_scenario::probe_plan("partitions", &["months=40".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 12"), "{e}");
}

const GOOD: &str = r#"name = "t"
[fleet]
agents = 10
[[load.stages]]
duration = "10s"
agents = 10
[workload]
sample_interval = "1s"
upload_interval = "5s"
"#;

#[test]
fn every_problem_is_reported_with_its_location() {
    let bad = r#"name = "t"
[fleet]
agents = 10
[[load.stages]]
duration = "ten seconds"
agents = 50
[workload]
sample_interval = "1s"
upload_interval = "5s"
ingest = { rest = 1, carrier_pigeon = 1 }
[thresholds]
"rest.insert_metrics" = ["p(99) < 250ms", "p99 < 1s"]
"rest.teleport" = ["p(99) < 1s"]
"#;
    let err = load_str(bad, "bad.toml", &[]).unwrap_err();
    let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    let expect = [
        ("bad.toml:5:12:", "not a duration"),
        ("bad.toml:6:10:", "fleet.agents is 10"),
        ("bad.toml:10:22:", "carrier_pigeon"),
        ("bad.toml:12:43:", "unknown threshold metric"),
        ("bad.toml:13:1:", "rest.teleport"),
    ];
    assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    for (line, (at, what)) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(at) && line.contains(what),
            "{line} (wanted {at} … {what})"
        );
    }

    let unknown = GOOD.replace("agents = 10\n[[", "agents = 10\nagnets = 3\n[[");
    let err = load_str(&unknown, "typo.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("typo.toml:4:1:") && err.contains("agnets"),
        "{err}"
    );
}

#[test]
fn load_models_check_their_own_stage_keys() {
    let bad = r#"name = "t"
[fleet]
agents = 10
connections = 0
[load]
model = "arrival_rate"
[[load.stages]]
duration = "10s"
rate = "fast"
[[load.stages]]
duration = "10s"
agents = 5
rate = "5/s"
[[load.stages]]
duration = "10s"
[workload]
sample_interval = "1s"
upload_interval = "5s"
think_time = "1s"
iterations = 3
"#;
    let err = load_str(bad, "rate.toml", &[]).unwrap_err();
    let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    let expect = [
        ("rate.toml:9:8:", "not a rate"),
        ("rate.toml:12:10:", "not `agents`"),
        ("rate.toml:15:12:", "no `rate`"),
        ("rate.toml:19:14:", "closed"),
        (
            "rate.toml:20:14:",
            "iterations applies to load.model = \"closed\"",
        ),
        ("rate.toml:4:15:", "connections must be at least 1"),
    ];
    assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    for (line, (at, what)) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(at) && line.contains(what),
            "{line} (wanted {at} … {what})"
        );
    }
    // A rate in a model of agents, and an unknown model.
    let stray = GOOD.replace(
        "agents = 10
[workload]",
        "agents = 10
rate = \"3/s\"\n[workload]",
    );
    let err = load_str(&stray, "stray.toml", &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("stray.toml:7:8:") && err.contains("arrival_rate"),
        "{err}"
    );
    let unknown = GOOD.replace(
        "[[load.stages]]",
        "[load]\nmodel = \"poisson\"\n[[load.stages]]",
    );
    let err = load_str(&unknown, "model.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("model.toml:5:9:") && err.contains("closed"),
        "{err}"
    );
    // Rates per second, minute and hour plan to the same per-second levels.
    for (text, per_s) in [
        ("\"120/s\"", 120.0),
        ("\"600/m\"", 10.0),
        ("\"36/h\"", 0.01),
    ] {
        let ok = format!(
            "name = \"t\"\n[fleet]\nagents = 3\n[load]\nmodel = \"arrival_rate\"\n[[load.stages]]\nduration = \"1s\"\nrate = {text}\n[workload]\nsample_interval = \"1s\"\nupload_interval = \"1s\"\n"
        );
        let plan = load_str(&ok, "ok.toml", &[]).unwrap().1;
        assert!((plan.stages[0].1 - per_s).abs() < 1e-12, "{text}");
        assert_eq!(plan.agents_needed(), 3);
    }
}

#[test]
fn thresholds_take_k6_object_form_with_abort_on_fail() {
    let ok = GOOD.to_string()
        + "[thresholds]\n\"rest.insert_metrics\" = [\"p(99) < 1s\", { threshold = \"error_rate < 5%\", abort_on_fail = true, delay_abort_eval = \"30s\" }]\n";
    let plan = load_str(&ok, "ok.toml", &[]).unwrap().1;
    assert_eq!(plan.thresholds.len(), 2);
    assert!(!plan.thresholds[0].abort_on_fail);
    assert!(plan.thresholds[1].abort_on_fail);
    assert_eq!(plan.thresholds[1].delay_abort_eval, Duration::from_secs(30));
    // k6's spellings of the same keys.
    let k6 = GOOD.to_string()
        + "[thresholds]\n\"rest.insert_metrics\" = [{ threshold = \"error_rate < 5%\", abortOnFail = true, delayAbortEval = \"20s\" }]\n";
    let plan = load_str(&k6, "k6.toml", &[]).unwrap().1;
    assert!(plan.thresholds[0].abort_on_fail);
    assert_eq!(plan.thresholds[0].delay_abort_eval, Duration::from_secs(20));
    for (bad, what) in [
        (
            "{ threshold = \"p(99) < 1s\", abort_on_fail = true, abortOnFail = false }",
            "the same setting",
        ),
        (
            "{ threshold = \"p(99) < 1s\", abort = true }",
            "unknown key \"abort\"",
        ),
        ("{ abort_on_fail = true }", "no `threshold"),
        (
            "{ threshold = \"p(99) < 1s\", abort_on_fail = \"yes\" }",
            "true or false",
        ),
        (
            "{ threshold = \"p(99) < 1s\", delay_abort_eval = \"soon\" }",
            "duration",
        ),
        ("42", "a threshold is a string"),
    ] {
        let text = GOOD.to_string() + &format!("[thresholds]\n\"rest.insert_metrics\" = [{bad}]\n");
        let err = load_str(&text, "bad.toml", &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("bad.toml:11:26:") && err.contains(what),
            "{bad}: {err}"
        );
    }
}

#[test]
fn overrides_reach_any_key() {
    let (s, plan, resolved) = load_str(
        GOOD,
        "good.toml",
        &[
            "fleet.agents=5000".into(),
            "load.stages.0.agents=4000".into(),
            "workload.upload_interval=10s".into(),
        ],
    )
    .unwrap();
    assert_eq!(*s.fleet.agents.get_ref(), 5000);
    assert_eq!(plan.stages, vec![(Duration::from_secs(10), 4000.0)]);
    assert_eq!(plan.batch_rows, 10);
    assert!(resolved.contains("agents = 5000"), "{resolved}");

    let err = load_str(GOOD, "good.toml", &["load.stages.7.agents=1".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--set") && err.contains("load.stages.7.agents"),
        "{err}"
    );
    let err = load_str(GOOD, "good.toml", &["fleet.agents=0".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("as resolved with --set")
            && err.contains("fleet.agents: ")
            && err.contains("at least 1"),
        "{err}"
    );
    // The resolved text's lines are not the user's: the key is named, arrays by index.
    let err = load_str(
        GOOD,
        "good.toml",
        &["load.stages.0.duration=\"soon\"".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("load.stages.0.duration: "), "{err}");
    let err = load_str(GOOD, "good.toml", &["fleet.agents=\"many\"".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("fleet.agents: "), "{err}");
}

#[test]
fn profile_files_and_replay_are_checked_where_they_are_written() {
    let root = scenarios_dir().parent().unwrap().to_path_buf();
    std::env::set_current_dir(&root).unwrap();
    // The committed scenario: its profiles join the mix by name, its traces exist.
    let (_, plan, _) = load_file(&scenarios_dir().join("replay.toml"), &[]).unwrap();
    let names: Vec<&str> = plan
        .custom_profiles
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["vm-idle", "vm-build"]);
    assert_eq!(plan.replay.as_ref().unwrap().traces.len(), 2);
    assert_eq!(plan.collectors, 1);
    // A missing trace, a missing profile file and a profile name not defined anywhere.
    let bad = format!(
        "{GOOD}collectors = 2\n[workload.replay]\ntraces = [\"nope.jsonl\"]\ntime_scale = 0.0\n"
    );
    let e = load_str(&bad, "r.toml", &[]).unwrap_err().to_string();
    assert!(
        e.contains("r.toml:12:11") && e.contains("no file \"nope.jsonl\""),
        "{e}"
    );
    assert!(e.contains("time_scale above 0"), "{e}");
    let bad = GOOD.replace(
        "agents = 10\n[[load",
        "agents = 10\nprofile_files = [\"missing.toml\"]\nprofiles = { mine = 1.0 }\n[[load",
    );
    let e = load_str(&bad, "p.toml", &[]).unwrap_err().to_string();
    assert!(
        e.contains("fleet.profile_files") && e.contains("missing.toml"),
        "{e}"
    );
    assert!(e.contains("unknown device profile \"mine\""), "{e}");
}

#[test]
fn delivery_shares_default_to_the_whole_plan_and_are_checked() {
    let (_, plan, _) = load_str(GOOD, "good.toml", &[]).unwrap();
    assert_eq!((plan.delivery.agents, plan.delivery.dropped), (1.0, 0.01));
    let loose = format!("{GOOD}[delivery]\nagents = 0.9\ndropped = 0.05\n");
    let (_, plan, _) = load_str(&loose, "loose.toml", &[]).unwrap();
    assert_eq!((plan.delivery.agents, plan.delivery.dropped), (0.9, 0.05));
    let bad = format!("{GOOD}[delivery]\nagents = 90\n");
    let err = load_str(&bad, "bad.toml", &[]).unwrap_err().to_string();
    let line = bad.lines().count();
    assert!(
        err.starts_with(&format!("bad.toml:{line}:10:")) && err.contains("delivery.agents"),
        "{err}"
    );
}

/// Durations from untrusted text are bounded: two stages of 500 billion years each used to
/// overflow `Duration` when added (a panic); a window of 1 µs was accepted.
#[test]
fn durations_and_windows_are_bounded() {
    let huge = GOOD.replace(
        "duration = \"10s\"\nagents = 10\n",
        "duration = \"500000000000y\"\nagents = 10\n[[load.stages]]\nduration = \"500000000000y\"\nagents = 10\n",
    );
    let err = load_str(&huge, "huge.toml", &[]).unwrap_err().to_string();
    assert!(
        err.contains("huge.toml:5:12:") && err.contains("longer than 31 days"),
        "{err}"
    );
    let err = load_str(GOOD, "w.toml", &["output.window=\"1us\"".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("output.window") && err.contains("under 10ms"),
        "{err}"
    );
    assert!(load_str(GOOD, "w.toml", &["output.window=\"10ms\"".into()]).is_ok());
    assert!(load_str(GOOD, "w.toml", &["load.stages.0.duration=\"31d\"".into()]).is_ok());
}

/// The scenario is published with the run: a remote-write URL with credentials is refused, and the
/// message does not repeat them.
#[test]
fn remote_write_credentials_never_sit_in_the_scenario() {
    let with = |url: &str| {
        load_str(
            GOOD,
            "rw.toml",
            &[format!("output.prometheus_remote_write=\"{url}\"")],
        )
    };
    let err = with("https://user:hunter2@prom.example/api/v1/write")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("FLEETBENCH_RW_USERNAME") && !err.contains("hunter2"),
        "{err}"
    );
    let err = with("ftp://hunter2@prom.example/").unwrap_err().to_string();
    assert!(
        err.contains("not an http") && !err.contains("hunter2"),
        "{err}"
    );
    assert!(with("https://prom.example/api/v1/write").is_ok());
}
