//! Realtime delivery through the local stand-in (issue 4's speed figure): 1,000 subscribers, each a
//! websocket of its own signed in as its own user with `postgres_changes` on `alerts` filtered to
//! that user (row-level security applies too), while one writer commits 100 alerts/s spread over the
//! users. Latency is commit → client: from the moment the writer's COMMIT returns to the moment the
//! subscriber reads the frame, both on this process's monotonic clock.
//!
//! Peer in the same run: the same alerts announced with `pg_notify` in the same transaction and read
//! by one `LISTEN` connection, the database's own commit → client floor.
//!
//! Run: `cargo bench -p fleetbench-gateway --bench realtime_delivery`. Env: `BENCH_SUBSCRIBERS`
//! (1000), `BENCH_RATE` (100 alerts/s), `BENCH_SECS` (30), `BENCH_OUT` (an absolute folder for
//! raw.csv and summary.json).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Commits = Arc<Mutex<HashMap<i64, Instant>>>;

/// Latencies in microseconds of (alert id, latency) as received.
type Received = Arc<Mutex<Vec<(i64, u64)>>>;

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let subscribers: usize = env_or("BENCH_SUBSCRIBERS", 1000);
    let rate: f64 = env_or("BENCH_RATE", 100.0);
    let secs: u64 = env_or("BENCH_SECS", 30);
    fleetbench_stack::process::raise_fd_limit();
    let state = fleetbench_stack::testing::shared(|_| {});
    let project = fleetbench_stack::ProjectConfig::load(
        &fleetbench_stack::testing::workspace_root().join("supabase"),
    )
    .unwrap();
    let gateway = fleetbench_gateway::start(|url| {
        fleetbench_gateway::GatewayConfig::for_stack(state, &project, url)
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = {
            let (c, conn) = tokio_postgres::connect(&state.direct_db_url(), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c
        };
        let dir = fleetbench_stack::testing::workspace_root().join("migrations");
        fleetbench_schema::apply_dir(&state.direct_db_url(), &dir).await.unwrap();

        // Users and devices straight in SQL (bcrypt sign-ups would dominate the setup); tokens are
        // minted with the stack's secret exactly as GoTrue signs them.
        let rows = admin
            .query(
                "with u as (insert into auth.users (email) select 'rt-bench-' || g || '-' || gen_random_uuid() || '@fleetbench.test' \
                 from generate_series(1, $1::int8) g returning id) \
                 insert into public.devices (user_id, hostname) select id, 'rt-bench' from u returning user_id::text, id::text",
                &[&(subscribers as i64)],
            )
            .await
            .unwrap();
        let users: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let exp = chrono::Utc::now().timestamp() + 3600;
        let secret = state.secrets.jwt_secret.clone();
        let ws_base = format!("{}/realtime/v1/websocket?apikey={}&vsn=1.0.0", gateway.url.replacen("http", "ws", 1), state.secrets.anon_key);

        let commits: Commits = Arc::default();
        let received: Received = Arc::default();
        let live = Arc::new(tokio::sync::Semaphore::new(0));
        let setup = Instant::now();
        for (i, (user, _)) in users.iter().enumerate() {
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &json!({ "sub": user, "role": "authenticated", "aud": "authenticated", "exp": exp }),
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap();
            let (url, user, commits, received, live) = (ws_base.clone(), user.clone(), commits.clone(), received.clone(), live.clone());
            tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
                let join = json!({ "topic": format!("realtime:alerts-{i}"), "event": "phx_join", "ref": "1", "join_ref": "1",
                    "payload": { "access_token": token, "config": { "postgres_changes": [
                        { "event": "INSERT", "schema": "public", "table": "alerts", "filter": format!("user_id=eq.{user}") }] } } });
                ws.send(Message::text(join.to_string())).await.unwrap();
                let mut beat = tokio::time::interval(Duration::from_secs(25));
                loop {
                    tokio::select! {
                        msg = ws.next() => {
                            let Some(Ok(Message::Text(t))) = msg else { break };
                            let now = Instant::now();
                            let v: Value = serde_json::from_str(&t).unwrap();
                            match v["event"].as_str() {
                                Some("system") if v["payload"]["status"] == "ok" => live.add_permits(1),
                                Some("postgres_changes") => {
                                    let id = v["payload"]["data"]["record"]["id"].as_i64().unwrap();
                                    let at = commits.lock().unwrap().get(&id).copied();
                                    if let Some(at) = at {
                                        received.lock().unwrap().push((id, now.saturating_duration_since(at).as_micros() as u64));
                                    }
                                }
                                _ => {}
                            }
                        }
                        _ = beat.tick() => {
                            let hb = json!({ "topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "hb" });
                            if ws.send(Message::text(hb.to_string())).await.is_err() { break }
                        }
                    }
                }
            });
        }
        let _all_live = live.acquire_many(subscribers as u32).await.unwrap();
        let setup_s = setup.elapsed().as_secs_f64();
        eprintln!("realtime_delivery: {subscribers} subscribers live in {setup_s:.1} s; {rate}/s alerts for {secs} s");

        // The peer: LISTEN on a connection of its own.
        let notified: Received = Arc::default();
        let (listener, mut lconn) = tokio_postgres::connect(&state.direct_db_url(), tokio_postgres::NoTls).await.unwrap();
        {
            let (commits, notified) = (commits.clone(), notified.clone());
            tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| lconn.poll_message(cx)).await {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            let now = Instant::now();
                            let id: i64 = n.payload().parse().unwrap();
                            let at = commits.lock().unwrap().get(&id).copied();
                            if let Some(at) = at {
                                notified.lock().unwrap().push((id, now.saturating_duration_since(at).as_micros() as u64));
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            });
        }
        listener.batch_execute("listen rt_bench").await.unwrap();

        // The writer: one alert per transaction at `rate`, users round-robin; the commit time is
        // taken when COMMIT returns, before the id can be delivered to anyone it belongs to.
        let (mut writer, wconn) = tokio_postgres::connect(&state.direct_db_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(wconn);
        let insert = writer
            .prepare("insert into public.alerts (user_id, device_id, kind, severity, metric_ts, value, threshold, message) \
                      values ($1::text::uuid, $2::text::uuid, 'thermal', 'critical', now(), 97, 90, 'bench') returning id")
            .await
            .unwrap();
        let total = (rate * secs as f64) as usize;
        let gap = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(total);
        for n in 0..total {
            tokio::time::sleep_until(start + gap * n as u32).await;
            let (user, device) = &users[n % users.len()];
            let tx = writer.transaction().await.unwrap();
            let id: i64 = tx.query_one(&insert, &[user, device]).await.unwrap().get(0);
            tx.execute("select pg_notify('rt_bench', $1)", &[&id.to_string()]).await.unwrap();
            // Recorded just before COMMIT is sent, so no delivery can precede it; COMMIT's own
            // round trip (sub-millisecond here) is counted in both modes alike.
            commits.lock().unwrap().insert(id, Instant::now());
            tx.commit().await.unwrap();
            sent.push(id);
        }
        let wall = start.elapsed().as_secs_f64();
        // Drain: wait until every alert is delivered or 10 s have passed since the last one was sent.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && (received.lock().unwrap().len() < total || notified.lock().unwrap().len() < total) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = received.lock().unwrap().clone();
        let peer = notified.lock().unwrap().clone();
        let mut lat: Vec<u64> = got.iter().map(|(_, l)| *l).collect();
        lat.sort_unstable();
        let mut peer_lat: Vec<u64> = peer.iter().map(|(_, l)| *l).collect();
        peer_lat.sort_unstable();
        let distinct: std::collections::HashSet<i64> = got.iter().map(|(id, _)| *id).collect();

        let fig = |l: &[u64]| json!({ "p50_ms": percentile(l, 50.0), "p95_ms": percentile(l, 95.0), "p99_ms": percentile(l, 99.0), "max_ms": percentile(l, 100.0) });
        let summary = json!({
            "subscribers": subscribers, "alerts_sent": total, "seconds": wall,
            "sent_per_s": total as f64 / wall,
            "realtime": { "delivered": got.len(), "distinct": distinct.len(), "latency": fig(&lat),
                          "delivered_per_s": got.len() as f64 / wall },
            "listen_notify_peer": { "delivered": peer.len(), "latency": fig(&peer_lat) },
            "ratio_p99_realtime_over_notify": percentile(&lat, 99.0) / percentile(&peer_lat, 99.0),
            "setup_seconds": setup_s,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        });
        println!("{}", serde_json::to_string_pretty(&summary).unwrap());
        if let Ok(out) = std::env::var("BENCH_OUT") {
            std::fs::create_dir_all(&out).unwrap();
            let mut raw = String::from("mode,alert_id,latency_us\n");
            for (id, l) in &got {
                raw.push_str(&format!("realtime,{id},{l}\n"));
            }
            for (id, l) in &peer {
                raw.push_str(&format!("listen_notify,{id},{l}\n"));
            }
            std::fs::write(format!("{out}/raw.csv"), raw).unwrap();
            std::fs::write(format!("{out}/summary.json"), serde_json::to_string_pretty(&summary).unwrap()).unwrap();
        }
    });
    gateway.stop();
}
