//! The embedded stack's processes (one shared stack per test binary, plus throwaway ones).
//!
//! Contents:
//! - pooler: PgBouncer holds 2,000 concurrent clients in transaction mode on 20 server connections.
//! - functions: anomaly-webhook answers, sanitises, and forwards to the configured webhook URL.
//! - webhooks: six alerts inserted in one transaction are queued by the webhook trigger, sent only
//!   after commit, and reach the sink through pg_net's stand-in and the edge function each once,
//!   with the row's fields (checked against the table), no faster than the configured 5/s, their
//!   answers recorded in `net._http_response`.
//! - lifecycle: `up` is idempotent; `down` leaves no process behind.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fleetbench_stack::testing::{remove_instance, shared, test_options};
use fleetbench_stack::{Stack, process};
use tokio::sync::Semaphore;
use tokio_postgres::NoTls;

/// Bodies received by the test's webhook sink (with when), which lives as long as the binary.
struct Sink {
    url: String,
    bodies: Arc<Mutex<Vec<(std::time::Instant, serde_json::Value)>>>,
    notify: Arc<tokio::sync::Notify>,
}

fn sink() -> &'static Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
    SINK.get_or_init(|| {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (b, n) = (bodies.clone(), notify.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                        let (b, n) = (b.clone(), n.clone());
                        async move {
                            b.lock().unwrap().push((std::time::Instant::now(), body));
                            n.notify_waiters();
                            "ok"
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Sink {
            url,
            bodies,
            notify,
        }
    })
}

fn stack() -> &'static fleetbench_stack::StackState {
    let url = sink().url.clone();
    shared(move |opts| {
        opts.function_env.insert("ANOMALY_WEBHOOK_URL".into(), url);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_holds_2000_clients_in_transaction_mode() {
    const CLIENTS: usize = 2000;
    process::raise_fd_limit();
    let state = stack();
    let url = state.pooler_db_url();
    // Connect in waves (SCRAM costs CPU on both ends), but hold every connection open together.
    let gate = Arc::new(Semaphore::new(100));
    let mut tasks = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (url, gate) = (url.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
            drop(permit);
            let driver = tokio::spawn(conn);
            let rows = client.simple_query("select 1").await?;
            hold(rows.len(), client, driver)
        }));
    }
    let mut held = Vec::with_capacity(CLIENTS);
    for t in tasks {
        held.push(
            t.await
                .unwrap()
                .expect("a client failed to connect or query through the pooler"),
        );
    }
    assert_eq!(held.len(), CLIENTS);

    // While all are connected: the pooler counts them, and PostgreSQL sees only its pool.
    let (admin, conn) = tokio_postgres::connect(
        &format!(
            "postgres://postgres:{}@127.0.0.1:{}/pgbouncer?sslmode=disable",
            state.secrets.postgres_password, state.pooler_transaction.port
        ),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut clients = 0usize;
    for msg in admin.simple_query("show clients").await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = msg
            && r.get("database") == Some("postgres")
        {
            clients += 1;
        }
    }
    assert!(clients >= CLIENTS, "pgbouncer lists {clients} clients");

    let (direct, conn) = tokio_postgres::connect(&state.direct_db_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let server_conns: i64 = direct
        .query_one("select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        server_conns <= 20 + 2,
        "{server_conns} server connections for {CLIENTS} clients"
    );
    drop(held);
}

type Held = (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
);

fn hold(
    rows: usize,
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> Result<Held, tokio_postgres::Error> {
    assert!(rows >= 1);
    Ok((client, driver))
}

#[tokio::test]
async fn anomaly_webhook_forwards_a_sanitised_alert() {
    let state = stack();
    let base = state
        .function_url("anomaly-webhook")
        .expect("anomaly-webhook is running");
    let http = reqwest::Client::new();
    let payload = serde_json::json!({
        "type": "INSERT", "table": "alerts", "schema": "public",
        "record": {
            "id": 41, "user_id": "7d9b8f0e-0000-4000-8000-000000000001", "device_id": "dev-1",
            "kind": "thermal", "severity": "critical", "value": 97.5,
            "message": "Critical Thermal Warning\u{0007} CPU at 97.5", "secret_note": "do not forward"
        },
        "old_record": null
    });
    let waiting = sink().notify.notified();
    let res = http.post(&base).json(&payload).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["forwarded"], true, "{body}");
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .ok();
    let received = sink().bodies.lock().unwrap().clone();
    let alert = received
        .iter()
        .map(|(_, b)| &b["alert"])
        .find(|a| a["id"] == 41)
        .unwrap_or_else(|| panic!("the sink did not receive alert 41: {received:?}"));
    assert_eq!(alert["kind"], "thermal");
    assert_eq!(alert["value"], 97.5);
    assert_eq!(alert["message"], "Critical Thermal Warning  CPU at 97.5");
    assert!(
        alert.get("user_id").is_none() && alert.get("secret_note").is_none(),
        "{alert}"
    );

    // Not an alert insert: answered, not forwarded. Not JSON: 400.
    let other = serde_json::json!({"type": "UPDATE", "table": "alerts", "schema": "public", "record": {}, "old_record": {}});
    let res = http.post(&base).json(&other).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["forwarded"],
        false
    );
    let res = http.post(&base).body("not json").send().await.unwrap();
    assert_eq!(res.status(), 400);
}

#[test]
fn up_is_idempotent_and_down_leaves_nothing_behind() {
    let opts = test_options();
    let first = Stack::up(&opts, &mut |_| {}).expect("stack up");
    let again = Stack::up(&opts, &mut |_| {}).expect("second stack up");
    assert_eq!(
        first.pids(),
        again.pids(),
        "a running stack is returned as it is"
    );
    assert!(Stack::status(&opts.paths).unwrap().all_running());
    let pids = first.pids();
    assert!(pids.len() >= 4, "{pids:?}");
    assert!(!process::pids_using(&opts.paths.instance).is_empty());

    let report = Stack::down(&opts.paths).expect("stack down");
    assert!(
        report.killed.is_empty(),
        "processes had to be killed: {:?}",
        report.killed
    );
    let alive: Vec<u32> = pids.into_iter().filter(|&p| process::is_alive(p)).collect();
    assert!(alive.is_empty(), "still running after down: {alive:?}");
    let leftovers = process::pids_using(&opts.paths.instance);
    assert!(
        leftovers.is_empty(),
        "processes still using the instance: {leftovers:?}"
    );
    assert!(
        !Stack::status(&opts.paths)
            .unwrap()
            .services
            .iter()
            .any(|s| s.running)
    );

    // And it comes back on the same cluster and secrets.
    let back = Stack::up(&opts, &mut |_| {}).expect("stack up after down");
    assert_eq!(
        back.secrets.postgres_password,
        first.secrets.postgres_password
    );
    remove_instance(&opts.paths);
    assert!(process::pids_using(&opts.paths.instance).is_empty());
}

#[tokio::test]
async fn an_alert_insert_reaches_the_sink_through_the_edge_function() {
    const ALERTS: usize = 6;
    const RATE: f64 = 5.0;
    let state = stack();
    let dir = fleetbench_stack::testing::workspace_root().join("migrations");
    fleetbench_schema::apply_dir(&state.direct_db_url(), &dir)
        .await
        .unwrap();
    let (mut db, conn) = tokio_postgres::connect(&state.direct_db_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let function = state.function_url("anomaly-webhook").unwrap();
    db.execute(
        "update fleetbench.webhook_targets set url = $1 where name = 'anomaly-webhook'",
        &[&function],
    )
    .await
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(fleetbench_stack::pgnet::run(
        state.direct_db_url(),
        RATE,
        None,
        stop_rx,
    ));

    let user: uuid::Uuid = db
        .query_one(
            "insert into auth.users (email) values ($1) returning id",
            &[&format!("hook-{}@fleetbench.test", uuid::Uuid::new_v4())],
        )
        .await
        .unwrap()
        .get(0);
    let device: uuid::Uuid = db
        .query_one(
            "insert into public.devices (user_id, hostname) values ($1, 'hook-host') returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    // Queued inside the transaction, sent only after it commits.
    let tx = db.transaction().await.unwrap();
    let ids: Vec<i64> = tx
        .query(
            "insert into public.alerts (user_id, device_id, kind, severity, metric_ts, value, threshold, message) \
             select $1, $2, 'thermal', 'critical', now(), 90 + g, 90, 'Critical Thermal Warning ' || g \
             from generate_series(1, $3::int8) g order by g returning id",
            &[&user, &device, &(ALERTS as i64)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let queued: i64 = tx
        .query_one("select count(*) from net.http_request_queue where convert_from(body, 'UTF8') like '%' || $1::text || '%'", &[&user.to_string()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, ALERTS as i64, "each alert queues one request");
    let sent_before_commit = sink()
        .bodies
        .lock()
        .unwrap()
        .iter()
        .any(|(_, b)| ids.contains(&b["alert"]["id"].as_i64().unwrap_or(-1)));
    assert!(!sent_before_commit);
    tx.commit().await.unwrap();

    let mine = || -> Vec<(std::time::Instant, serde_json::Value)> {
        sink()
            .bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| ids.contains(&b["alert"]["id"].as_i64().unwrap_or(-1)))
            .cloned()
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while mine().len() < ALERTS {
        let waiting = sink().notify.notified();
        if mine().len() >= ALERTS {
            break;
        }
        assert!(
            tokio::time::timeout_at(deadline, waiting).await.is_ok(),
            "only {} of {ALERTS} alerts reached the sink",
            mine().len()
        );
    }
    let got = mine();
    assert_eq!(got.len(), ALERTS, "each alert once");
    for id in &ids {
        let row = db
            .query_one(
                "select kind, severity, message, value::float8 from public.alerts where id = $1",
                &[id],
            )
            .await
            .unwrap();
        let (_, body) = got.iter().find(|(_, b)| b["alert"]["id"] == *id).unwrap();
        let alert = &body["alert"];
        assert_eq!(alert["kind"], row.get::<_, String>(0));
        assert_eq!(alert["severity"], row.get::<_, String>(1));
        assert_eq!(alert["message"], row.get::<_, String>(2));
        assert_eq!(alert["value"].as_f64(), Some(row.get::<_, f64>(3)));
        assert!(alert.get("user_id").is_none(), "{alert}");
    }
    // Started no faster than RATE per second: the first and last are at least (n-1)/RATE apart.
    let first = got.iter().map(|(t, _)| *t).min().unwrap();
    let last = got.iter().map(|(t, _)| *t).max().unwrap();
    let min_span = Duration::from_secs_f64((ALERTS - 1) as f64 / RATE) - Duration::from_millis(50);
    assert!(
        last - first >= min_span,
        "{ALERTS} requests within {:?}",
        last - first
    );
    // Each answer recorded (the worker finishes its batch before it stops).
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    let answered: i64 = db
        .query_one(
            "select count(*) from net._http_response where status_code = 200 and content like '%\"forwarded\":true%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(answered >= ALERTS as i64, "{answered} answers recorded");
}
