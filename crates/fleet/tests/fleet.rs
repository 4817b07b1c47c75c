//! The fleet engine against a real stack (one per test binary) and in-process gateways.
//!
//! Contents:
//! - rows: a small mixed fleet (Data API and pooler); the rows in `system_metrics` equal the rows the
//!   run reports written, per path, and latency from the intended start is never below service time.
//! - refresh: short-lived tokens are refreshed before expiry with rotation, with no 401.
//! - reauth: an upload with an expired access token gets 401, signs in again and succeeds.
//! - rate limits: under the `hosted` profile, sign-ins beyond the burst get 429 and back off until
//!   every agent is in.
//! - outage: the target goes away mid-run; agents keep sampling into their backlog and flush it
//!   when it returns; nothing is lost, and the outage shows in intended-start latency only.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetbench_fleet::{Progress, RunOutcome, Target, TargetConfig};
use fleetbench_gateway::GatewayConfig;
use fleetbench_stack::StackState;

fn stack() -> &'static StackState {
    static MIGRATED: OnceLock<&'static StackState> = OnceLock::new();
    MIGRATED.get_or_init(|| {
        let state = fleetbench_stack::testing::shared(|_| {});
        let url = state.direct_db_url();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let dir = fleetbench_stack::testing::workspace_root().join("migrations");
                    fleetbench_schema::apply_dir(&url, &dir).await.unwrap();
                })
        })
        .join()
        .unwrap();
        state
    })
}

fn gateway(configure: impl FnOnce(&mut GatewayConfig)) -> String {
    let state = stack();
    let project = fleetbench_stack::ProjectConfig::load(
        &fleetbench_stack::testing::workspace_root().join("supabase"),
    )
    .unwrap();
    fleetbench_gateway::spawn(|url| {
        let mut c = GatewayConfig::for_stack(state, &project, url);
        configure(&mut c);
        c
    })
    .unwrap()
}

fn target(api_url: &str) -> Arc<Target> {
    let state = stack();
    Arc::new(
        Target::new(
            TargetConfig {
                kind: "local".into(),
                api_url: api_url.into(),
                anon_key: state.secrets.anon_key.clone(),
                service_key: state.secrets.service_role_key.clone(),
                db_url: Some(state.pooler_db_url()),
            },
            8,
            64,
        )
        .unwrap(),
    )
}

const SCENARIO: &str = r#"name = "test"
[fleet]
agents = 8
seed = 5
[[load.stages]]
duration = "1s"
agents = 8
[[load.stages]]
duration = "3s"
agents = 8
[load]
grace = "10s"
[workload]
sample_interval = "100ms"
upload_interval = "500ms"
ingest = { rest = 0.5, pooler = 0.5 }
"#;

fn plan(overrides: &[&str]) -> fleetbench_scenario::Plan {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    fleetbench_scenario::load_str(SCENARIO, "test.toml", &o)
        .unwrap()
        .1
}

async fn run(plan: fleetbench_scenario::Plan, target: Arc<Target>) -> (RunOutcome, String) {
    let run_id = uuid::Uuid::new_v4().to_string();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let out = fleetbench_fleet::run(
        plan,
        target,
        run_id.clone(),
        Arc::new(Progress::default()),
        rx,
    )
    .await
    .unwrap();
    (out, run_id)
}

async fn db() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&stack().direct_db_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

/// Rows in `system_metrics` of the run's users.
async fn stored(run_id: &str) -> i64 {
    db().await
        .query_one(
            "select count(*) from public.system_metrics m join auth.users u on u.id = m.user_id \
             where u.raw_app_meta_data ->> 'fleetbench_run_id' = $1",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0)
}

fn op<'a>(out: &'a RunOutcome, name: &str) -> &'a fleetbench_metrics::aggregate::Counts {
    &out.aggregate
        .operations
        .get(name)
        .unwrap_or_else(|| panic!("no {name} samples"))
        .total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_equal_rows_stored_on_both_paths() {
    let g = gateway(|_| {});
    let (out, run_id) = run(plan(&[]), target(&g)).await;
    let written: u64 = out.rows_written.values().sum();
    assert!(written > 0);
    assert_eq!(
        stored(&run_id).await as u64,
        written,
        "rows in the table = rows the run reports written"
    );
    assert_eq!(
        out.rows_sampled,
        written + out.rows_unsent + out.rows_dropped
    );
    for path in ["rest.insert_metrics", "pooler.insert_metrics"] {
        let c = op(&out, path);
        assert_eq!(c.rows, out.rows_written[path], "{path}");
        assert_eq!(c.errors, 0, "{path}: {:?}", c.errors_by_kind);
        assert!(c.latency.value_at_quantile(0.5) >= c.service.value_at_quantile(0.5));
    }
    assert_eq!(op(&out, "auth.admin_create_user").count, 8);
    assert_eq!(op(&out, "rest.create_device").count, 8);
    let deleted = fleetbench_fleet::cleanup(&stack().direct_db_url(), &run_id)
        .await
        .unwrap();
    assert!(
        deleted.contains(&("auth.users".to_string(), 8)),
        "{deleted:?}"
    );
    assert_eq!(stored(&run_id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_they_expire() {
    let g = gateway(|c| c.auth.jwt_expiry_s = 3);
    let (out, run_id) = run(
        plan(&[
            "workload.refresh_margin=\"2s\"",
            "load.stages.1.duration=\"4s\"",
        ]),
        target(&g),
    )
    .await;
    let refresh = op(&out, "auth.refresh");
    assert!(
        refresh.count >= 8,
        "each agent refreshed at least once: {}",
        refresh.count
    );
    assert_eq!(refresh.errors, 0, "{:?}", refresh.errors_by_kind);
    assert_eq!(
        op(&out, "rest.insert_metrics").errors,
        0,
        "{:?}",
        op(&out, "rest.insert_metrics").errors_by_kind
    );
    // Rotation: every refresh retired the token before it (one live token per session).
    let live: i64 = db()
        .await
        .query_one(
            "select count(*) from auth.refresh_tokens t join auth.users u on u.id = t.user_id \
             where u.raw_app_meta_data ->> 'fleetbench_run_id' = $1 and not t.revoked",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 8, "exactly one live refresh token per agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_signs_in_again() {
    let g = gateway(|_| {});
    let t = target(&g);
    // The agent's own credentials, as the engine derives them from the run and its index.
    let run_id: std::sync::Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let (email, password) = fleetbench_fleet::agent::credentials(&run_id, 0);
    t.create_user(&email, &password, &run_id).await.unwrap();
    let mut session = t.sign_in(&email, &password).await.unwrap();
    let machine = fleetbench_fleet::telemetry::Machine::new(1, 0, &[("laptop".into(), 1.0)], &[]);
    let device = t
        .create_device(session.access_token(), &machine.device, "reauth")
        .await
        .unwrap();
    // An access token that expired two minutes ago (beyond any clock-skew allowance), signed right.
    let key = stack().secrets.jwt_secret.as_bytes();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    let mut claims: serde_json::Value = jsonwebtoken::decode(
        session.access_token(),
        &jsonwebtoken::DecodingKey::from_secret(key),
        &v,
    )
    .unwrap()
    .claims;
    claims["exp"] = (chrono::Utc::now().timestamp() - 120).into();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap();
    session = fleetbench_fleet::target::Session::new(
        &expired,
        session.refresh_token.clone(),
        session.expires_at,
    )
    .unwrap();
    let user_id = claims["sub"].as_str().unwrap().to_string();
    let mut m = machine.clone();
    let rows = (0..5)
        .map(|_| m.sample(device, user_id.parse().unwrap(), chrono::Utc::now()))
        .collect();
    let attempt = fleetbench_fleet::agent::Upload {
        index: 0,
        run_id,
        path: fleetbench_fleet::agent::Path::Rest,
        session: session.clone(),
        rows,
        intended_us: 0,
        refresh_margin: Duration::ZERO,
    }
    .run(&t, &fleetbench_fleet::Clock::new())
    .await;
    assert!(attempt.failure.is_none(), "{:?}", attempt.failure);
    assert_eq!(attempt.rows_written, 5);
    let kinds: Vec<(&str, String)> = attempt
        .samples
        .iter()
        .map(|s| {
            (
                s.operation,
                match &s.outcome {
                    fleetbench_metrics::Outcome::Ok => "ok".into(),
                    fleetbench_metrics::Outcome::Error(k) => k.clone(),
                },
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("rest.insert_metrics", "http_401".into()),
            ("auth.password", "ok".into()),
            ("rest.insert_metrics", "ok".into())
        ]
    );
    assert_ne!(attempt.session.access_token(), session.access_token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_rate_limits_are_backed_off_until_every_agent_is_in() {
    // GoTrue's burst of 30 per client; a faster refill than hosted (5/s) keeps the test short.
    let g = gateway(|c| {
        c.auth.rate_limits = Some(fleetbench_gateway::ratelimit::Limits::from_config(
            &fleetbench_stack::project::AuthRateLimits {
                token_refresh: 1500,
                ..Default::default()
            },
        ));
    });
    let (out, _) = run(
        plan(&[
            "fleet.agents=40",
            "load.stages.0.agents=40",
            "load.stages.1.agents=40",
            "fleet.provision_concurrency=40",
            "load.stages.1.duration=\"1s\"",
        ]),
        target(&g),
    )
    .await;
    assert_eq!(out.agents, 40, "every agent got in");
    let password = op(&out, "auth.password");
    assert!(
        password
            .errors_by_kind
            .get("http_429")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{:?}",
        password.errors_by_kind
    );
    assert_eq!(
        password.count - password.errors,
        40,
        "one successful sign-in per agent"
    );
}

/// A TCP proxy that can be taken down: while down it closes new connections at once and cuts the
/// open ones.
struct Proxy {
    url: String,
    down: tokio::sync::watch::Sender<bool>,
}

async fn proxy(to: &str) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = to.trim_start_matches("http://").to_string();
    let (down, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let mut watch = watch.clone();
            if *watch.borrow() {
                drop(inbound);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = watch.wait_for(|d| *d) => {}
                }
            });
        }
    });
    Proxy { url, down }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_survives_an_outage_and_is_flushed() {
    let g = gateway(|_| {});
    let p = proxy(&g).await;
    let progress = Arc::new(Progress::default());
    let run_id = uuid::Uuid::new_v4().to_string();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let plan = plan(&[
        "workload.ingest.rest=1",
        "workload.ingest.pooler=0",
        "load.stages.1.duration=\"15s\"",
    ]);
    let batch = u64::from(plan.batch_rows);
    let engine = tokio::spawn(fleetbench_fleet::run(
        plan,
        target(&p.url),
        run_id.clone(),
        progress.clone(),
        rx,
    ));
    // Observed, not timed: wait for uploads, cut the target, wait for the backlog to build, restore.
    let watched = progress.clone();
    let w = tokio::task::spawn_blocking(move || {
        let wait = |what: &str, f: &dyn Fn(&Progress) -> bool| {
            let ok = (0..3_000).any(|_| {
                f(&watched) || {
                    std::thread::sleep(Duration::from_millis(10));
                    false
                }
            });
            assert!(ok, "timed out waiting for {what}");
        };
        wait("first rows", &|p| p.rows_written.load(Relaxed) > 0);
        p.down.send(true).unwrap();
        wait("upload errors", &|p| p.errors.load(Relaxed) >= 8);
        wait("a backlog of 3 batches per agent", &|p| {
            p.backlog_rows.load(Relaxed) >= 8 * 3 * batch
        });
        p.down.send(false).unwrap();
        p // kept alive: the proxy's connections end when its sender goes
    });
    let _proxy = w.await.unwrap();
    let out = engine.await.unwrap().unwrap();
    let written: u64 = out.rows_written.values().sum();
    assert_eq!(
        stored(&run_id).await as u64,
        written,
        "rows in the table = rows reported written"
    );
    assert_eq!(
        out.rows_sampled,
        written + out.rows_unsent + out.rows_dropped
    );
    let rest = op(&out, "rest.insert_metrics");
    assert_eq!(
        (out.rows_dropped, out.rows_unsent),
        (0, 0),
        "the backlog was flushed whole; errors {:?}, windows {:?}",
        rest.errors_by_kind,
        out.aggregate.operations["rest.insert_metrics"]
            .windows
            .iter()
            .map(|(w, c)| (*w, c.count, c.errors))
            .collect::<Vec<_>>()
    );
    assert!(
        rest.errors >= 8
            && rest
                .errors_by_kind
                .keys()
                .all(|k| k == "connect" || k == "transport"),
        "{:?}",
        rest.errors_by_kind
    );
    // The outage is in the latency from the intended start, not in the service time.
    let (lat, svc) = (rest.latency.max(), rest.service.value_at_quantile(0.99));
    assert!(
        lat > 1_000_000 && lat > 5 * svc,
        "intended-start max {lat} µs vs service p99 {svc} µs"
    );
}

/// A sink with `model` on a free port, and a target for it with `connections` upload connections.
async fn sink_target(
    model: fleetbench_fleet::sink::Model,
    connections: usize,
) -> (Arc<Target>, Arc<fleetbench_fleet::sink::Sink>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sink = fleetbench_fleet::sink::Sink::new(model);
    tokio::spawn(fleetbench_fleet::sink::serve(listener, sink.clone()));
    let target = Arc::new(
        Target::new(
            TargetConfig {
                kind: "remote".into(),
                api_url: url,
                anon_key: "k".into(),
                service_key: "k".into(),
                db_url: None,
            },
            1,
            connections,
        )
        .unwrap(),
    );
    (target, sink)
}

fn fixed(ms: u64) -> fleetbench_fleet::sink::Model {
    fleetbench_fleet::sink::Model {
        latency: fleetbench_fleet::sink::Latency::Fixed(Duration::from_millis(ms)),
        stall: None,
    }
}

/// A fleet against `fleetbench sink` with `model`: (outcome, sink).
async fn against_sink(
    model: fleetbench_fleet::sink::Model,
    overrides: &[&str],
) -> (RunOutcome, Arc<fleetbench_fleet::sink::Sink>) {
    let (target, sink) = sink_target(model, 256).await;
    let mut o = vec![
        "workload.ingest.rest=1",
        "workload.ingest.pooler=0",
        "load.stages.0.duration=\"0s\"",
        "workload.sample_interval=\"100ms\"",
        "workload.upload_interval=\"100ms\"",
        "fleet.agents=50",
        "load.stages.0.agents=50",
        "load.stages.1.agents=50",
    ];
    o.extend_from_slice(overrides);
    let (out, _) = run(plan(&o), target).await;
    (out, sink)
}

/// Runs `scenario` (a whole file) against `target`.
async fn run_text(scenario: &str, target: Arc<Target>) -> RunOutcome {
    let plan = fleetbench_scenario::load_str(scenario, "t.toml", &[])
        .unwrap()
        .1;
    run(plan, target).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_rates_are_held_constant_and_ramping() {
    let (target, sink) = sink_target(fixed(2), 256).await;
    // 200/s held for 4 s, then a ramp to 400/s over 4 s: 800 + 1200 arrivals.
    let out = run_text(
        r#"name = "rate"
[fleet]
agents = 50
[load]
model = "arrival_rate"
[[load.stages]]
duration = "0s"
rate = "200/s"
[[load.stages]]
duration = "4s"
rate = "200/s"
[[load.stages]]
duration = "4s"
rate = "24000/m"
[workload]
sample_interval = "1s"
upload_interval = "2s"
"#,
        target,
    )
    .await;
    let ops = &out.aggregate.operations["rest.insert_metrics"];
    assert_eq!(out.aggregate.dropped, 0);
    assert_eq!(out.aggregate.late, 0);
    assert_eq!(ops.total.count, 2000, "every arrival carried once");
    assert_eq!(sink.inserts.load(Relaxed), 2000);
    assert_eq!(sink.rows.load(Relaxed), 4000, "two rows per upload");
    // Per one-second window, the count is the rate's integral over that window (independently:
    // 200 in the hold, 200 + 50·t at t seconds into the ramp), within one arrival per worker.
    let rate = |t: f64| {
        if t < 4.0 {
            200.0
        } else {
            200.0 + 50.0 * (t - 4.0)
        }
    };
    let start = out.load_start_us as f64 / 1e6;
    for (w, c) in &ops.windows {
        let (a, b) = (
            (*w as f64 - start).max(0.0),
            (*w as f64 + 1.0 - start).min(8.0),
        );
        if b <= a {
            continue;
        }
        let steps = 1000;
        let truth: f64 = (0..steps)
            .map(|i| rate(a + (b - a) * (i as f64 + 0.5) / steps as f64) * (b - a) / steps as f64)
            .sum();
        assert!(
            (c.count as f64 - truth).abs() <= 2.5,
            "window {w}: {} uploads, the rate's integral is {truth:.1}",
            c.count
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_that_find_no_idle_agent_are_dropped_and_counted() {
    // Two agents, each busy 100 ms per upload, cannot carry 100 arrivals a second.
    let (target, sink) = sink_target(fixed(100), 256).await;
    let out = run_text(
        r#"name = "overload"
[fleet]
agents = 2
[load]
model = "arrival_rate"
[[load.stages]]
duration = "3s"
rate = "100/s"
[[load.stages]]
duration = "0s"
rate = "100/s"
[workload]
sample_interval = "1s"
upload_interval = "1s"
"#,
        target,
    )
    .await;
    // The ramp from 0 to 100/s over 3 s asks for 150 arrivals in all.
    let carried = out.aggregate.operations["rest.insert_metrics"].total.count;
    assert_eq!(carried + out.aggregate.dropped, 150);
    assert!(
        carried <= 2 * 31,
        "{carried} uploads from two agents at 100 ms each"
    );
    assert!(
        out.aggregate.dropped >= 80,
        "dropped {}",
        out.aggregate.dropped
    );
    assert_eq!(sink.inserts.load(Relaxed), carried);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_agents_go_again_when_their_upload_ends() {
    let (target, sink) = sink_target(fixed(20), 256).await;
    let out = run_text(
        r#"name = "closed"
[fleet]
agents = 10
[load]
model = "closed"
[[load.stages]]
duration = "0s"
agents = 10
[[load.stages]]
duration = "4s"
agents = 10
[workload]
sample_interval = "1s"
upload_interval = "1s"
think_time = "30ms"
"#,
        target,
    )
    .await;
    let ops = &out.aggregate.operations["rest.insert_metrics"];
    // Each agent cycles in 20 ms of service + 30 ms of thinking: at most 80 uploads each in 4 s.
    let n = ops.total.count;
    assert!(
        (560..=810).contains(&n),
        "{n} uploads from 10 agents at 50 ms a cycle"
    );
    assert_eq!(sink.inserts.load(Relaxed), n);
    // A closed loop has no schedule to fall behind: its latency is its service time.
    let (lat, svc) = (
        ops.total.latency.value_at_quantile(0.5),
        ops.total.service.value_at_quantile(0.5),
    );
    assert!(
        lat >= 20_000 && lat - svc < 2_000,
        "latency p50 {lat} µs, service p50 {svc} µs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_shares_at_most_its_connections() {
    let (target, sink) = sink_target(fixed(20), 4).await;
    let out = run_text(
        r#"name = "capped"
[fleet]
agents = 32
connections = 4
[load]
model = "closed"
[[load.stages]]
duration = "0s"
agents = 32
[[load.stages]]
duration = "3s"
agents = 32
[workload]
sample_interval = "1s"
upload_interval = "1s"
"#,
        target.clone(),
    )
    .await;
    // Four connections at 20 ms a request carry at most 200 uploads a second, whatever 32 agents want.
    let ops = &out.aggregate.operations["rest.insert_metrics"];
    assert!(
        ops.total.count <= 3 * 200 + 4,
        "{} uploads",
        ops.total.count
    );
    assert!(ops.total.count >= 3 * 100, "{} uploads", ops.total.count);
    assert_eq!(target.upload_connections_opened(), 4);
    assert_eq!(sink.inserts.load(Relaxed), ops.total.count);
    // 32 agents queue for 4 connections: each waits about 7 others' 20 ms.
    assert!(ops.total.latency.value_at_quantile(0.5) > 100_000);
}

/// A TLS server with a fresh self-signed certificate for `localhost` answering 201 to anything;
/// (port, certificate).
async fn tls_server() -> (u16, rustls::pki_types::CertificateDer<'static>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], private)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(201)
                                .body(http_body_util::Full::new(bytes::Bytes::from(path)))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn uploads_go_over_verified_tls() {
    let (port, cert) = tls_server().await;
    let url = format!("https://localhost:{port}/base");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let trusting = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let pool =
        fleetbench_fleet::http::Pool::with_tls(&url, 2, Duration::from_secs(10), Some(trusting))
            .unwrap();
    for _ in 0..5 {
        let reply = pool
            .post(
                "/rest/v1/system_metrics",
                &[],
                bytes::Bytes::from_static(b"[]"),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(&reply.body[..], b"/base/rest/v1/system_metrics");
    }
    assert_eq!(
        pool.opened.load(Relaxed),
        1,
        "one kept-alive connection serves them all"
    );
    // The platform's roots do not know a self-signed certificate: refused as a TLS failure.
    let strict = fleetbench_fleet::http::Pool::new(&url, 2, Duration::from_secs(10)).unwrap();
    let err = strict
        .post("/x", &[], bytes::Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "tls");
}

/// The windows of `op` strictly inside the hold (the first and last two dropped), merged.
fn steady_windows(
    out: &RunOutcome,
    op: &str,
    most: usize,
) -> (fleetbench_metrics::aggregate::Counts, usize) {
    let windows = &out.aggregate.operations[op].windows;
    let keys: Vec<u64> = windows.keys().copied().collect();
    let inner = &keys[2..keys.len() - 2];
    let inner = &inner[..inner.len().min(most)];
    let mut merged = fleetbench_metrics::aggregate::Counts::default();
    for k in inner {
        let c = &windows[k];
        merged.latency.add(&c.latency).unwrap();
        merged.service.add(&c.service).unwrap();
        merged.count += c.count;
    }
    (merged, inner.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_holds_the_arrival_rate() {
    let model = fleetbench_fleet::sink::Model {
        latency: fleetbench_fleet::sink::Latency::Fixed(Duration::ZERO),
        stall: None,
    };
    let (out, sink) = against_sink(model, &["load.stages.1.duration=\"8s\""]).await;
    // 50 agents every 100 ms: 500 uploads in every 1 s window of the hold.
    let windows = &out.aggregate.operations["rest.insert_metrics"].windows;
    let keys: Vec<u64> = windows.keys().copied().collect();
    for k in &keys[1..keys.len() - 1] {
        let n = windows[k].count as f64;
        assert!((n - 500.0).abs() <= 5.0, "window {k}: {n} uploads, not 500");
    }
    assert_eq!(out.aggregate.late, 0);
    assert_eq!(
        sink.rows.load(Relaxed),
        out.rows_written["rest.insert_metrics"]
    );
}

/// Stalls of 400 ms every 1.1 s, one upload per agent per second: an upload arriving `u` into a
/// stall waits `400 ms - u`, so the true latency is `d` for the 63.6 % of arrivals outside stalls
/// and `d + U(0, 400 ms]` for the rest (`d`, the undisturbed round trip, is measured at p25).
/// Each agent's arrivals drift 100 ms per period against the stalls and sweep the whole period in
/// 11 uploads; the truth is checked over 22 one-second windows (two sweeps), where every agent's
/// arrivals sit on an even 100 ms grid across the period. The
/// reported p90, p95 and p99 must be within 2 % of that truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_the_analytic_truth_under_stalls() {
    let (stall, period) = (400.0, 1100.0);
    let model = fleetbench_fleet::sink::Model {
        latency: fleetbench_fleet::sink::Latency::Fixed(Duration::ZERO),
        stall: Some(fleetbench_fleet::sink::Stall {
            length: Duration::from_millis(400),
            period: Duration::from_millis(1100),
        }),
    };
    let (out, _) = against_sink(
        model,
        &[
            "fleet.agents=40",
            "load.stages.0.agents=40",
            "load.stages.1.agents=40",
            "workload.upload_interval=\"1s\"",
            "workload.sample_interval=\"1s\"",
            "load.stages.1.duration=\"28s\"",
            "output.window=\"1s\"",
        ],
    )
    .await;
    let (steady, windows) = steady_windows(&out, "rest.insert_metrics", 22);
    assert_eq!(
        (windows, steady.count),
        (22, 22 * 40),
        "22 windows of one upload per agent"
    );
    let d = steady.latency.value_at_quantile(0.25) as f64 / 1000.0;
    let stalled = stall / period;
    let truth = |q: f64| d + stall * (q - (1.0 - stalled)) / stalled;
    for q in [0.90, 0.95, 0.99] {
        let got = steady.latency.value_at_quantile(q) as f64 / 1000.0;
        let want = truth(q);
        eprintln!("p{}: {got:.1} ms reported, {want:.1} ms true", q * 100.0);
        assert!(
            (got - want).abs() <= 0.02 * want,
            "p{}: {got:.1} ms reported, {want:.1} ms true (d = {d:.1} ms)",
            q * 100.0
        );
    }
}

/// When uploads come faster than a stall lasts (every 100 ms against 300 ms stalls), the upload
/// that meets the stall holds the agent, the ticks behind it merge into one upload sent when the
/// stall ends, and that upload's wait shows in the latency from its intended start but not in its
/// service time: the difference coordinated omission would hide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_behind_a_stall_show_in_intended_start_latency_only() {
    let model = fleetbench_fleet::sink::Model {
        latency: fleetbench_fleet::sink::Latency::Fixed(Duration::ZERO),
        stall: Some(fleetbench_fleet::sink::Stall {
            length: Duration::from_millis(300),
            period: Duration::from_millis(1010),
        }),
    };
    let (out, _) = against_sink(
        model,
        &["load.stages.1.duration=\"10s\"", "output.window=\"1010ms\""],
    )
    .await;
    let (steady, _) = steady_windows(&out, "rest.insert_metrics", usize::MAX);
    // Per agent and period: ~7.1 undisturbed uploads, one sent into the stall (latency and service
    // 200-300 ms) and one merged behind it (latency 100-200 ms, service a round trip).
    let (lat, svc) = (
        steady.latency.value_at_quantile(0.85) as f64 / 1000.0,
        steady.service.value_at_quantile(0.85) as f64 / 1000.0,
    );
    assert!(
        lat > 100.0 && svc < 0.2 * lat,
        "p85 latency {lat:.1} ms, service {svc:.1} ms"
    );
    let (lat, svc) = (
        steady.latency.value_at_quantile(0.97) as f64 / 1000.0,
        steady.service.value_at_quantile(0.97) as f64 / 1000.0,
    );
    assert!(
        lat > 200.0 && svc > 200.0,
        "p97 latency {lat:.1} ms, service {svc:.1} ms: both see the stalled upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_fail_threshold_stops_the_run_early() {
    // Every upload takes 20 ms; a p50 under 1 ms cannot hold, so after its 1 s delay the
    // threshold stops a run planned for 60 s.
    let (target, sink) = sink_target(fixed(20), 64).await;
    let out = run_text(
        r#"name = "abort"
[fleet]
agents = 10
[load]
model = "closed"
grace = "2s"
[[load.stages]]
duration = "0s"
agents = 10
[[load.stages]]
duration = "60s"
agents = 10
[workload]
sample_interval = "1s"
upload_interval = "1s"
[thresholds]
"rest.insert_metrics" = ["p(99) < 10s", { threshold = "p(50) < 1ms", abort_on_fail = true, delay_abort_eval = "1s" }]
"#,
        target,
    )
    .await;
    let reason = out.aborted.expect("the run was aborted");
    assert!(
        reason.contains("rest.insert_metrics p(50) < 1ms"),
        "{reason}"
    );
    let load_s = (out.clock.now_us() - out.load_start_us) as f64 / 1e6;
    assert!(
        load_s < 20.0,
        "the run went on for {load_s:.1} s after the threshold was crossed"
    );
    assert!(!out.interrupted, "an abort is not a signal");
    // What was measured up to the abort is all there: every upload the sink saw is counted.
    assert_eq!(
        sink.inserts.load(Relaxed),
        out.aggregate.operations["rest.insert_metrics"].total.count
    );
    // A threshold that holds never aborts: the run lasts its stages.
    let (target, _) = sink_target(fixed(20), 64).await;
    let out = run_text(
        r#"name = "holds"
[fleet]
agents = 4
[load]
model = "closed"
[[load.stages]]
duration = "3s"
agents = 4
[workload]
sample_interval = "1s"
upload_interval = "1s"
[thresholds]
"rest.insert_metrics" = [{ threshold = "p(50) < 10s", abort_on_fail = true }]
"#,
        target,
    )
    .await;
    assert_eq!(out.aborted, None);
    assert!((out.clock.now_us() - out.load_start_us) as f64 / 1e6 >= 3.0);
}
