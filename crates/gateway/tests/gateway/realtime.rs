//! Realtime over the WAL: alerts committed by another connection reach the websocket of the user
//! allowed to read them (and no other), in commit order, through joins, limits, heartbeats, token
//! refresh and expiry, broadcast, and restarts of the gateway.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Agent, Gateway, at, gateway, start_running};
use crate::ws::{Ws, token, user_token};

/// Inserts `n` alerts for `a` in one transaction; returns their ids in order.
pub async fn insert_alerts(db: &tokio_postgres::Client, a: &Agent, n: i64, note: &str) -> Vec<i64> {
    db.query(
        "insert into public.alerts (user_id, device_id, kind, severity, metric_ts, value, threshold, message) \
         select $1::text::uuid, $2::text::uuid, 'thermal', 'critical', now(), 90 + g % 10, 90, $3 || ' ' || g \
         from generate_series(1, $4::int8) g order by g returning id",
        &[&a.user_id, &a.device_id, &note, &n],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn alerts_binding(filter: Option<String>) -> Value {
    let mut b = json!({ "event": "INSERT", "schema": "public", "table": "alerts" });
    if let Some(f) = filter {
        b["filter"] = json!(f);
    }
    json!([b])
}

#[tokio::test]
async fn an_alert_reaches_its_owner_and_no_one_else() {
    let g = gateway();
    let (a, b) = (g.agent("rt-owner-a").await, g.agent("rt-owner-b").await);
    let mut wa = Ws::open(g).await;
    let reply = wa
        .subscribe(
            "alerts-a",
            &a.token,
            alerts_binding(Some(format!("user_id=eq.{}", a.user_id))),
        )
        .await;
    let binding = &reply["response"]["postgres_changes"][0];
    assert_eq!(
        binding["filter"],
        json!(format!("user_id=eq.{}", a.user_id))
    );
    // b listens to every alert insert, filtered only by row-level security.
    let mut wb = Ws::open(g).await;
    wb.subscribe("alerts-b", &b.token, alerts_binding(None))
        .await;

    let db = g.db().await;
    let ids_a = insert_alerts(&db, &a, 1, "for a").await;
    let ids_b = insert_alerts(&db, &b, 1, "for b").await;

    let got = wa.change().await;
    assert_eq!(got["ids"], json!([binding["id"]]));
    let data = &got["data"];
    assert_eq!(
        (
            data["schema"].as_str(),
            data["table"].as_str(),
            data["type"].as_str()
        ),
        (Some("public"), Some("alerts"), Some("INSERT"))
    );
    assert_eq!(data["errors"], Value::Null);
    assert_eq!(data["record"]["id"], json!(ids_a[0]));
    assert_eq!(data["record"]["user_id"], json!(a.user_id));
    assert_eq!(data["record"]["value"].as_f64(), Some(91.0));
    assert!(
        data["commit_timestamp"].as_str().unwrap().ends_with('Z'),
        "{data}"
    );
    let columns: Vec<(&str, &str)> = data["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    let truth: Vec<(String, String)> = db
        .query(
            "select attname::text, t.typname::text from pg_attribute a join pg_type t on t.oid = a.atttypid \
             where attrelid = 'public.alerts'::regclass and attnum > 0 and not attisdropped order by attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        columns,
        truth
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect::<Vec<_>>()
    );

    // b's first change is its own alert: a's, committed before it, was not visible to b.
    let got_b = wb.change().await;
    assert_eq!(got_b["data"]["record"]["id"], json!(ids_b[0]));
}

#[tokio::test]
async fn join_errors_are_realtime_s() {
    let g = gateway();
    let a = g.agent("rt-join").await;
    let mut ws = Ws::open(g).await;
    let reply = ws.join("realtime", Some(&a.token), json!({})).await;
    assert_eq!(reply["status"], "error");

    let expired = user_token(&g.secret, &a.user_id, -30);
    let reply = ws.join("x1", Some(&expired), json!({})).await;
    let reason = reply["response"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("InvalidJWTExpiration: Token has expired"),
        "{reason}"
    );

    let forged = user_token("not-the-secret-not-the-secret-000", &a.user_id, 600);
    let reply = ws.join("x2", Some(&forged), json!({})).await;
    assert_eq!(
        reply["response"]["reason"],
        "JwtSignatureError: Failed to validate JWT signature"
    );

    let no_exp = token(
        &g.secret,
        json!({ "sub": a.user_id, "role": "authenticated" }),
    );
    let reply = ws.join("x3", Some(&no_exp), json!({})).await;
    assert_eq!(
        reply["response"]["reason"],
        "MalformedJWT: Fields `role` and `exp` are required in JWT"
    );

    // Not in the publication: the join succeeds, the subscription does not.
    let reply = ws
        .join("x4", Some(&a.token), json!({ "postgres_changes": [{ "event": "*", "schema": "public", "table": "devices" }] }))
        .await;
    assert_eq!(reply["status"], "ok");
    let system = ws.system("x4").await;
    assert_eq!(system["payload"]["status"], "error");
    assert!(
        system["payload"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Unable to subscribe to changes"),
        "{system}"
    );

    let reply = ws
        .join("x5", Some(&a.token), json!({ "postgres_changes": [{ "event": "INSERT", "schema": "public", "table": "alerts", "filter": "severity=like.crit" }] }))
        .await;
    assert_eq!(reply["status"], "ok");
    let system = ws.system("x5").await;
    assert!(
        system["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("operator `like`"),
        "{system}"
    );

    // Unjoined topics are refused.
    let r = ws
        .push(
            "realtime:never",
            "broadcast",
            json!({ "type": "broadcast", "event": "e", "payload": {} }),
            None,
        )
        .await;
    let reply = ws.until("the reply", |f| f["ref"] == json!(r)).await;
    assert_eq!(reply["payload"]["response"]["reason"], "unmatched topic");
}

#[tokio::test]
async fn limits_answer_with_realtime_s_errors() {
    let g = gateway();
    let a = g.agent("rt-limits").await;
    let running = start_running(|c| {
        c.realtime.slot = "rt_limits".into();
        c.realtime.limits = Some(fleetbench_gateway::realtime::Limits {
            max_connections: 1,
            max_joins_per_second: 1000,
            max_events_per_second: 1000,
            max_channels_per_client: 2,
        });
    });
    let limited = at(running.url.clone());
    let mut ws = Ws::open(&limited).await;
    // The second socket is refused at the handshake, with 429.
    match Ws::connect(&limited.url, &limited.anon, "1.0.0").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 429);
            let body: Value =
                serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"], "Too many connected users");
        }
        other => panic!("expected 429, got {:?}", other.map(|_| "a socket")),
    }
    for name in ["c1", "c2"] {
        assert_eq!(
            ws.join(name, Some(&a.token), json!({})).await["status"],
            "ok"
        );
    }
    let reply = ws.join("c3", Some(&a.token), json!({})).await;
    assert_eq!(
        reply["response"]["reason"],
        "ChannelRateLimitReached: Too many channels"
    );
    drop(ws);
    running.stop();

    let running = start_running(|c| {
        c.realtime.slot = "rt_limits".into();
        c.realtime.limits = Some(fleetbench_gateway::realtime::Limits {
            max_connections: 10,
            max_joins_per_second: 2,
            max_events_per_second: 1000,
            max_channels_per_client: 100,
        });
    });
    let limited = at(running.url.clone());
    let mut ws = Ws::open(&limited).await;
    let mut reasons = Vec::new();
    for i in 0..4 {
        let reply = ws.join(&format!("j{i}"), Some(&a.token), json!({})).await;
        reasons.push(
            reply["response"]["reason"]
                .as_str()
                .unwrap_or("ok")
                .to_string(),
        );
    }
    // Four joins inside one second (or straddling two) against 2 per second: at least one refused.
    assert!(
        reasons
            .iter()
            .any(|r| r == "ClientJoinRateLimitReached: Too many joins per second"),
        "{reasons:?}"
    );
    drop(ws);
    running.stop();
}

#[tokio::test]
async fn a_silent_socket_is_closed_and_a_heartbeating_one_is_not() {
    let running = start_running(|c| {
        c.realtime.slot = "rt_heartbeat".into();
        c.realtime.heartbeat_timeout = Duration::from_millis(1500);
    });
    let quick = at(running.url.clone());
    let started = std::time::Instant::now();
    let mut silent = Ws::open(&quick).await;
    let mut alive = Ws::open(&quick).await;
    // `alive` heartbeats every 500 ms and reads the replies until `silent` is gone.
    let beat = tokio::spawn(async move {
        let mut replies = 0;
        for _ in 0..12 {
            let r = alive.push("phoenix", "heartbeat", json!({}), None).await;
            let f = alive
                .until("the heartbeat reply", |f| f["ref"] == json!(r))
                .await;
            assert_eq!(f["payload"]["status"], "ok");
            replies += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (replies, alive)
    });
    assert!(
        silent.next().await.is_none(),
        "the silent socket got a frame instead of closing"
    );
    let closed_after = started.elapsed();
    let (replies, mut alive) = beat.await.unwrap();
    assert_eq!(replies, 12);
    assert!(
        closed_after >= Duration::from_millis(1500),
        "closed after {closed_after:?}"
    );
    // Six seconds of heartbeats later, `alive` still answers.
    let r = alive.push("phoenix", "heartbeat", json!({}), None).await;
    alive
        .until("a last heartbeat reply", |f| f["ref"] == json!(r))
        .await;
    drop(alive);
    running.stop();
}

#[tokio::test]
async fn tokens_refresh_and_expire() {
    let g = gateway();
    let a = g.agent("rt-expiry").await;
    let mut ws = Ws::open(g).await;
    let short = user_token(&g.secret, &a.user_id, 3);
    let filter = Some(format!("user_id=eq.{}", a.user_id));
    ws.subscribe("expires", &short, alerts_binding(filter.clone()))
        .await;
    ws.subscribe("refreshed", &short, alerts_binding(filter.clone()))
        .await;
    let long = user_token(&g.secret, &a.user_id, 3600);
    ws.push(
        "realtime:refreshed",
        "access_token",
        json!({ "access_token": long }),
        Some("j-realtime:refreshed"),
    )
    .await;

    let system = ws.system("expires").await;
    assert_eq!(system["payload"]["extension"], "system");
    assert!(
        system["payload"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Token has expired"),
        "{system}"
    );
    ws.until("phx_close", |f| {
        f["event"] == "phx_close" && f["topic"] == "realtime:expires"
    })
    .await;

    // The refreshed channel outlived the first token and still delivers.
    let ids = insert_alerts(&g.db().await, &a, 1, "after expiry").await;
    let got = ws
        .until("the alert", |f| f["event"] == "postgres_changes")
        .await;
    assert_eq!(got["topic"], "realtime:refreshed");
    assert_eq!(got["payload"]["data"]["record"]["id"], json!(ids[0]));

    // A bad refresh closes the channel.
    ws.push(
        "realtime:refreshed",
        "access_token",
        json!({ "access_token": "not.a.jwt" }),
        None,
    )
    .await;
    let system = ws.system("refreshed").await;
    assert_eq!(system["payload"]["status"], "error");
    ws.until("phx_close", |f| {
        f["event"] == "phx_close" && f["topic"] == "realtime:refreshed"
    })
    .await;
}

#[tokio::test]
async fn broadcast_reaches_the_other_clients() {
    let g = gateway();
    let a = g.agent("rt-broadcast").await;
    let mut one = Ws::open(g).await;
    let mut two = Ws::connect(&g.url, &g.anon, "2.0.0").await.unwrap();
    assert_eq!(
        one.join(
            "room",
            Some(&a.token),
            json!({ "broadcast": { "self": true } })
        )
        .await["status"],
        "ok"
    );
    assert_eq!(
        two.join("room", Some(&a.token), json!({})).await["status"],
        "ok"
    );
    let msg = json!({ "type": "broadcast", "event": "cursor", "payload": { "x": 7 } });
    two.push(
        "realtime:room",
        "broadcast",
        msg.clone(),
        Some("j-realtime:room"),
    )
    .await;
    let got = one
        .until("the broadcast", |f| f["event"] == "broadcast")
        .await;
    assert_eq!(got["payload"], msg);
    // Not echoed to its sender without `self`; with `self`, echoed.
    one.push(
        "realtime:room",
        "broadcast",
        json!({ "type": "broadcast", "event": "ping", "payload": {} }),
        Some("j-realtime:room"),
    )
    .await;
    let got = one
        .until("own broadcast", |f| f["event"] == "broadcast")
        .await;
    assert_eq!(got["payload"]["event"], "ping");
    let got = two.until("a's ping", |f| f["event"] == "broadcast").await;
    assert_eq!(
        got["payload"]["event"], "ping",
        "two saw its own cursor event: {got}"
    );
}

#[tokio::test]
async fn ten_thousand_inserts_arrive_in_commit_order_once_each() {
    let g = gateway();
    let (a, other) = (g.agent("rt-burst").await, g.agent("rt-burst-other").await);
    let mut ws = Ws::connect(&g.url, &g.anon, "2.0.0").await.unwrap();
    ws.subscribe("burst", &a.token, alerts_binding(None)).await;
    let db = g.db().await;
    let mut truth = Vec::new();
    for batch in 0..100 {
        truth.extend(insert_alerts(&db, &a, 100, &format!("burst {batch}")).await);
        if batch % 10 == 0 {
            insert_alerts(&db, &other, 5, "noise").await;
        }
    }
    let mut got = Vec::with_capacity(truth.len());
    while got.len() < truth.len() {
        let change = ws.change().await;
        got.push(change["data"]["record"]["id"].as_i64().unwrap());
    }
    assert_eq!(got, truth, "every insert, once, in commit order");
    // Nothing more is pending: one more insert is the very next change.
    let last = insert_alerts(&db, &a, 1, "after the burst").await;
    assert_eq!(ws.change().await["data"]["record"]["id"], json!(last[0]));
}

/// Subscribes `a` to alerts on a gateway at `g`, under channel `name`.
async fn resumable(g: &Gateway, a: &Agent, name: &str) -> Ws {
    let mut ws = Ws::open(g).await;
    ws.subscribe(
        name,
        &a.token,
        alerts_binding(Some(format!("user_id=eq.{}", a.user_id))),
    )
    .await;
    ws
}

async fn receive(ws: &mut Ws, n: usize) -> Vec<i64> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(ws.change().await["data"]["record"]["id"].as_i64().unwrap());
    }
    got
}

#[tokio::test]
async fn a_restart_loses_nothing_committed() {
    let g = gateway();
    let a = g.agent("rt-restart").await;
    let db = g.db().await;
    let settings = |c: &mut fleetbench_gateway::GatewayConfig| {
        c.realtime.slot = "rt_restart".into();
        c.realtime.resume_window = Duration::from_secs(30);
    };

    // A graceful stop: what was committed while the gateway was down arrives after the rejoin,
    // once each and in order.
    let first = start_running(settings);
    let mut ws = resumable(&at(first.url.clone()), &a, "resume").await;
    let before = insert_alerts(&db, &a, 20, "before").await;
    assert_eq!(receive(&mut ws, 20).await, before);
    first.stop();
    assert!(
        ws.next().await.is_none(),
        "the socket closes with the gateway"
    );
    let down = insert_alerts(&db, &a, 15, "while down").await;
    let second = start_running(settings);
    let mut ws = resumable(&at(second.url.clone()), &a, "resume").await;
    let after = insert_alerts(&db, &a, 5, "after").await;
    let got = receive(&mut ws, 20).await;
    assert_eq!(got, [down.clone(), after].concat());

    // A crash: changes committed around it are all delivered after the rejoin (a change written
    // just before the crash may come twice; none may be missing).
    let burst = tokio::spawn({
        let (db, a) = (g.db().await, Agent { ..clone_agent(&a) });
        async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                ids.extend(insert_alerts(&db, &a, 5, &format!("crash {i}")).await);
            }
            ids
        }
    });
    let mut seen_before = receive(&mut ws, 10).await;
    second.kill();
    // What the socket had received before it was cut off counts as delivered.
    while let Some(f) = ws.next().await {
        if f["event"] == "postgres_changes" {
            seen_before.push(f["payload"]["data"]["record"]["id"].as_i64().unwrap());
        }
    }
    let committed = burst.await.unwrap();
    let third = start_running(settings);
    let mut ws = resumable(&at(third.url.clone()), &a, "resume").await;
    let missing: Vec<i64> = committed
        .iter()
        .copied()
        .filter(|id| !seen_before.contains(id))
        .collect();
    let mut got = Vec::new();
    while !missing.iter().all(|id| got.contains(id)) {
        got.push(ws.change().await["data"]["record"]["id"].as_i64().unwrap());
    }
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "delivered in commit order");
    drop(ws);
    third.stop();
}

/// Hosted Realtime's slot is temporary: what is committed while it is down is never delivered after
/// the restart, and the stats count those changes as skipped.
#[tokio::test]
async fn a_hosted_restart_skips_what_was_committed_while_down() {
    let g = gateway();
    let a = g.agent("rt-skip").await;
    let db = g.db().await;
    let settings = |c: &mut fleetbench_gateway::GatewayConfig| {
        c.realtime.slot = "rt_skip".into();
        c.realtime.temporary_slot = true;
        c.realtime.idle_backoff = true;
    };
    let first = start_running(settings);
    let mut ws = resumable(&at(first.url.clone()), &a, "skip").await;
    let before = insert_alerts(&db, &a, 5, "before").await;
    assert_eq!(receive(&mut ws, 5).await, before);
    first.stop();
    assert!(
        ws.next().await.is_none(),
        "the socket closes with the gateway"
    );
    insert_alerts(&db, &a, 7, "while down").await;
    let second = start_running(settings);
    let gw = at(second.url.clone());
    let mut ws = resumable(&gw, &a, "skip").await;
    let after = insert_alerts(&db, &a, 3, "after").await;
    // The first changes to arrive are those committed after the restart.
    assert_eq!(receive(&mut ws, 3).await, after);
    let stats = stats(&gw).await;
    // The slot sees the whole database: changes other tests committed meanwhile are skipped too.
    assert!(stats["skipped"].as_u64().unwrap() >= 7, "{stats}");
    drop(ws);
    second.stop();
}

/// `/realtime/v1/stats` with the service key.
async fn stats(gw: &Gateway) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}/realtime/v1/stats", gw.url))
        .header("apikey", &gw.service)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn idle_polls(gw: &Gateway) -> u64 {
    stats(gw).await["idle_polls"].as_u64().unwrap()
}

/// Hosted Realtime's poller waits five intervals after a poll that found nothing (the plain
/// stand-in one). Measured over a window of the test's own clock: idle polls can be fewer than the
/// cadence allows (other tests' commits make it poll at once, which is not an idle poll) but never
/// more; at one interval they would be five times as many.
#[tokio::test]
async fn a_hosted_poller_backs_off_when_idle() {
    let running = start_running(|c: &mut fleetbench_gateway::GatewayConfig| {
        c.realtime.slot = "rt_idle".into();
        c.realtime.idle_backoff = true;
        c.realtime.poll_interval = Duration::from_millis(100);
    });
    let gw = at(running.url.clone());
    let start = std::time::Instant::now();
    let before = idle_polls(&gw).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = idle_polls(&gw).await - before;
    let elapsed = start.elapsed();
    running.stop();
    // At most one idle poll per 500 ms of the window, plus the one in flight at its start.
    let most = (elapsed.as_millis() / 500) as u64 + 1;
    assert!(polls <= most, "{polls} idle polls in {elapsed:?}");
}

#[tokio::test]
async fn a_subscriber_that_does_not_return_is_reported_lost() {
    let g = gateway();
    let a = g.agent("rt-lost").await;
    let db = g.db().await;
    let settings = |c: &mut fleetbench_gateway::GatewayConfig| {
        c.realtime.slot = "rt_lost".into();
        c.realtime.resume_window = Duration::from_millis(500);
    };
    let first = start_running(settings);
    let _ws = resumable(&at(first.url.clone()), &a, "gone").await;
    first.stop();
    insert_alerts(&db, &a, 7, "nobody listening").await;
    let second = start_running(settings);
    let gw = at(second.url.clone());
    // A fresh subscriber on another channel sees only what is committed after it joined.
    let mut fresh = Ws::open(&gw).await;
    fresh
        .subscribe(
            "fresh",
            &a.token,
            alerts_binding(Some(format!("user_id=eq.{}", a.user_id))),
        )
        .await;
    let later = insert_alerts(&db, &a, 1, "later").await;
    assert_eq!(
        fresh.change().await["data"]["record"]["id"],
        json!(later[0])
    );
    let stats = reqwest::Client::new()
        .get(format!("{}/realtime/v1/stats", gw.url))
        .header("apikey", &gw.service)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(stats["lost"], json!(7), "{stats}");
    let left: i64 = db
        .query_one(
            "select count(*) from realtime.subscription where topic = 'realtime:gone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    drop(fresh);
    second.stop();
}

fn clone_agent(a: &Agent) -> Agent {
    Agent {
        user_id: a.user_id.clone(),
        email: a.email.clone(),
        password: a.password.clone(),
        token: a.token.clone(),
        device_id: a.device_id.clone(),
    }
}
