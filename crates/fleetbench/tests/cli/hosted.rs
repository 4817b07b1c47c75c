//! `stack up --profile hosted`: the stack as a hosted project looks to its clients. Everything goes
//! over TLS signed by the stack's own CA: the gateway is HTTPS, Realtime WSS, both poolers refuse
//! plaintext; user tokens are ES256 with a `kid` the JWKS publishes, and the opaque publishable and
//! secret keys work where the hosted gateway takes them. fleetbench, given only what `stack env`
//! prints with the new keys instead of the legacy ones (as CI is given staging's settings), runs a
//! fleet with a Realtime probe through all of it and accounts for every row; with IP address
//! forwarding on, 40 agents sign in past a /token burst of 30 without one refusal, all of it through
//! an HTTPS proxy (`HTTPS_PROXY`) that the uploads use as the Auth calls do.

use std::collections::BTreeMap;

use super::*;

/// `stack env`'s `export NAME='value'` lines.
pub fn exports(env: &str) -> BTreeMap<String, String> {
    env.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// A hosted double of this test's own, with the migrations applied: its instance and `stack env`.
pub fn hosted(prefix: &str, extra: &[&str]) -> (Instance, BTreeMap<String, String>) {
    let instance = Instance::new(prefix);
    let mut up = vec!["stack", "up", "--profile", "hosted", "--ip-forwarding"];
    up.extend(extra);
    ok(fleetbench(&instance.0, &up));
    ok(fleetbench(&instance.0, &["migrate"]));
    let env = exports(&ok(fleetbench(&instance.0, &["stack", "env"])));
    (instance, env)
}

/// `fleetbench ARGS` with `env` set, as a CI job against a remote project runs it.
pub fn fleetbench_with(instance: &Path, env: &BTreeMap<String, String>, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args(args)
        .current_dir(workspace_root())
        .env("FLEETBENCH_HOME", workspace_root().join(".fleetbench"))
        .env("FLEETBENCH_STACK_DIR", instance)
        .envs(env)
        .output()
        .expect("running fleetbench")
}

/// `url` with its TLS settings replaced by `tls` (`sslmode=…`).
fn with_tls(url: &str, tls: &str) -> String {
    format!("{}?{tls}", url.split_once('?').unwrap().0)
}

/// A CA of the test's own, which signed nothing the stack serves.
fn foreign_ca(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let path = dir.join("foreign-ca.pem");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

/// The one text value `sql` answers, as an unnamed statement (the transaction pooler keeps no
/// prepared one).
async fn text(db: &tokio_postgres::Client, sql: &str) -> String {
    db.query_typed(sql, &[]).await.unwrap()[0].get(0)
}

/// Both pooler URLs: TLS verified against the CA works, plaintext and a foreign CA do not; the
/// user is Supavisor's tenant form, and a bare `postgres` is refused.
async fn poolers_require_tls(env: &BTreeMap<String, String>, foreign: &Path) {
    let project_ref = &env["SUPABASE_PROJECT_REF"];
    assert!(
        project_ref.len() == 20 && project_ref.chars().all(|c| c.is_ascii_lowercase()),
        "{project_ref}"
    );
    let tenant = format!("postgres://postgres.{project_ref}:");
    for name in ["SUPABASE_DB_URL", "SUPABASE_DB_SESSION_URL"] {
        let url = &env[name];
        assert!(
            url.contains("sslmode=verify-full&sslrootcert="),
            "{name} does not ask for verified TLS"
        );
        assert!(url.starts_with(&tenant), "{name} is not in tenant form");
        let db = fleetbench_tls::pg::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{name} as handed out: {e}"));
        // Supavisor logs the tenant user in as the project's `postgres`.
        assert_eq!(text(&db, "select current_user::text").await, "postgres");
        let bare = url.replacen(&tenant, "postgres://postgres:", 1);
        let refused = fleetbench_tls::pg::connect(&bare).await.err();
        assert!(refused.is_some(), "{name} took a bare postgres user");
        let plain = fleetbench_tls::pg::connect(&with_tls(url, "sslmode=disable"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} accepted plaintext"));
        assert!(
            plain.to_string().contains("SSL required"),
            "{name}: {plain}"
        );
        let foreign_url = with_tls(
            url,
            &format!("sslmode=verify-full&sslrootcert={}", foreign.display()),
        );
        let untrusted = fleetbench_tls::pg::connect(&foreign_url).await.err();
        assert!(untrusted.is_some(), "{name} passed a foreign CA's check");
        // `require` encrypts without checking, as libpq's does.
        fleetbench_tls::pg::connect(&with_tls(url, "sslmode=require"))
            .await
            .unwrap_or_else(|e| panic!("{name} with sslmode=require: {e}"));
    }
}

/// The transaction pooler keeps no prepared statement from one transaction to the next, as
/// Supavisor's: a named statement fails there every time, an unnamed one works; and what
/// fleetbench sends through it (the RLS probe's SQL as a user, its checks as admin when only
/// `SUPABASE_DB_URL` is given) works, while the partitions probe, which needs a session, says so.
async fn transaction_pooler_keeps_no_statement(dir: &Path, env: &BTreeMap<String, String>) {
    let db = fleetbench_tls::pg::connect(&env["SUPABASE_DB_URL"])
        .await
        .unwrap();
    let named = db.query("select $1::int4", &[&1i32]).await;
    let e = named.expect_err("a named statement survived the transaction pooler");
    let e = fleetbench_tls::pg::error_text(&e);
    assert!(e.contains("does not exist"), "{e}");
    let unnamed = db
        .query_typed(
            "select $1::int4",
            &[(&1i32, tokio_postgres::types::Type::INT4)],
        )
        .await
        .unwrap();
    assert_eq!(unnamed[0].get::<_, i32>(0), 1);
    let mut pooled = env.clone();
    pooled.remove("SUPABASE_DB_SESSION_URL");
    let out = dir.join("probe-rls-pooled");
    ok(fleetbench_with(
        dir,
        &pooled,
        &["probe", "rls", "--out", out.to_str().unwrap()],
    ));
    let out = dir.join("probe-partitions-pooled");
    let refused = fleetbench_with(
        dir,
        &pooled,
        &["probe", "partitions", "--out", out.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("SUPABASE_DB_SESSION_URL"), "{stderr}");
}

/// The gateway speaks HTTPS only, and only clients that trust the CA get through.
async fn gateway_is_https(env: &BTreeMap<String, String>) {
    let url = &env["SUPABASE_URL"];
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let settings = format!("{url}/auth/v1/settings");
    let anon = &env["SUPABASE_ANON_KEY"];
    let untrusting = reqwest::Client::new();
    let refused = untrusting
        .get(&settings)
        .header("apikey", anon)
        .send()
        .await;
    assert!(refused.is_err(), "a client without the CA got {refused:?}");
    let pem = std::fs::read(&env["FLEETBENCH_CA_FILE"]).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let r = trusting
        .get(&settings)
        .header("apikey", anon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let plain = untrusting
        .get(settings.replacen("https://", "http://", 1))
        .header("apikey", anon)
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| r.status() != 200),
        "the gateway answered plain HTTP"
    );
}

/// A client that trusts the stack's CA.
pub fn trusting(env: &BTreeMap<String, String>) -> reqwest::Client {
    let pem = std::fs::read(&env["FLEETBENCH_CA_FILE"]).unwrap();
    reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap()
}

/// The new keys and the asymmetric user tokens, checked as their clients meet them.
async fn keys_as_hosted(env: &BTreeMap<String, String>) {
    let (url, http) = (&env["SUPABASE_URL"], trusting(env));
    let (publishable, secret) = (
        &env["SUPABASE_PUBLISHABLE_KEY"],
        &env["SUPABASE_SECRET_KEY"],
    );
    assert!(publishable.starts_with("sb_publishable_") && secret.starts_with("sb_secret_"));
    // Published to anyone, as hosted does: verifiers fetch it without a key.
    let jwks: serde_json::Value = http
        .get(format!("{url}/auth/v1/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let [jwk] = &set.keys[..] else {
        panic!("one signing key expected: {jwks}")
    };
    // An admin call with the secret key as the SDKs send it (apikey and bearer), then a sign-in.
    let email = format!("keys-{}@fleetbench.test", std::process::id());
    let created = http
        .post(format!("{url}/auth/v1/admin/users"))
        .header("apikey", secret)
        .bearer_auth(secret)
        .json(
            &serde_json::json!({ "email": email, "password": "secret123", "email_confirm": true }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{}", created.text().await.unwrap());
    let session: serde_json::Value = http
        .post(format!("{url}/auth/v1/token?grant_type=password"))
        .header("apikey", publishable)
        .json(&serde_json::json!({ "email": email, "password": "secret123" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().unwrap();
    // ES256 with the published kid, verified here from the JWKS alone.
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid, jwk.common.key_id);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_aud = false;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["role"], "authenticated");
    let status =
        |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status().as_u16() };
    let devices = format!("{url}/rest/v1/devices?select=id");
    let user = http
        .get(&devices)
        .header("apikey", publishable)
        .bearer_auth(token);
    assert_eq!(status(user).await, 200);
    let admin = http
        .get(&devices)
        .header("apikey", secret)
        .bearer_auth(secret);
    assert_eq!(status(admin).await, 200);
    // A token signed with a secret the project does not have is refused.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "role": "service_role", "exp": claims["exp"] }),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-project-secret"),
    )
    .unwrap();
    let forged = http
        .get(&devices)
        .header("apikey", publishable)
        .bearer_auth(forged);
    assert_eq!(status(forged).await, 401);
    // A `verify_jwt` function takes a JWT, never an opaque key as a bearer.
    let function = format!("{url}/functions/v1/anomaly-webhook");
    let opaque = http
        .post(&function)
        .header("apikey", secret)
        .bearer_auth(secret);
    assert_eq!(status(opaque).await, 401);
    let legacy = &env["SUPABASE_SERVICE_ROLE_KEY"];
    let jwt = http
        .post(&function)
        .header("apikey", legacy)
        .bearer_auth(legacy);
    assert_ne!(status(jwt).await, 401);
}

/// Micro's limits: Postgres takes 60 connections, and the transaction pooler 200 clients (its
/// console and the gateway's own count too), the 201st refused.
async fn compute_size_limits(env: &BTreeMap<String, String>) {
    let session = fleetbench_tls::pg::connect(&env["SUPABASE_DB_SESSION_URL"])
        .await
        .unwrap();
    assert_eq!(text(&session, "show max_connections").await, "60");
    let url = &env["SUPABASE_DB_URL"];
    let console = fleetbench_tls::pg::connect(&url.replacen("/postgres?", "/pgbouncer?", 1))
        .await
        .unwrap();
    let mut held = Vec::new();
    let refused = loop {
        match fleetbench_tls::pg::connect(url).await {
            Ok(c) if held.len() < 300 => held.push(c),
            Ok(_) => panic!("300 clients and no limit"),
            Err(e) => break e,
        }
    };
    let clients = console.simple_query("show clients").await.unwrap();
    let rows = clients
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 200, "clients when the pooler refused one ({refused})");
}

/// The pooler probe's storm of 250 clients against Micro: the transaction pooler takes 200 clients
/// in all (the gateway's own among them, so the storm gets fewer) and refuses the rest with
/// PgBouncer's error; the database never holds more than its 60 connections.
fn pooler_probe_meets_micro(dir: &Path, env: &BTreeMap<String, String>) {
    let out_dir = dir.join("probe-pooler");
    let args = [
        "probe",
        "pooler",
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "clients=250",
        "--set",
        "concurrency=50",
        "--set",
        "direct=false",
    ];
    let run = fleetbench_with(dir, env, &args);
    // The claim fails: clients were refused.
    assert_eq!(
        run.status.code(),
        Some(99),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    let figure = |name: &str| probe_figure(&summary, "pooler", name);
    let (connected, refused) = (
        figure("connected through the pooler"),
        figure("refused by the pooler"),
    );
    // The gateway's own pool and the consoles hold some of the 200 clients the storm meets.
    assert_eq!(connected + refused, 250.0, "{summary}");
    assert!(connected < 200.0 && refused >= 50.0, "{summary}");
    assert!(figure("database connections used") <= 60.0, "{summary}");
    let findings = summary["probes"]["pooler"]["findings"].to_string();
    assert!(
        findings.contains("no more connections allowed"),
        "{findings}"
    );
}

#[tokio::test]
async fn hosted_profile_serves_tls_and_fleetbench_runs_through_it() {
    let (instance, env) = hosted("fleetbench-test-hosted-", &[]);
    let dir = instance.0.clone();
    let ca = PathBuf::from(&env["FLEETBENCH_CA_FILE"]);
    assert!(
        ca.starts_with(workspace_root().join(".fleetbench")),
        "{ca:?}"
    );
    poolers_require_tls(&env, &foreign_ca(&dir)).await;
    gateway_is_https(&env).await;
    keys_as_hosted(&env).await;
    transaction_pooler_keeps_no_statement(&dir, &env).await;
    super::platform::management_api(&dir, &env).await;

    // A smoke fleet and a Realtime probe from `stack env` alone: uploads over HTTPS and through
    // the TLS pooler, dashboards over WSS, sign-ins within the burst of 30 `/token` calls.
    let out_dir = dir.join("run-hosted");
    let args = [
        "run",
        "scenarios/smoke.toml",
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "load.stages.1.duration=\"3s\"",
        "--set",
        "fleet.agents=40",
        "--set",
        "load.stages.0.agents=40",
        "--set",
        "load.stages.1.agents=40",
        "--set",
        "probes.realtime={ subscribers = 2, alerts = 6, interval = \"200ms\", wait = \"10s\" }",
        "--set",
        "output.cleanup=false",
    ];
    // The new keys only: no legacy key, no JWT secret.
    let mut remote = env.clone();
    for legacy in [
        "SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_JWT_SECRET",
    ] {
        remote.remove(legacy);
    }
    // 40 agents against a /token burst of 30: each signs in as its own forwarded address.
    remote.insert("FLEETBENCH_IP_FORWARDING".into(), "on".into());
    // Through an HTTPS proxy, as behind a corporate egress: uploads and Auth calls alike.
    let proxy = super::proxy::ConnectProxy::start();
    let mut proxied = remote.clone();
    proxied.insert("HTTPS_PROXY".into(), proxy.url.clone());
    // Live into a real Prometheus.
    let prom = super::export::prometheus().await;
    let write_url = format!("{}/api/v1/write", prom.url);
    let mut args = args.to_vec();
    args.extend(["--prometheus-remote-write", &write_url]);
    for none in [
        "NO_PROXY",
        "no_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        proxied.insert(none.into(), String::new());
    }
    let printed = ok(fleetbench_with(&dir, &proxied, &args));
    assert_eq!(
        printed.trim(),
        out_dir.join("index.html").display().to_string()
    );
    let summary = complete_run_dir(&out_dir, "hosted run");
    assert_eq!(summary["verdict"], "pass", "{summary}");
    assert_eq!(summary["target"]["kind"], "remote");
    server_section(&out_dir, &summary);
    super::export::exported(&prom, &summary).await;
    let figure = |name: &str| probe_figure(&summary, "realtime", name);
    assert_eq!(figure("alerts injected"), 6.0);
    assert_eq!(figure("alerts delivered once"), 6.0);
    let operation_rows = |op: &str| summary["operations"][op]["rows"].as_i64().unwrap_or(0);
    let reported = operation_rows("rest.insert_metrics") + operation_rows("pooler.insert_metrics");
    assert!(operation_rows("pooler.insert_metrics") > 0, "{summary}");
    let run_id = summary["run_id"].as_str().unwrap().to_string();
    let db = fleetbench_tls::pg::connect(&env["SUPABASE_DB_SESSION_URL"])
        .await
        .unwrap();
    // The run's users: 40 agents and the probe's 2 dashboards; its rows: the agents' and one
    // thermal reading per injected alert.
    assert_eq!(run_owns(&db, run_id.clone()).await, (40 + 2, reported + 6));
    assert_eq!(summary["operations"]["auth.password"]["count"], 40);
    assert_eq!(summary["operations"]["auth.password"]["errors"], 0);
    // Every tunnel went to the API, and the uploads' bodies went through them.
    let (targets, upstream_bytes) = proxy.settled();
    let api = env["SUPABASE_URL"]
        .trim_start_matches("https://")
        .trim_end_matches('/');
    assert!(
        !targets.is_empty() && targets.iter().all(|t| t == api),
        "{targets:?} vs {api}"
    );
    let uploaded = summary["operations"]["rest.insert_metrics"]["bytes"]
        .as_u64()
        .unwrap();
    assert!(
        uploaded > 0 && upstream_bytes > uploaded,
        "{upstream_bytes} through the proxy, {uploaded} uploaded"
    );

    super::platform::metrics_api(&env).await;

    // Cleanup through the TLS pooler too.
    ok(fleetbench_with(
        &dir,
        &remote,
        &["cleanup", "--run-id", &run_id],
    ));
    assert_eq!(run_owns(&db, run_id).await, (0, 0));
    drop(db);

    capacity_from_the_platform(&dir, &remote);

    // GoTrue's limits: a burst of 30 `/token` calls per client IP, then 429 (the bucket refills
    // one call per 2 s, far slower than these arrive).
    let http = trusting(&env);
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let r = http
            .post(format!("{}/auth/v1/token?grant_type=password", env["SUPABASE_URL"]))
            .header("apikey", &env["SUPABASE_ANON_KEY"])
            .json(&serde_json::json!({ "email": "nobody@fleetbench.test", "password": "wrong-password" }))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let first_429 = statuses.iter().position(|s| *s == 429);
    assert!(first_429.is_some_and(|i| i <= 30), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 10,
        "{statuses:?}"
    );
    // A compute size: its connection limits, as staging's would bind.
    let micro = [
        "stack",
        "up",
        "--profile",
        "hosted",
        "--ip-forwarding",
        "--compute",
        "micro",
    ];
    ok(fleetbench(&dir, &micro));
    let env = exports(&ok(fleetbench(&dir, &["stack", "env"])));
    pooler_probe_meets_micro(&dir, &env);
    compute_size_limits(&env).await;
    ok(fleetbench(&dir, &["stack", "down"]));
    drop(instance);
}

/// `capacity` against the double: the compute size from the Management API (Micro, the hosted
/// default), each step's resources from the Metrics API with the limits it reports, the model
/// from Micro's row; and past Micro's CPU, the binding resource named from the Metrics API.
fn capacity_from_the_platform(dir: &Path, remote: &BTreeMap<String, String>) {
    let out_dir = dir.join("capacity");
    let out = fleetbench_with(
        dir,
        remote,
        &[
            "capacity",
            "scenarios/smoke.toml",
            "--slo",
            "rest.insert_metrics: p(99) < 2s",
            "--start",
            "4",
            "--max",
            "8",
            "--warmup",
            "1s",
            "--hold",
            "3s",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the target's compute size: Micro (Management API)"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("capacity.json")).unwrap())
            .unwrap();
    let model = report["model"].as_array().unwrap();
    let micro = model.iter().find(|e| e["size"] == "Micro").unwrap();
    assert_eq!(micro["basis"], "measured", "{report}");
    let xl = model.iter().find(|e| e["size"] == "XL").unwrap();
    assert_eq!(
        xl["binds"],
        "CPU (4 cores vs Micro's 2; burstable CPUs below Large: sustained load may get less)",
        "{report}"
    );
    // The double's node_exporter counts this machine's CPUs, as hosted's counts its VM's.
    let cpus = proc_stat_cpus() as f64;
    let cpu_resource = format!("database CPU (cores busy, of its {cpus})");
    for step in report["outcome"]["steps"].as_array().unwrap() {
        let resources: BTreeMap<String, (f64, Option<f64>)> = step["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_string(),
                    (r[1].as_f64().unwrap(), r[2].as_f64()),
                )
            })
            .collect();
        // Micro's limits, as the Metrics API reports them.
        assert_eq!(resources["database connections"].1, Some(60.0), "{step}");
        assert_eq!(
            resources["pooler clients (transaction mode)"].1,
            Some(200.0),
            "{step}"
        );
        let cpu = &resources[&cpu_resource];
        assert!(cpu.0 > 0.0 && cpu.1 == Some(cpus), "{step}");
        assert!(
            resources.contains_key("load generator CPU % (of all cores)"),
            "{step}"
        );
    }
    // Past the machine's CPU: 6,400 pooler inserts a second against an SLO no step holds. The
    // step breaks with the database host's CPUs busy, and the binding limit is named from the
    // Metrics API's series.
    let scenario = dir.join("cpu-bound.toml");
    std::fs::write(
        &scenario,
        "name = \"cpu-bound\"\n[fleet]\nagents = 100\n[load]\nmodel = \"arrival_rate\"\ngrace = \"2s\"\n\
         [[load.stages]]\nduration = \"5s\"\nrate = \"6400/s\"\n[workload]\nsample_interval = \"1s\"\n\
         upload_interval = \"1s\"\ningest = { pooler = 1.0 }\n",
    )
    .unwrap();
    let out_dir = dir.join("capacity-cpu");
    let out = fleetbench_with(
        dir,
        remote,
        &[
            "capacity",
            scenario.to_str().unwrap(),
            "--slo",
            "pooler.insert_metrics: p(99) < 1ms",
            "--start",
            "6400",
            "--max",
            "6400",
            "--warmup",
            "2s",
            "--hold",
            "4s",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(99),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("capacity.json")).unwrap())
            .unwrap();
    let binding = report["binding"].as_str().unwrap();
    assert!(
        binding.starts_with(&format!("{cpu_resource}: ")),
        "{binding}"
    );
}
