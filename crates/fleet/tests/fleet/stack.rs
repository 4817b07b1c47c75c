//! The fleet against the real stack: rows, token refresh, re-authentication, rate limits, outages.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetbench_fleet::Progress;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_equal_rows_stored_on_both_paths() {
    let _shared = QUIET.read().await;
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
    // In batches of at most 7 rows, each its own transaction: every row counted once.
    let rows_before = stored(&run_id).await;
    let mut batches = Vec::new();
    let deleted = fleetbench_fleet::cleanup(&stack().direct_db_url(), &run_id, 7, &mut |t, n| {
        batches.push((t.to_string(), n))
    })
    .await
    .unwrap();
    assert!(
        deleted.contains(&("auth.users".to_string(), 8)),
        "{deleted:?}"
    );
    let metrics = deleted
        .iter()
        .find(|d| d.0 == "system_metrics")
        .map_or(0, |d| d.1);
    assert_eq!(metrics, rows_before, "{deleted:?}");
    assert!(batches.len() as i64 >= rows_before / 7, "{batches:?}");
    assert_eq!(stored(&run_id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_they_expire() {
    let _shared = QUIET.read().await;
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

/// Tokens that live 8 s under the default 60 s margin: refreshed when half their life is left,
/// once or twice per agent in a 6 s load, not before each of its ~12 uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_per_lifetime_not_per_upload() {
    let _shared = QUIET.read().await;
    let g = gateway(|c| c.auth.jwt_expiry_s = 8);
    let (out, _) = run(plan(&["load.stages.1.duration=\"5s\""]), target(&g)).await;
    let (refreshes, uploads) = (
        op(&out, "auth.refresh").count,
        op(&out, "rest.insert_metrics").count + op(&out, "pooler.insert_metrics").count,
    );
    assert!(
        (8..=16).contains(&refreshes) && uploads >= 6 * refreshes,
        "{refreshes} refreshes for {uploads} uploads of 8 agents"
    );
    assert_eq!(op(&out, "auth.refresh").errors, 0);
    assert_eq!(op(&out, "rest.insert_metrics").errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_signs_in_again() {
    let _shared = QUIET.read().await;
    let g = gateway(|_| {});
    let t = target(&g);
    // The agent's own credentials, as the engine derives them from the run and its index.
    let run_id: std::sync::Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let (email, password) = fleetbench_fleet::agent::credentials(&t.config.service_key, &run_id, 0);
    t.create_user(&email, &password, &run_id).await.unwrap();
    let mut session = t.sign_in(&email, &password).await.unwrap();
    let machine =
        fleetbench_fleet::telemetry::Machine::new(1, 0, &[("laptop".into(), 1.0)], &[], &[]);
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
        path: fleetbench_fleet::agent::IngestPath::Rest,
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
    let _shared = QUIET.read().await;
    // GoTrue's burst of 30 per client refilling 2 a second (hosted: 0.5), emptied by the test
    // itself before the fleet starts: the test makes its 429 happen instead of hoping the machine
    // is fast enough to outrun the refill. 24 agents then need 12 s of refill; they all sign in
    // at once (provisioning concurrency 24), so some are refused, whatever the machine's speed.
    let g = limited_gateway(600, false);
    drain_token_bucket(&g).await;
    let (out, _) = run(
        plan(&[
            "fleet.agents=24",
            "load.stages.0.agents=24",
            "load.stages.1.agents=24",
            "fleet.provision_concurrency=24",
            "load.stages.1.duration=\"1s\"",
        ]),
        target(&g),
    )
    .await;
    assert_eq!(out.agents, 24, "every agent got in");
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
        24,
        "one successful sign-in per agent"
    );
}

/// Signs in with a wrong password from this machine's address until GoTrue's `/token` bucket
/// answers 429 (however many calls that takes while it refills).
async fn drain_token_bucket(gateway: &str) {
    let t = target(gateway);
    for _ in 0..1000 {
        match t
            .sign_in_from("nobody@fleetbench.load.test", "wrong", None)
            .await
        {
            Err(e) if e.kind() == "http_429" => return,
            _ => {}
        }
    }
    panic!("1000 sign-ins and no 429: the gateway has no /token limit");
}

/// The same 40 agents against a bucket that never refills while the test runs (1 per 5 min, burst
/// 30), with IP address forwarding on and the secret key: each agent signs in as its own address,
/// and not one `/token` call is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_give_every_agent_its_own_auth_bucket() {
    let _shared = QUIET.read().await;
    let g = limited_gateway(1, true);
    let keys = stack()
        .secrets
        .opaque
        .clone()
        .expect("the stack's new keys");
    let forwarding = |on: bool| {
        Arc::new(
            fleetbench_fleet::Target::new(
                fleetbench_fleet::TargetConfig {
                    kind: "remote".into(),
                    api_url: g.clone(),
                    anon_key: keys.publishable.clone(),
                    service_key: keys.secret.clone(),
                    db_url: None,
                    forward_ip: on,
                    auth_limit: None,
                },
                8,
                64,
                fleetbench_fleet::target::DEFAULT_TIMEOUT,
            )
            .unwrap(),
        )
    };
    let (out, run_id) = run(sign_in_storm(40), forwarding(true)).await;
    all_signed_in_at_once(&out, 40);
    // Without forwarding the same sign-ins share this machine's bucket: 30, then 429.
    let (email, secret) = fleetbench_fleet::agent::credentials(&keys.secret, &run_id, 0);
    let shared = forwarding(false);
    let mut statuses = Vec::new();
    for k in 0..31 {
        let from = Some(fleetbench_fleet::agent::address(k));
        let r = shared.sign_in_from(&email, &secret, from).await;
        statuses.push(r.map_or_else(|e| e.kind(), |_| "ok".into()));
    }
    assert!(statuses[..30].iter().all(|s| s == "ok"), "{statuses:?}");
    assert_eq!(statuses[30], "http_429");
}

/// 60 agents from one address against a bucket of 30 refilling 5 a second, with the client-side
/// budget set to the same limit: sign-ins go at the bucket's pace and not one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_token_limit_paces_sign_ins_without_a_429() {
    let _shared = QUIET.read().await;
    let limit = fleetbench_fleet::target::AuthLimit {
        per_5min: 1500,
        burst: 30,
    };
    let g = limited_gateway(limit.per_5min, false);
    let state = stack();
    let target = Arc::new(
        fleetbench_fleet::Target::new(
            fleetbench_fleet::TargetConfig {
                kind: "remote".into(),
                api_url: g.clone(),
                anon_key: state.secrets.anon_key.clone(),
                service_key: state.secrets.service_role_key.clone(),
                db_url: None,
                forward_ip: false,
                auth_limit: Some(limit),
            },
            8,
            64,
            fleetbench_fleet::target::DEFAULT_TIMEOUT,
        )
        .unwrap(),
    );
    let (out, _) = run(sign_in_storm(60), target).await;
    all_signed_in_at_once(&out, 60);
}

/// `n` agents on the Data API only, all signing in at once, for a second of load.
fn sign_in_storm(n: u32) -> fleetbench_scenario::Plan {
    let sets: Vec<String> = [
        format!("fleet.agents={n}"),
        format!("load.stages.0.agents={n}"),
        format!("load.stages.1.agents={n}"),
        format!("fleet.provision_concurrency={n}"),
        "load.stages.1.duration=\"1s\"".into(),
        "workload.ingest.rest=1".into(),
        "workload.ingest.pooler=0".into(),
    ]
    .into();
    plan(&sets.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Every agent of `out` got in with one sign-in each, not one refused.
fn all_signed_in_at_once(out: &fleetbench_fleet::RunOutcome, n: u64) {
    assert_eq!(u64::from(out.agents), n, "every agent got in");
    let password = op(out, "auth.password");
    assert_eq!(
        (password.count, password.errors),
        (n, 0),
        "{:?}",
        password.errors_by_kind
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
    let _shared = QUIET.read().await;
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
            .windows()
            .map(|(w, c)| (w, c.count, c.errors))
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

/// A million rows of one run, as hours of uploads leave them, removed in batches: a cleanup
/// stopped after three batches keeps what it removed (each batch is its own transaction), and a
/// second cleanup removes exactly what is left, down to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_cleanup_is_batched_and_resumable() {
    let _shared = QUIET.read().await;
    let g = gateway(|_| {});
    let (_, run_id) = run(
        plan(&[
            "fleet.agents=2",
            "load.stages.0.agents=2",
            "load.stages.1.agents=2",
            "load.stages.1.duration=\"1s\"",
        ]),
        target(&g),
    )
    .await;
    let db = db().await;
    db.execute(
        "insert into public.system_metrics (device_id, user_id, ts, cpu_pct) \
         select d.id, d.user_id, now() + (s % 1000) * interval '1 millisecond', 1 \
         from generate_series(1, 500000) s, public.devices d join auth.users u on u.id = d.user_id \
         where u.raw_app_meta_data ->> 'fleetbench_run_id' = $1",
        &[&run_id],
    )
    .await
    .unwrap();
    let before = stored(&run_id).await;
    assert!(before >= 1_000_000, "{before} rows");
    // A cleanup stopped after three batches: what it committed, batch by batch, is what
    // `cleanup` itself calls in its loop.
    for _ in 0..3 {
        db.execute(
            "select * from fleetbench.cleanup_run_batch($1, $2)",
            &[&run_id, &fleetbench_fleet::CLEANUP_BATCH],
        )
        .await
        .unwrap();
    }
    let left = stored(&run_id).await;
    assert!(
        left < before && left > 0,
        "{left} of {before} rows left after the stopped cleanup"
    );
    let deleted = clean_up(&run_id).await;
    let metrics = deleted
        .iter()
        .find(|d| d.0 == "system_metrics")
        .map_or(0, |d| d.1);
    assert_eq!(metrics, left, "{deleted:?}");
    assert!(
        deleted.contains(&("auth.users".to_string(), 2)),
        "{deleted:?}"
    );
    assert_eq!(stored(&run_id).await, 0);
}
