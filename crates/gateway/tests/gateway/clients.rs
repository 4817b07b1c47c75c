//! Conformance with the official clients, unmodified: `@supabase/supabase-js` (npm, run by Deno)
//! and the Python `supabase` package (PyPI, in the project venv), both installed by
//! `fleetbench_stack::install::ensure_clients`. Each script signs in, refreshes, inserts a batch,
//! reads its own rows (and none of another user's), calls `match_memories`, and meets PostgREST
//! errors; this side checks every observation against the database. Each runs twice: over plain
//! HTTP with the legacy anon key, and as against the `hosted` profile: over HTTPS/WSS with only the
//! stack's CA added to the client's trust (`DENO_CERT`, `SSL_CERT_FILE`), the publishable key, and
//! user tokens signed with the asymmetric key.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Agent, Gateway, gateway, tls_gateway};

/// Where a client script connects: plain HTTP, or HTTPS trusting the stack's CA.
#[derive(Clone, Copy)]
enum Over {
    Http,
    Tls,
}

impl Over {
    /// The gateway, and the environment that makes the client trust it.
    fn gateway(self) -> (&'static Gateway, Vec<(&'static str, String)>) {
        match self {
            Over::Http => (gateway(), Vec::new()),
            Over::Tls => {
                let (g, ca) = tls_gateway();
                let ca = ca.display().to_string();
                // Deno's documented extra root, and OpenSSL's (httpx and websockets read it).
                (g, vec![("DENO_CERT", ca.clone()), ("SSL_CERT_FILE", ca)])
            }
        }
    }
}

fn clients() -> fleetbench_stack::install::Clients {
    let paths = fleetbench_stack::testing::test_options().paths;
    let _ = std::fs::remove_dir_all(&paths.instance);
    fleetbench_stack::install::ensure_clients(&paths, &mut |line| eprintln!("[clients] {line}"))
        .expect("installing the official Supabase clients")
}

fn script(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Two agents; `a` owns memories whose nearest three to the query are known.
async fn fixture(label: &str) -> (Agent, Agent, Value, Vec<String>) {
    let g = gateway();
    let (a, b) = (
        g.agent(&format!("{label}-a")).await,
        g.agent(&format!("{label}-b")).await,
    );
    let basis =
        |i: usize| -> Vec<f32> { (0..384).map(|d| if d == i { 1.0 } else { 0.0 }).collect() };
    // Memory i points along axis i; the query leans on axes 3, 1, 4 in that order.
    let memories: Vec<Value> = (0..8)
        .map(|i| json!({ "content": format!("m{i}"), "embedding": basis(i) }))
        .collect();
    let r = Gateway::send(
        g.request(Method::POST, "/rest/v1/memories", Some(&a.token))
            .json(&memories),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut query = vec![0.0f32; 384];
    (query[3], query[1], query[4], query[0]) = (0.8, 0.5, 0.3, 0.1);
    let cpu: Vec<f64> = (0..25).map(|i| f64::from((i * 37) % 100)).collect();
    // The scripts date their rows a second apart from `ts0`, now on this test's clock, so the
    // partitions maintenance keeps hold them whatever day it is.
    let ts0 = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let input = json!({
        "email": a.email, "password": a.password, "device_id": a.device_id, "other_device_id": b.device_id,
        "cpu": cpu, "query_embedding": query, "ts0": ts0,
    });
    (a, b, input, vec!["m3".into(), "m1".into(), "m4".into()])
}

/// A client script under Deno, offline from the cache the installer filled, network to 127.0.0.1 only.
fn deno(c: &fleetbench_stack::install::Clients, name: &str) -> Command {
    let mut cmd = Command::new(&c.deno);
    cmd.args([
        "run",
        "--cached-only",
        "--no-config",
        "--node-modules-dir=none",
        "--allow-net=127.0.0.1",
        "--allow-env",
    ])
    .arg(script(name))
    .env("DENO_DIR", &c.deno_dir);
    cmd
}

fn run(mut cmd: Command, input: &Value, over: Over) -> Value {
    let (g, trust) = over.gateway();
    let out = cmd
        .envs(trust)
        .env("SUPABASE_URL", &g.url)
        .env("SUPABASE_ANON_KEY", &g.anon)
        .env("CONFORMANCE_INPUT", input.to_string())
        .env("DENO_NO_UPDATE_CHECK", "1")
        .output()
        .expect("running the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What both clients must have observed, checked against the database.
async fn check(out: &Value, a: &Agent, b: &Agent, input: &Value, nearest: &[String]) {
    let db = gateway().db().await;
    let stored: Vec<f64> = db
        .query("select cpu_pct::float8 from public.system_metrics where device_id = $1::text::uuid order by cpu_pct", &[&a.device_id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut sent: Vec<f64> = input["cpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    sent.sort_by(f64::total_cmp);
    assert_eq!(
        stored, sent,
        "the batch arrived whole, and the failed inserts left nothing"
    );
    assert_eq!(out["user_id"], a.user_id.as_str());
    assert_eq!(out["rotated"], true);
    assert_eq!(out["read"]["count"], json!(sent.len()));
    let read: Vec<f64> = out["read"]["cpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(read, sent);
    assert_eq!(out["read"]["users"], json!([a.user_id]));
    assert_eq!(out["other_rows"], 0);
    let b_rows: i64 = db
        .query_one(
            "select count(*) from public.system_metrics where device_id = $1::text::uuid",
            &[&b.device_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_rows, 0);
    assert_eq!(out["matches"], json!(nearest));
    assert_eq!(out["bad_check"]["code"], "23514", "{out}");
    assert!(
        out["bad_check"]["message"]
            .as_str()
            .unwrap()
            .contains("check constraint"),
        "{out}"
    );
    assert_eq!(out["bad_column"]["code"], "PGRST204", "{out}");
    assert_eq!(out["rls"]["code"], "42501", "{out}");
    assert!(
        out["rls"]["message"]
            .as_str()
            .unwrap()
            .contains("row-level security"),
        "{out}"
    );
    assert_eq!(out["signed_out"], true);
    let sessions: i64 = db
        .query_one(
            "select count(*) from auth.sessions where user_id = $1::text::uuid",
            &[&a.user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sessions, 0,
        "sign-out (scope global, the clients' default) ended every session of the user"
    );
}

#[tokio::test]
async fn supabase_js_works_unmodified() {
    supabase_js(Over::Http, "js").await;
}

#[tokio::test]
async fn supabase_js_works_unmodified_over_tls() {
    supabase_js(Over::Tls, "js-tls").await;
}

async fn supabase_js(over: Over, label: &str) {
    let c = tokio::task::spawn_blocking(clients).await.unwrap();
    let (a, b, input, nearest) = fixture(label).await;
    let cmd = deno(&c, "supabase_js.ts");
    let sent = input.clone();
    let out = tokio::task::spawn_blocking(move || run(cmd, &sent, over))
        .await
        .unwrap();
    assert_eq!(out["insert"]["status"], 201, "{out}");
    assert_eq!(out["bad_check"]["status"], 400, "{out}");
    assert_eq!(out["bad_column"]["status"], 400, "{out}");
    assert_eq!(out["rls"]["status"], 403, "{out}");
    // supabase-js reports `{status, error}`; the shared checks read the error objects.
    let errors: serde_json::Map<String, Value> = out
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.get("error")
                    .filter(|e| !e.is_null())
                    .cloned()
                    .unwrap_or_else(|| v.clone()),
            )
        })
        .collect();
    check(&Value::Object(errors), &a, &b, &input, &nearest).await;
}

#[tokio::test]
async fn supabase_py_works_unmodified() {
    supabase_py(Over::Http, "py").await;
}

#[tokio::test]
async fn supabase_py_works_unmodified_over_tls() {
    supabase_py(Over::Tls, "py-tls").await;
}

async fn supabase_py(over: Over, label: &str) {
    let c = tokio::task::spawn_blocking(clients).await.unwrap();
    let (a, b, input, nearest) = fixture(label).await;
    let mut cmd = Command::new(&c.python);
    cmd.arg(script("supabase_py.py"));
    let sent = input.clone();
    let out = tokio::task::spawn_blocking(move || run(cmd, &sent, over))
        .await
        .unwrap();
    assert_eq!(
        out["inserted_returned"],
        input["cpu"].as_array().unwrap().len(),
        "{out}"
    );
    check(&out, &a, &b, &input, &nearest).await;
}

/// Runs a Realtime client script: once it says it is live, inserts an alert for another user and
/// then one for `a`, tells the script which id to wait for, and checks what arrived.
async fn realtime_client(mut cmd: Command, label: &str, over: Over) {
    use std::io::{BufRead, Write};
    let (g, trust) = over.gateway();
    // The fixtures go through the plain gateway (same database); only the client meets `over`.
    let plain = gateway();
    let (a, b) = (
        plain.agent(&format!("{label}-a")).await,
        plain.agent(&format!("{label}-b")).await,
    );
    let input = json!({ "email": a.email, "password": a.password });
    cmd.envs(trust)
        .env("SUPABASE_URL", &g.url)
        .env("SUPABASE_ANON_KEY", &g.anon)
        .env("CONFORMANCE_INPUT", input.to_string())
        .env("DENO_NO_UPDATE_CHECK", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("starting the client script");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    })
    .await
    .unwrap();
    let (line, mut stdout) = ready;
    if line.trim() != r#"{"ready": true}"# && line.trim() != r#"{"ready":true}"# {
        let out = child.wait_with_output().unwrap();
        panic!(
            "client not live: {line}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let db = plain.db().await;
    crate::realtime::insert_alerts(&db, &b, 1, "not for a").await;
    let mine = crate::realtime::insert_alerts(&db, &a, 1, "for a").await[0];
    writeln!(stdin, "{mine}").unwrap();
    let (line, status) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            line,
            (
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ),
        )
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{line}{}", status.1);
    let out: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    // Only a's alert: b's, committed first, was not delivered to a.
    assert_eq!(out["ids"], json!([mine]), "{out}");
    let first = &out["first"];
    let data = first.get("data").unwrap_or(first);
    let (schema, table, kind) = (
        data["schema"].as_str().unwrap_or_default(),
        data["table"].as_str().unwrap_or_default(),
        data.get("type")
            .or(data.get("eventType"))
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    assert_eq!(
        (schema, table, kind),
        ("public", "alerts", "INSERT"),
        "{out}"
    );
    assert!(data.get("commit_timestamp").is_some(), "{out}");
    let rec = data.get("record").or(data.get("new")).unwrap();
    assert_eq!(rec["user_id"], json!(a.user_id), "{out}");
}

#[tokio::test]
async fn realtime_js_receives_its_users_alerts() {
    let c = tokio::task::spawn_blocking(clients).await.unwrap();
    realtime_client(deno(&c, "realtime_js.ts"), "rt-js", Over::Http).await;
}

#[tokio::test]
async fn realtime_js_receives_its_users_alerts_over_wss() {
    let c = tokio::task::spawn_blocking(clients).await.unwrap();
    realtime_client(deno(&c, "realtime_js.ts"), "rt-js-tls", Over::Tls).await;
}

fn realtime_py(c: &fleetbench_stack::install::Clients) -> Command {
    let mut cmd = Command::new(&c.python);
    cmd.arg(script("realtime_py.py"));
    cmd
}

#[tokio::test]
async fn realtime_py_receives_its_users_alerts() {
    let c = tokio::task::spawn_blocking(clients).await.unwrap();
    realtime_client(realtime_py(&c), "rt-py", Over::Http).await;
}

#[tokio::test]
async fn realtime_py_receives_its_users_alerts_over_wss() {
    let c = tokio::task::spawn_blocking(clients).await.unwrap();
    realtime_client(realtime_py(&c), "rt-py-tls", Over::Tls).await;
}
