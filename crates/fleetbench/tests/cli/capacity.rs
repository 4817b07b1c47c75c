//! `capacity` against a sink with a known knee.

use super::*;

#[tokio::test]
async fn capacity_finds_the_knee_of_a_saturating_sink() {
    // The sink serves 400 inserts a second, one at a time: the truth the search must find.
    let (url, _sink) = sink_on("127.0.0.1", "2ms", Some(400.0), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("cap.toml");
    std::fs::write(
        &scenario,
        "name = \"cap\"\n[fleet]\nagents = 1000\n[load]\nmodel = \"arrival_rate\"\ngrace = \"2s\"\n[[load.stages]]\nduration = \"5s\"\nrate = \"800/s\"\n[workload]\nsample_interval = \"1s\"\nupload_interval = \"1s\"\ningest = { rest = 1.0 }\n",
    )
    .unwrap();
    let run = |out: &Path| {
        let (scenario, out, url) = (scenario.clone(), out.to_path_buf(), url.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_fleetbench"))
                .args([
                    "capacity",
                    scenario.to_str().unwrap(),
                    "--slo",
                    "rest.insert_metrics: p(99) < 100ms",
                ])
                .args([
                    "--start",
                    "100",
                    "--max",
                    "800",
                    "--warmup",
                    "1s",
                    "--hold",
                    "2s",
                    "--resolution",
                    "10%",
                ])
                .args(["--out", out.to_str().unwrap()])
                .env("SUPABASE_URL", url)
                .env("SUPABASE_ANON_KEY", "x")
                .env("SUPABASE_SERVICE_ROLE_KEY", "x")
                .output()
                .unwrap()
        })
    };
    let out_dir = dir.path().join("cap");
    let out = run(&out_dir).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("capacity.json")).unwrap())
            .unwrap();
    let knee = report["knee_uploads_per_s"].as_f64().unwrap();
    assert!(
        (knee - 400.0).abs() <= 40.0,
        "knee {knee} for a 400/s sink: {report}"
    );
    assert!(
        report["outcome"]["broke_first"]
            .as_str()
            .unwrap()
            .contains("p(99) < 100ms")
    );
    // Past the knee the target completes what it can: 400 a second, whatever was offered.
    let steps = report["outcome"]["steps"].as_array().unwrap();
    let top = steps.iter().find(|s| s["level"] == 800.0).unwrap();
    assert!(
        (top["achieved_per_s"].as_f64().unwrap() - 400.0).abs() <= 40.0,
        "{top}"
    );
    let page = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("Capacity model by compute size"));
    // The sink's compute size is unknown: no model is extrapolated from this machine's cores.
    assert!(report["model"].as_array().unwrap().is_empty(), "{report}");
    assert!(
        report["target_size"]
            .as_str()
            .unwrap()
            .starts_with("unknown ("),
        "{report}"
    );
    // `compare` understands capacity runs: a baseline that sustained more is a regression.
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    let mut doctored = report.clone();
    doctored["knee_uploads_per_s"] = (knee * 1.5).into();
    std::fs::write(base.join("capacity.json"), doctored.to_string()).unwrap();
    let cmp = |b: &Path| {
        Command::new(env!("CARGO_BIN_EXE_fleetbench"))
            .args(["compare", b.to_str().unwrap(), out_dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let worse = cmp(&base);
    assert_eq!(
        worse.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&worse.stderr)
    );
    assert!(String::from_utf8_lossy(&worse.stdout).contains("REGRESSED capacity knee"));
    assert!(cmp(&out_dir).status.success());
}
