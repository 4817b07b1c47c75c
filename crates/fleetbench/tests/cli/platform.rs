//! The hosted double's platform APIs, called as staging tooling calls hosted ones: the Management
//! API's Auth configuration (read, changed, and followed by the next request and by fleetbench's
//! own planning) and the Prometheus-format Metrics API (parsed as Prometheus text, its counters
//! checked against a burst of known size). Called from the hosted test, on its stack.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::hosted::{fleetbench_with, trusting};
use super::*;

fn config_url(env: &BTreeMap<String, String>, project_ref: &str) -> String {
    format!(
        "{}/v1/projects/{project_ref}/config/auth",
        env["FLEETBENCH_MANAGEMENT_API"]
    )
}

async fn patch(env: &BTreeMap<String, String>, body: Value) -> (u16, Value) {
    let r = trusting(env)
        .patch(config_url(env, &env["SUPABASE_PROJECT_REF"]))
        .bearer_auth(&env["SUPABASE_ACCESS_TOKEN"])
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `n` password grants with a wrong password from this address: their statuses (400, or 429 once
/// the bucket is empty).
async fn token_calls(env: &BTreeMap<String, String>, n: usize) -> Vec<u16> {
    let http = trusting(env);
    let mut statuses = Vec::new();
    for _ in 0..n {
        let r = http
            .post(format!(
                "{}/auth/v1/token?grant_type=password",
                env["SUPABASE_URL"]
            ))
            .header("apikey", &env["SUPABASE_PUBLISHABLE_KEY"])
            .json(&json!({ "email": "nobody@fleetbench.test", "password": "wrong-password" }))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses
}

/// A dry run's stderr, and whether it exited 0.
fn dry_run(dir: &Path, env: &BTreeMap<String, String>) -> (bool, String) {
    let out = fleetbench_with(dir, env, &["run", "scenarios/smoke.toml", "--dry-run"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET and PATCH with the personal access token; a raised `/token` limit holds for the very next
/// calls; a new access-token lifetime is the next sign-in's; fleetbench plans with what the API says
/// and refuses forwarding the project has off. Leaves the settings as it found them.
pub async fn management_api(dir: &Path, env: &BTreeMap<String, String>) {
    let http = trusting(env);
    let project_ref = &env["SUPABASE_PROJECT_REF"];
    let anonymous = http.get(config_url(env, project_ref)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let other = http
        .get(config_url(env, "abcdefghijklmnopqrst"))
        .bearer_auth(&env["SUPABASE_ACCESS_TOKEN"])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let config: Value = http
        .get(config_url(env, project_ref))
        .bearer_auth(&env["SUPABASE_ACCESS_TOKEN"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // supabase/config.toml's values, and `stack up --ip-forwarding`.
    assert_eq!(config["rate_limit_token_refresh"], 150, "{config}");
    assert_eq!(config["jwt_exp"], 3600, "{config}");
    assert_eq!(
        config["security_sb_forwarded_for_enabled"], true,
        "{config}"
    );
    let (status, refused) = patch(env, json!({ "no_such_setting": 1 })).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("no_such_setting")
    );

    // 3,000,000 per 5 min: 10,000 a second, far faster than calls arrive: 100 in a row, none 429
    // (at 150 the 31st would be).
    let (status, changed) = patch(
        env,
        json!({ "rate_limit_token_refresh": 3_000_000, "jwt_exp": 120 }),
    )
    .await;
    assert_eq!(
        (status, &changed["rate_limit_token_refresh"]),
        (200, &json!(3_000_000))
    );
    let statuses = token_calls(env, 100).await;
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    let (ok, said) = dry_run(dir, env);
    assert!(ok, "{said}");
    assert!(
        said.contains("/token 3000000 per 5 min per address, access tokens live 120 s, IP address forwarding on"),
        "{said}"
    );
    let session = sign_in(env).await;
    assert_eq!(session["expires_in"], 120, "{session}");

    // Forwarding asked of a project that has it off: refused before anything is sent.
    let (status, _) = patch(env, json!({ "security_sb_forwarded_for_enabled": false })).await;
    assert_eq!(status, 200);
    let mut forwarding = env.clone();
    forwarding.insert("FLEETBENCH_IP_FORWARDING".into(), "on".into());
    let (ok, said) = dry_run(dir, &forwarding);
    assert!(
        !ok && said.contains("IP address forwarding is off"),
        "{said}"
    );

    let restore = json!({ "rate_limit_token_refresh": 150, "jwt_exp": 3600, "security_sb_forwarded_for_enabled": true });
    let (status, restored) = patch(env, restore).await;
    assert_eq!(status, 200, "{restored}");
    // Back at 150 per 5 min: the burst, then 429.
    let statuses = token_calls(env, 40).await;
    let first_429 = statuses.iter().position(|s| *s == 429);
    assert!(first_429.is_some_and(|i| i <= 30), "{statuses:?}");
}

/// A user made with the secret key, signed in with the publishable key: the session.
async fn sign_in(env: &BTreeMap<String, String>) -> Value {
    let (url, http) = (&env["SUPABASE_URL"], trusting(env));
    let secret = &env["SUPABASE_SECRET_KEY"];
    let email = format!("platform-{}@fleetbench.test", std::process::id());
    let user = json!({ "email": email, "password": "secret123", "email_confirm": true });
    let created = http
        .post(format!("{url}/auth/v1/admin/users"))
        .header("apikey", secret)
        .bearer_auth(secret)
        .json(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    http.post(format!("{url}/auth/v1/token?grant_type=password"))
        .header("apikey", &env["SUPABASE_PUBLISHABLE_KEY"])
        .json(&json!({ "email": email, "password": "secret123" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One scrape's text.
async fn scrape_text(env: &BTreeMap<String, String>) -> String {
    trusting(env)
        .get(format!(
            "{}/customer/v1/privileged/metrics",
            env["SUPABASE_URL"]
        ))
        .basic_auth("service_role", Some(&env["SUPABASE_SECRET_KEY"]))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One scrape, parsed as Prometheus text: each sample's name and labels (but where it comes
/// from) to its value.
pub async fn scrape(env: &BTreeMap<String, String>) -> BTreeMap<String, f64> {
    let text = scrape_text(env).await;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| !fleetbench_runner::server::PROVENANCE.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

/// Each family's label names (every label, where it comes from included).
fn label_names(text: &str) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for s in parsed.samples {
        out.entry(s.metric.clone())
            .or_default()
            .extend(s.labels.keys().cloned());
    }
    out
}

/// The double serves every series the client reads with hosted's label names
/// (`fixtures/hosted/metrics-api.prom`, from Supabase's published exposition), but for the
/// dedicated PgBouncer's, which it does not run.
async fn metrics_api_has_hosted_shapes(env: &BTreeMap<String, String>) {
    let fixture =
        std::fs::read_to_string(workspace_root().join("fixtures/hosted/metrics-api.prom")).unwrap();
    let hosted = label_names(&fixture);
    let double = label_names(&scrape_text(env).await);
    for family in fleetbench_metrics::server::SERIES {
        if family.starts_with("pgbouncer_") {
            continue;
        }
        let (Some(h), Some(d)) = (hosted.get(family), double.get(family)) else {
            panic!(
                "{family}: hosted has {:?}, the double {:?}",
                hosted.get(family),
                double.get(family)
            );
        };
        assert_eq!(d, h, "{family}: the double's labels differ from hosted's");
    }
    assert!(
        !double.keys().any(|f| f.starts_with("pgbouncer_")),
        "the double runs no dedicated PgBouncer"
    );
}

/// Basic auth as hosted; the compute size's limits; Postgres's counters rise by a burst of known
/// size (50 single-row transactions in a table of this test's own), the processes' CPU and I/O.
pub async fn metrics_api(env: &BTreeMap<String, String>) {
    let url = format!("{}/customer/v1/privileged/metrics", env["SUPABASE_URL"]);
    let http = trusting(env);
    for password in [None, Some(&env["SUPABASE_PUBLISHABLE_KEY"])] {
        let r = http
            .get(&url)
            .basic_auth("service_role", password)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let legacy = http
        .get(&url)
        .basic_auth("service_role", Some(&env["SUPABASE_SERVICE_ROLE_KEY"]))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 200);
    let db = fleetbench_tls::pg::connect(&env["SUPABASE_DB_SESSION_URL"])
        .await
        .unwrap();
    db.batch_execute("create table if not exists metrics_burst (n int)")
        .await
        .unwrap();
    let before = scrape(env).await;
    for n in 0..50 {
        db.execute("insert into metrics_burst values ($1)", &[&n])
            .await
            .unwrap();
    }
    // The backend's counters reach the shared statistics before its next ReadyForQuery.
    db.batch_execute("select pg_stat_force_next_flush()")
        .await
        .unwrap();
    let after = scrape(env).await;
    let delta = |name: &str| after[name] - before[name];
    for counter in [
        "pg_stat_database_tup_inserted_total{}",
        "pg_stat_database_xact_commit_total{}",
    ] {
        // The burst, and at most a little of the stack's own activity (Realtime's polls commit).
        let d = delta(counter);
        assert!((50.0..250.0).contains(&d), "{counter} rose by {d}");
    }
    // Micro, the hosted profile's default size.
    assert_eq!(after["max_connections_connection_count{}"], 60.0);
    assert_eq!(after["pg_up{}"], 1.0);
    assert!(after["pg_stat_database_num_backends{}"] >= 1.0);
    // node_exporter's CPUs: one series per CPU and mode, as many CPUs as /proc/stat lists.
    let cpus = proc_stat_cpus();
    let idle = after
        .keys()
        .filter(|k| k.starts_with("node_cpu_seconds_total{") && k.contains("mode=idle"))
        .count();
    assert_eq!(idle, cpus);
    assert!(after["node_cpu_seconds_total{cpu=0,mode=user}"] > 0.0);
    assert!(after["node_disk_written_bytes_total{device=postgres}"] > 0.0);
    assert!(after["pg_wal_size_mb{}"] > 0.0);
    // Realtime's slot exists and its lag is a number.
    assert!(after["replication_slots_max_lag_bytes{}"].is_finite());
    // The shared pooler as Supavisor's series, by mode.
    assert!(after.contains_key("supavisor_connections_active{mode=session,user=postgres}"));
    assert!(after.contains_key("supavisor_connections_active{mode=transaction,user=postgres}"));
    metrics_api_has_hosted_shapes(env).await;
    db.batch_execute("drop table metrics_burst").await.unwrap();
}
