//! `collect` and `calibrate` through the binary.

use super::*;

#[test]
fn collect_records_a_trace_that_calibrate_fits_and_a_scenario_uses() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("here.jsonl");
    let printed = ok(fleetbench(
        dir.path(),
        &[
            "collect",
            "--interval",
            "200ms",
            "--duration",
            "2s",
            "--out",
            trace.to_str().unwrap(),
        ],
    ));
    assert_eq!(printed.trim(), trace.display().to_string());
    let read = fleetbench_collector::trace::Trace::read(&trace).unwrap();
    assert_eq!(read.readings.len(), 10);
    assert_eq!(read.header.interval_ms, 200);
    assert!(
        read.readings
            .windows(2)
            .all(|w| w[1].t_ms == w[0].t_ms + 200)
    );
    let profile = dir.path().join("here.toml");
    let printed = ok(fleetbench(
        dir.path(),
        &[
            "calibrate",
            trace.to_str().unwrap(),
            "--name",
            "here",
            "--out",
            profile.to_str().unwrap(),
        ],
    ));
    assert!(
        printed.contains("cpu_pct") && printed.trim().ends_with(&profile.display().to_string())
    );
    let p = fleetbench_scenario::profile::DeviceProfile::load(&profile).unwrap();
    assert_eq!(
        (p.name.as_str(), p.cores as usize),
        ("here", std::thread::available_parallelism().unwrap().get())
    );
    let page = std::fs::read_to_string(dir.path().join("here.html")).unwrap();
    assert_eq!(
        page.matches("<svg").count(),
        3,
        "one comparison chart per metric"
    );
    // The profile and the trace in a scenario.
    let smoke = std::fs::read_to_string(workspace_root().join("scenarios/smoke.toml")).unwrap();
    let scenario = dir.path().join("mine.toml");
    std::fs::write(
        &scenario,
        smoke
            .replace(
                "profiles = { laptop = 0.6, desktop = 0.3, workstation = 0.1 }",
                &format!(
                    "profile_files = [{:?}]\nprofiles = {{ here = 1.0 }}",
                    profile.display().to_string()
                ),
            )
            .replace(
                "[thresholds]",
                &format!(
                    "[workload.replay]\ntraces = [{:?}]\n\n[thresholds]",
                    trace.display().to_string()
                ),
            ),
    )
    .unwrap();
    ok(fleetbench(
        dir.path(),
        &["scenarios", "validate", scenario.to_str().unwrap()],
    ));
    // Neither --out nor --push: nothing to do, exit 2.
    let out = fleetbench(dir.path(), &["collect"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out FILE"));
}
