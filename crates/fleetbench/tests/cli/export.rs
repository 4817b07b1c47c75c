//! The live export against a real Prometheus (Debian's, installed by the project's own code,
//! started here with its remote-write receiver on a free port): a run against a sink with a burst
//! of 503s pushes once a second; the values queried back from Prometheus's HTTP API equal
//! `summary.json`'s (counts, errors by kind, percentiles from the intended start and from the
//! send), the samples span the run, and every query of the committed Grafana dashboard names only
//! series the export writes and returns data for the run.

use std::collections::BTreeMap;

use super::*;

/// A Prometheus of the test's own, killed when dropped.
pub struct Prometheus {
    child: std::process::Child,
    pub url: String,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn prometheus() -> Prometheus {
    let bin = tokio::task::spawn_blocking(|| {
        fleetbench_stack::install::ensure_prometheus(&mut |l| eprintln!("[prometheus] {l}"))
            .expect("installing prometheus")
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let port = fleetbench_stack::process::free_port(None).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--web.enable-remote-write-receiver", "--log.level=warn"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed when dropped, a failed start included.
    let prometheus = Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _data: data,
    };
    let http = reqwest::Client::new();
    // Ready when its readiness endpoint says so (it answers 503 while the TSDB opens).
    for _ in 0..300 {
        let ready = http.get(format!("{}/-/ready", prometheus.url)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return prometheus;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("prometheus on {} never became ready", prometheus.url);
}

/// An instant query: each result's labels and value.
pub async fn query(prom: &str, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let url = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", expr)])
        .unwrap();
    let r: serde_json::Value = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "success", "{expr}: {r}");
    r["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let labels = serde_json::from_value(x["metric"].clone()).unwrap();
            let value = x["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect()
}

/// The one value of `expr`.
pub async fn one(prom: &str, expr: &str) -> f64 {
    let r = query(prom, expr).await;
    assert_eq!(r.len(), 1, "{expr}: {r:?}");
    r[0].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_series_reach_prometheus_and_end_equal_to_the_summary() {
    let prom = prometheus().await;
    let (url, _sink) = sink_on("127.0.0.1", "2ms", None, &["status:503@2s..3s".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("export.toml");
    std::fs::write(
        &scenario,
        "name = \"export\"\n[fleet]\nagents = 8\n[load]\ngrace = \"2s\"\n[[load.stages]]\nduration = \"0s\"\nagents = 8\n\
         [[load.stages]]\nduration = \"4s\"\nagents = 8\n[workload]\nsample_interval = \"100ms\"\nupload_interval = \"200ms\"\n\
         ingest = { rest = 1.0 }\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let write_url = format!("{}/api/v1/write", prom.url);
    let (code, stderr) = run_remote(
        &scenario,
        &out,
        &["--prometheus-remote-write", &write_url],
        &url,
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let pushes: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("run: remote write: "))
        .and_then(|l| l.strip_suffix(" pushes"))
        .unwrap_or_else(|| panic!("no account of the pushes in:\n{stderr}"))
        .parse()
        .unwrap();
    assert!(pushes >= 4, "{pushes} pushes for a 4 s load");
    let summary = complete_run_dir(&out, "export");
    let run = summary["run_id"].as_str().unwrap();
    let op = "rest.insert_metrics";
    let s = &summary["operations"][op];
    let sel = format!("run_id=\"{run}\",operation=\"{op}\"");
    let p = &prom.url;

    // The last values are the summary's.
    let count = one(p, &format!("fleetbench_requests_total{{{sel}}}")).await;
    assert_eq!(count, s["count"].as_f64().unwrap());
    // Shard-safe: every series names its shard (0, a whole run) and the machine that wrote it.
    let (labels, _) = &query(p, &format!("fleetbench_requests_total{{{sel}}}")).await[0];
    assert_eq!(
        labels.get("shard").map(String::as_str),
        Some("0"),
        "{labels:?}"
    );
    assert!(
        labels.get("instance").is_some_and(|i| !i.is_empty()),
        "{labels:?}"
    );
    let errors = s["errors_by_kind"].as_object().unwrap();
    assert!(
        errors.get("http_503").is_some_and(|n| n.as_u64() > Some(0)),
        "{s}"
    );
    for (kind, n) in errors {
        let got = one(
            p,
            &format!("fleetbench_errors_total{{{sel},kind=\"{kind}\"}}"),
        )
        .await;
        assert_eq!(got, n.as_f64().unwrap(), "{kind}");
    }
    for (from, key) in [("intended", "latency_ms"), ("send", "service_ms")] {
        for (q, field) in [
            ("0.5", "p50"),
            ("0.95", "p95"),
            ("0.99", "p99"),
            ("1", "max"),
        ] {
            let got = one(
                p,
                &format!("fleetbench_latency_ms{{{sel},from=\"{from}\",quantile=\"{q}\"}}"),
            )
            .await;
            assert_eq!(got, s[key][field].as_f64().unwrap(), "{from} {field}");
        }
    }
    // Live: a sample a second through the run, the agents and the planned load among them.
    let samples = one(
        p,
        &format!("count_over_time(fleetbench_requests_total{{{sel}}}[10m])"),
    )
    .await;
    assert!(samples >= 4.0, "{samples} samples");
    let active = one(
        p,
        &format!("max_over_time(fleetbench_active_agents{{run_id=\"{run}\"}}[10m])"),
    )
    .await;
    assert_eq!(active, 8.0);
    let planned = one(
        p,
        &format!("max_over_time(fleetbench_planned_load{{run_id=\"{run}\"}}[10m])"),
    )
    .await;
    assert_eq!(planned, 8.0);

    // The Grafana dashboard: every query names written series only, and has data for this run.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/grafana/fleetbench-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let names = fleetbench_runner::remote_write::NAMES;
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let named: Vec<&str> = expr
                .match_indices("fleetbench_")
                .map(|(i, _)| {
                    let rest = &expr[i..];
                    &rest[..rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len())]
                })
                .collect();
            assert!(!named.is_empty(), "{expr}");
            assert!(
                named.iter().all(|n| names.contains(n)),
                "{expr} names {named:?}"
            );
            let result = query(p, &expr.replace("$run_id", run)).await;
            assert!(!result.is_empty(), "{expr}: no data for the run");
            queries += 1;
        }
    }
    assert!(queries >= 6, "{queries}");
    let variable = &dashboard["templating"]["list"][0]["query"];
    assert!(
        variable
            .as_str()
            .unwrap()
            .contains("fleetbench_requests_total")
    );
}

/// The run in `summary` reached Prometheus: each operation's last count there is the summary's.
pub async fn exported(prom: &Prometheus, summary: &serde_json::Value) {
    let run = summary["run_id"].as_str().unwrap();
    for (op, s) in summary["operations"].as_object().unwrap() {
        let got = one(
            &prom.url,
            &format!("fleetbench_requests_total{{run_id=\"{run}\",operation=\"{op}\"}}"),
        )
        .await;
        assert_eq!(got, s["count"].as_f64().unwrap(), "{op}");
    }
}

/// Remote-write credentials come from the environment: every push carries them, and neither the
/// run's output nor its directory does (the scenario, which the directory keeps, holds the URL
/// alone). Without them the endpoint's 401 is reported with its scheme and host only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_credentials_come_from_the_environment_and_are_published_nowhere() {
    use base64::Engine as _;
    let password = format!("rw-{}", uuid::Uuid::new_v4().simple());
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("fleet:{password}"))
    );
    // A receiver that records each push's Authorization and refuses a wrong one.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let app = {
        let (seen, expected) = (seen.clone(), expected.clone());
        axum::Router::new().route(
            "/api/v1/write",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap_or("").to_string())
                    .unwrap_or_default();
                let ok = auth == expected;
                seen.lock().unwrap().push(auth);
                async move {
                    if ok {
                        axum::http::StatusCode::NO_CONTENT
                    } else {
                        axum::http::StatusCode::UNAUTHORIZED
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (url, _sink) = sink("1ms").await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("rw.toml");
    std::fs::write(
        &scenario,
        "name = \"rw\"\n[fleet]\nagents = 2\n[[load.stages]]\nduration = \"2s\"\nagents = 2\n\
         [workload]\nsample_interval = \"100ms\"\nupload_interval = \"500ms\"\ningest = { rest = 1.0 }\n",
    )
    .unwrap();
    let run = |out: &Path, auth: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetbench"));
        cmd.arg("run").arg(&scenario).arg("--out").arg(out);
        cmd.args([
            "--prometheus-remote-write",
            &format!("{receiver}/api/v1/write"),
        ])
        .env("SUPABASE_URL", &url)
        .env("SUPABASE_ANON_KEY", "anon")
        .env("SUPABASE_SERVICE_ROLE_KEY", "service")
        .env_remove("SUPABASE_DB_URL");
        if auth {
            cmd.env("FLEETBENCH_RW_USERNAME", "fleet")
                .env("FLEETBENCH_RW_PASSWORD", &password);
        }
        tokio::task::block_in_place(|| cmd.output().unwrap())
    };
    let out = dir.path().join("with");
    let with = run(&out, true);
    let stderr = String::from_utf8_lossy(&with.stderr);
    assert_eq!(with.status.code(), Some(0), "{stderr}");
    let pushes = seen.lock().unwrap().clone();
    assert!(
        pushes.len() >= 2 && pushes.iter().all(|a| *a == expected),
        "{pushes:?}"
    );
    assert!(
        stderr.contains(&format!("run: remote write: {} pushes", pushes.len())),
        "{stderr}"
    );
    let mut published = vec![
        stderr.into_owned(),
        String::from_utf8_lossy(&with.stdout).into(),
    ];
    for entry in std::fs::read_dir(&out).unwrap() {
        published
            .push(String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).into());
    }
    assert!(published.len() >= 8);
    for text in &published {
        assert!(
            !text.contains(&password) && !text.contains(&expected[6..]),
            "{text:.300}"
        );
    }
    // Without the credentials: refused, said with the endpoint's scheme and host only.
    let without = run(&dir.path().join("without"), false);
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(
        stderr.contains(&format!("(last: {receiver} answered 401 Unauthorized)")),
        "{stderr}"
    );
}
