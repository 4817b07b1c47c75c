//! Bulk inserts through the local Data API stand-in against the same rows sent straight to
//! Postgres by tokio-postgres, in the same run (issue 3's speed target: the gateway reaches at least
//! half the direct rows/s with 100-row batches).
//!
//! Modes, interleaved round by round so drift on a shared machine hits all of them alike:
//! - `direct`: a prepared multi-row `INSERT … VALUES` (100 rows × 12 bound parameters) on a direct
//!   superuser connection per worker: the fastest ordinary way to write these rows.
//! - `direct_rls`: the gateway's own transaction (role switch, claims, one `json_populate_recordset`
//!   INSERT) sent by tokio-postgres straight to Postgres: what the database costs without HTTP.
//! - `gateway`: `POST /rest/v1/system_metrics` with a 100-object JSON array and `Prefer:
//!   return=minimal`, each worker signed in as its own agent, through the transaction pooler.
//!
//! Run: `cargo bench -p fleetbench-gateway --bench gateway_inserts`. Env: `BENCH_WORKERS` (8),
//! `BENCH_ROUNDS` (3), `BENCH_ROUND_SECS` (5), `BENCH_OUT` (an absolute folder for raw.csv and summary.json: cargo runs benches from the crate directory).

use std::time::{Duration, Instant};

use fleetbench_gateway::GatewayConfig;
use serde_json::{Value, json};
use tokio_postgres::types::{ToSql, Type};

const BATCH: usize = 100;

struct Agent {
    user_id: String,
    token: String,
    device_id: String,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The first instant of the current month on the bench's clock: rows are dated inside it, where
/// the stack's maintenance has made a partition whatever the day.
fn month_start() -> chrono::DateTime<chrono::Utc> {
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    today
        .with_day(1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

/// One batch of rows for `agent`, timestamps a second apart over the first 28 days of the current
/// month from `seq`.
fn batch(agent: &Agent, seq: u64) -> Vec<Value> {
    let start = month_start();
    (0..BATCH as u64)
        .map(|i| {
            let n = seq * BATCH as u64 + i;
            let ts = start + chrono::Duration::seconds((n % (28 * 86_400)) as i64);
            json!({
                "device_id": agent.device_id, "user_id": agent.user_id,
                "ts": ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "cpu_pct": (n % 100) as f64, "load_1m": 1.5, "mem_used_bytes": 4_000_000_000u64 + n,
                "mem_total_bytes": 16_000_000_000u64, "disk_used_pct": 61.0, "net_rx_bytes_per_s": 12345.0,
                "net_tx_bytes_per_s": 2345.0, "cpu_temp_c": 55.5, "process_count": 312,
            })
        })
        .collect()
}

const COLUMNS: [&str; 12] = [
    "device_id",
    "user_id",
    "ts",
    "cpu_pct",
    "load_1m",
    "mem_used_bytes",
    "mem_total_bytes",
    "disk_used_pct",
    "net_rx_bytes_per_s",
    "net_tx_bytes_per_s",
    "cpu_temp_c",
    "process_count",
];

fn direct_sql() -> String {
    let casts = [
        "uuid",
        "uuid",
        "timestamptz",
        "real",
        "real",
        "int8",
        "int8",
        "real",
        "float8",
        "float8",
        "real",
        "int4",
    ];
    let rows: Vec<String> = (0..BATCH)
        .map(|r| {
            let cells: Vec<String> = (0..COLUMNS.len())
                .map(|c| format!("${}::{}", r * COLUMNS.len() + c + 1, casts[c]))
                .collect();
            format!("({})", cells.join(","))
        })
        .collect();
    format!(
        "insert into public.system_metrics ({}) values {}",
        COLUMNS.join(","),
        rows.join(",")
    )
}

/// The batch as text parameters (cast in the SQL), in COLUMNS order.
fn direct_params(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .flat_map(|r| {
            COLUMNS.iter().map(move |c| match &r[*c] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
        .collect()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Direct,
    DirectRls,
    Gateway,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::DirectRls => "direct_rls",
            Mode::Gateway => "gateway",
        }
    }
}

/// One worker's loop for `secs`; returns rows acknowledged.
async fn worker(
    mode: Mode,
    agent: Agent,
    db_url: String,
    api: String,
    anon: String,
    until: Instant,
    seq0: u64,
) -> u64 {
    let mut rows = 0u64;
    let mut seq = seq0;
    match mode {
        Mode::Direct => {
            let db = connect(&db_url).await;
            let stmt = db
                .prepare_typed(&direct_sql(), &vec![Type::TEXT; BATCH * COLUMNS.len()])
                .await
                .unwrap();
            while Instant::now() < until {
                let params = direct_params(&batch(&agent, seq));
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                rows += db.execute(&stmt, &refs).await.unwrap();
                seq += 1;
            }
        }
        Mode::DirectRls => {
            let db = connect(&db_url).await;
            let claims = json!({ "sub": agent.user_id, "role": "authenticated" }).to_string();
            let sql = format!(
                "insert into \"public\".\"system_metrics\" ({0}) select {0} from json_populate_recordset(null::\"public\".\"system_metrics\", $1::json) _r",
                COLUMNS.map(|c| format!("\"{c}\"")).join(", ")
            );
            while Instant::now() < until {
                let body = Value::Array(batch(&agent, seq)).to_string();
                let setup_params: [(&(dyn ToSql + Sync), Type); 1] = [(&claims, Type::TEXT)];
                let insert_params: [(&(dyn ToSql + Sync), Type); 1] = [(&body, Type::TEXT)];
                let (b, s, n, c) = tokio::join!(
                    db.batch_execute("begin isolation level read committed"),
                    db.query_typed("select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true), set_config('statement_timeout', '8s', true)", &setup_params),
                    db.execute_typed(&sql, &insert_params),
                    db.batch_execute("commit"),
                );
                b.unwrap();
                s.unwrap();
                rows += n.unwrap();
                c.unwrap();
                seq += 1;
            }
        }
        Mode::Gateway => {
            let http = reqwest::Client::new();
            let url = format!("{api}/rest/v1/system_metrics");
            while Instant::now() < until {
                let body = Value::Array(batch(&agent, seq)).to_string();
                let res = http
                    .post(&url)
                    .header("apikey", &anon)
                    .bearer_auth(&agent.token)
                    .header("Prefer", "return=minimal")
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    res.status(),
                    201,
                    "{}",
                    res.text().await.unwrap_or_default()
                );
                rows += BATCH as u64;
                seq += 1;
            }
        }
    }
    rows
}

fn main() {
    let workers: usize = env_or("BENCH_WORKERS", 8);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let secs: u64 = env_or("BENCH_ROUND_SECS", 5);
    let state = fleetbench_stack::testing::shared(|_| {});
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = {
            let (c, conn) = tokio_postgres::connect(&state.direct_db_url(), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c
        };
        let dir = fleetbench_stack::testing::workspace_root().join("migrations");
        fleetbench_schema::apply_dir(&state.direct_db_url(), &dir).await.unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        let project = fleetbench_stack::ProjectConfig::load(&fleetbench_stack::testing::workspace_root().join("supabase")).unwrap();
        let config = GatewayConfig::for_stack(state, &project, api.clone());
        let app = fleetbench_gateway::router(config.clone()).unwrap();
        tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await });

        // One agent per worker: a user, a session, a device.
        let http = reqwest::Client::new();
        let anon = state.secrets.anon_key.clone();
        let mut agents = Vec::new();
        for w in 0..workers * 3 {
            let email = format!("bench-{w}-{}@fleetbench.test", uuid::Uuid::new_v4());
            let user: Value = http.post(format!("{api}/auth/v1/admin/users")).header("apikey", &anon)
                .bearer_auth(&state.secrets.service_role_key)
                .json(&json!({ "email": email, "password": "bench-password", "email_confirm": true }))
                .send().await.unwrap().json().await.unwrap();
            let session: Value = http.post(format!("{api}/auth/v1/token?grant_type=password")).header("apikey", &anon)
                .json(&json!({ "email": email, "password": "bench-password" })).send().await.unwrap().json().await.unwrap();
            let token = session["access_token"].as_str().unwrap().to_string();
            let device: Value = http.post(format!("{api}/rest/v1/devices")).header("apikey", &anon).bearer_auth(&token)
                .header("Prefer", "return=representation").header("Accept", "application/vnd.pgrst.object+json")
                .json(&json!({ "hostname": format!("bench-{w}") })).send().await.unwrap().json().await.unwrap();
            agents.push(Agent { user_id: user["id"].as_str().unwrap().into(), token, device_id: device["id"].as_str().unwrap().into() });
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        eprintln!("gateway_inserts: {workers} workers, {rounds} rounds x {secs} s per mode, batches of {BATCH} rows, {cores} cores");

        let modes = [Mode::Direct, Mode::DirectRls, Mode::Gateway];
        let mut raw = String::from("round,mode,workers,seconds,rows,rows_per_s\n");
        let mut per_mode: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut seq = 0u64;
        for round in 0..rounds {
            for (m, mode) in modes.iter().enumerate() {
                let start = Instant::now();
                let until = start + Duration::from_secs(secs);
                let tasks: Vec<_> = (0..workers)
                    .map(|w| {
                        let a = &agents[m * workers + w];
                        let agent = Agent { user_id: a.user_id.clone(), token: a.token.clone(), device_id: a.device_id.clone() };
                        seq += 1_000_000;
                        tokio::spawn(worker(*mode, agent, state.direct_db_url(), api.clone(), anon.clone(), until, seq))
                    })
                    .collect();
                let mut rows = 0;
                for t in tasks {
                    rows += t.await.unwrap();
                }
                let elapsed = start.elapsed().as_secs_f64();
                let rate = rows as f64 / elapsed;
                per_mode[m].push(rate);
                raw.push_str(&format!("{round},{},{workers},{elapsed:.3},{rows},{rate:.1}\n", mode.name()));
                eprintln!("  round {round} {:<10} {rows:>8} rows in {elapsed:.2} s = {rate:>9.0} rows/s", mode.name());
            }
        }
        let median = |v: &Vec<f64>| {
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        };
        let (direct, direct_rls, gateway) = (median(&per_mode[0]), median(&per_mode[1]), median(&per_mode[2]));
        // Independent truth: every acknowledged row is in the table.
        let stored: i64 = admin.query_one("select count(*) from public.system_metrics s join public.devices d on d.id = s.device_id where d.hostname like 'bench-%'", &[]).await.unwrap().get(0);
        let acknowledged: u64 = raw.lines().skip(1).map(|l| l.split(',').nth(4).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(stored as u64, acknowledged, "rows in the table = rows acknowledged");
        let summary = json!({
            "workers": workers, "rounds": rounds, "round_seconds": secs, "batch_rows": BATCH, "cores": cores,
            "median_rows_per_s": { "direct": direct, "direct_rls": direct_rls, "gateway": gateway },
            "ratio_gateway_to_direct": gateway / direct,
            "ratio_gateway_to_direct_rls": gateway / direct_rls,
            "target": "gateway >= 0.5 x direct",
            "met": gateway >= 0.5 * direct,
            "rows_stored": stored, "rows_acknowledged": acknowledged,
        });
        println!("{}", serde_json::to_string_pretty(&summary).unwrap());
        if let Ok(out) = std::env::var("BENCH_OUT") {
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(format!("{out}/raw.csv"), raw).unwrap();
            std::fs::write(format!("{out}/summary.json"), serde_json::to_string_pretty(&summary).unwrap() + "\n").unwrap();
        }
    });
}
