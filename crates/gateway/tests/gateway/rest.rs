//! The Data API (PostgREST stand-in) over HTTP. Every count and value a test checks is read back
//! from Postgres directly or computed here from what was sent.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Agent, Gateway, gateway, start};

/// `n` telemetry rows for `agent`, one a minute from now on the test's clock, `cpu_pct` = 10 + i.
fn metrics(agent: &Agent, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "device_id": agent.device_id, "user_id": agent.user_id,
                "ts": minutes_from_now(i as i64),
                "cpu_pct": 10.0 + i as f64, "mem_used_bytes": 1_000_000 + i, "mem_total_bytes": 16_000_000_000u64,
                "cpu_temp_c": 50.0, "cpu_per_core_pct": [1.5, 2.5], "top_processes": [{ "name": "cargo", "cpu": 99.5 }],
            })
        })
        .collect()
}

/// `m` minutes after now on the test's clock, as RFC 3339. Rows are dated forward: the partitions
/// maintenance keeps (this month and the next ones) hold them whatever day the test runs.
fn minutes_from_now(m: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(m)).to_rfc3339()
}

/// Noon on the first day of the first month that maintenance does not make ahead (the project's
/// `metrics_premake_months` after the current month on the test's clock): no partition holds it.
async fn beyond_premade_months(g: &Gateway) -> String {
    use chrono::{Datelike, Months};
    let premake: i64 = g
        .db()
        .await
        .query_one(
            "select value::int8 from fleetbench.settings where key = 'metrics_premake_months'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let month =
        chrono::Utc::now().date_naive().with_day(1).unwrap() + Months::new(premake as u32 + 1);
    format!("{month}T12:00:00Z")
}

async fn insert(
    g: &Gateway,
    agent: &Agent,
    rows: &Value,
    prefer: &str,
    query: &str,
) -> crate::common::Reply {
    Gateway::send(
        g.request(
            Method::POST,
            &format!("/rest/v1/system_metrics{query}"),
            Some(&agent.token),
        )
        .header("Prefer", prefer)
        .json(rows),
    )
    .await
}

async fn stored_rows(g: &Gateway, device: &str) -> i64 {
    let db = g.db().await;
    db.query_one(
        "select count(*) from public.system_metrics where device_id = $1::text::uuid",
        &[&device],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn bulk_insert_is_one_statement_and_reads_see_only_the_callers_rows() {
    let g = gateway();
    let (a, b) = (g.agent("rest-a").await, g.agent("rest-b").await);
    let rows = metrics(&a, 50);
    let r = insert(g, &a, &json!(rows), "return=minimal", "").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body, json!(""), "return=minimal has no body");
    assert_eq!(stored_rows(g, &a.device_id).await, 50);
    insert(g, &b, &json!(metrics(&b, 3)), "return=minimal", "").await;

    // Filters, order and paging with an exact count: rows 20..29 of cpu_pct >= 15 (45 rows).
    let r = Gateway::send(g.request(
        Method::GET,
        "/rest/v1/system_metrics?select=ts,cpu:cpu_pct,user_id&cpu_pct=gte.15&order=cpu_pct.desc&limit=10&offset=20",
        Some(&a.token),
    ).header("Prefer", "count=exact")).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{}", r.body);
    assert_eq!(r.header("content-range"), Some("20-29/45"));
    let cpus: Vec<f64> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["cpu"].as_f64().unwrap())
        .collect();
    let expected: Vec<f64> = (15..60).rev().skip(20).take(10).map(|i| i as f64).collect();
    assert_eq!(cpus, expected);
    assert!(
        r.body
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["user_id"] == a.user_id.as_str())
    );

    // B sees none of A's rows even when asking for them by device; A sees only its 50.
    let r = Gateway::send(g.request(
        Method::GET,
        &format!("/rest/v1/system_metrics?device_id=eq.{}", a.device_id),
        Some(&b.token),
    ))
    .await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!([])));
    let r = Gateway::send(
        g.request(
            Method::GET,
            "/rest/v1/system_metrics?select=device_id",
            Some(&a.token),
        )
        .header("Prefer", "count=exact"),
    )
    .await;
    assert_eq!(r.header("content-range"), Some("0-49/50"));
    assert_eq!(r.status, StatusCode::OK);

    // in / is / or filters and JSON columns come back as sent.
    let r = Gateway::send(g.request(
        Method::GET,
        "/rest/v1/system_metrics?select=cpu_pct,top_processes,cpu_per_core_pct&or=(cpu_pct.eq.10,cpu_pct.in.(11,12))&gpu_temp_c=is.null&order=cpu_pct",
        Some(&a.token),
    )).await;
    // (Postgres prints a whole `real` without a fraction, as PostgREST returns it.)
    assert_eq!(
        r.body,
        json!([
            { "cpu_pct": 10, "top_processes": [{ "name": "cargo", "cpu": 99.5 }], "cpu_per_core_pct": [1.5, 2.5] },
            { "cpu_pct": 11, "top_processes": [{ "name": "cargo", "cpu": 99.5 }], "cpu_per_core_pct": [1.5, 2.5] },
            { "cpu_pct": 12, "top_processes": [{ "name": "cargo", "cpu": 99.5 }], "cpu_per_core_pct": [1.5, 2.5] },
        ])
    );
}

#[tokio::test]
async fn bad_bodies_get_postgrest_errors() {
    let g = gateway();
    let a = g.agent("rest-bad").await;
    let mut rows = metrics(&a, 3);
    rows[2].as_object_mut().unwrap().remove("cpu_temp_c");
    let r = insert(g, &a, &json!(rows), "return=minimal", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body,
        json!({ "code": "PGRST102", "message": "All object keys must match", "details": null, "hint": null })
    );

    let r = Gateway::send(
        g.request(Method::POST, "/rest/v1/system_metrics", Some(&a.token))
            .body("[{\"ts\":"),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "PGRST102");
    assert_eq!(r.body["message"], "Empty or invalid json");

    let r = insert(
        g,
        &a,
        &json!([{ "device_id": a.device_id, "ts": minutes_from_now(0), "cpu_temprature": 3 }]),
        "return=minimal",
        "",
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "PGRST204");

    // A check constraint (cpu_pct <= 100) and a row with no partition (the month after the last one
    // maintenance makes ahead) are 23514 → 400.
    let mut bad = metrics(&a, 1);
    bad[0]["cpu_pct"] = json!(150.0);
    let r = insert(g, &a, &json!(bad), "return=minimal", "").await;
    r.assert_error(StatusCode::BAD_REQUEST, "23514");
    let mut future = metrics(&a, 1);
    future[0]["ts"] = json!(beyond_premade_months(g).await);
    let r = insert(g, &a, &json!(future), "return=minimal", "").await;
    r.assert_error(StatusCode::BAD_REQUEST, "23514");
    assert!(
        r.body["message"].as_str().unwrap().contains("no partition"),
        "{}",
        r.body
    );
    assert_eq!(
        stored_rows(g, &a.device_id).await,
        0,
        "failed requests leave nothing behind"
    );

    let r = Gateway::send(g.request(Method::GET, "/rest/v1/no_such_table", Some(&a.token))).await;
    r.assert_error(StatusCode::NOT_FOUND, "PGRST205");
    let r = Gateway::send(g.request(
        Method::GET,
        "/rest/v1/system_metrics?cpu_pct=around.5",
        Some(&a.token),
    ))
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "PGRST100");
}

#[tokio::test]
async fn rls_and_grant_denials_are_401_for_anon_and_403_for_users() {
    let g = gateway();
    let (a, b) = (g.agent("rls-a").await, g.agent("rls-b").await);
    // A writing a row for B's device: the insert policy refuses it.
    let mut rows = metrics(&a, 1);
    rows[0]["device_id"] = json!(b.device_id);
    let r = insert(g, &a, &json!(rows), "return=minimal", "").await;
    r.assert_error(StatusCode::FORBIDDEN, "42501");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("row-level security"),
        "{}",
        r.body
    );
    // Anonymous (the anon key alone) has no grant on system_metrics.
    let r = Gateway::send(
        g.request(Method::POST, "/rest/v1/system_metrics", None)
            .json(&json!(metrics(&a, 1))),
    )
    .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "42501");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // A forged token is refused before Postgres is asked.
    let r = Gateway::send(g.request(
        Method::GET,
        "/rest/v1/devices",
        Some("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"),
    ))
    .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "PGRST301");
    assert_eq!(stored_rows(g, &b.device_id).await, 0);
}

#[tokio::test]
async fn columns_missing_default_patch_and_delete() {
    let g = gateway();
    let a = g.agent("rest-write").await;
    // ?columns= ignores other keys; missing=default gives absent keys the column default (user_id = auth.uid()).
    let rows = json!([
        { "device_id": a.device_id, "ts": minutes_from_now(0), "cpu_pct": 1, "ignored": true },
        { "device_id": a.device_id, "ts": minutes_from_now(1), "cpu_pct": 2, "user_id": a.user_id },
    ]);
    let r = insert(
        g,
        &a,
        &rows,
        "return=representation, missing=default, count=exact",
        "?columns=device_id,ts,cpu_pct,user_id&select=cpu_pct,user_id",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.header("content-range"), Some("0-1/2"));
    assert_eq!(
        r.body,
        json!([{ "cpu_pct": 1, "user_id": a.user_id }, { "cpu_pct": 2, "user_id": a.user_id }])
    );

    let path = format!("/rest/v1/devices?id=eq.{}", a.device_id);
    let r = Gateway::send(
        g.request(Method::PATCH, &path, Some(&a.token))
            .header("Prefer", "return=representation")
            .json(&json!({ "hostname": "renamed", "cpu_cores": 16 })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (
            r.body[0]["hostname"].as_str(),
            r.body[0]["cpu_cores"].as_i64()
        ),
        (Some("renamed"), Some(16))
    );
    let other = g.agent("rest-other").await;
    let r = Gateway::send(
        g.request(Method::PATCH, &path, Some(&other.token))
            .json(&json!({ "hostname": "stolen" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let db = g.db().await;
    let host: String = db
        .query_one(
            "select hostname from public.devices where id = $1::text::uuid",
            &[&a.device_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        host, "renamed",
        "RLS kept the other user's PATCH from touching the row"
    );

    let r = Gateway::send(g.request(Method::DELETE, &path, Some(&a.token))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let left: i64 = db
        .query_one(
            "select count(*) from public.devices where id = $1::text::uuid",
            &[&a.device_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    assert_eq!(
        stored_rows(g, &a.device_id).await,
        0,
        "metrics cascade with the device"
    );
}

fn embedding(seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..384)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[tokio::test]
async fn match_memories_ranks_the_callers_rows_by_cosine_similarity() {
    let g = gateway();
    let (a, b) = (g.agent("rag-a").await, g.agent("rag-b").await);
    let mine: Vec<Value> = (0..12)
        .map(|i| json!({ "content": format!("a{i}"), "embedding": embedding(i) }))
        .collect();
    let theirs: Vec<Value> = (100..106)
        .map(|i| json!({ "content": format!("b{i}"), "embedding": embedding(i) }))
        .collect();
    for (agent, rows) in [(&a, &mine), (&b, &theirs)] {
        let r = Gateway::send(
            g.request(Method::POST, "/rest/v1/memories", Some(&agent.token))
                .json(rows),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let query = embedding(7);
    let r = Gateway::send(
        g.request(Method::POST, "/rest/v1/rpc/match_memories", Some(&a.token))
            .json(&json!({ "query_embedding": query, "match_count": 5 })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got: Vec<(String, f64)> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["content"].as_str().unwrap().to_string(),
                m["similarity"].as_f64().unwrap(),
            )
        })
        .collect();
    let mut truth: Vec<(String, f64)> = (0..12)
        .map(|i| (format!("a{i}"), cosine(&embedding(i), &query)))
        .collect();
    truth.sort_by(|x, y| y.1.total_cmp(&x.1));
    truth.truncate(5);
    assert_eq!(
        got.iter().map(|g| &g.0).collect::<Vec<_>>(),
        truth.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for ((_, s), (_, t)) in got.iter().zip(&truth) {
        assert!((s - t).abs() < 1e-5, "similarity {s} vs {t}");
    }
    // Anonymous callers have no execute grant; a wrong argument name is PGRST202.
    let r = Gateway::send(
        g.request(Method::POST, "/rest/v1/rpc/match_memories", None)
            .json(&json!({ "query_embedding": query })),
    )
    .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "42501");
    let r = Gateway::send(
        g.request(Method::POST, "/rest/v1/rpc/match_memories", Some(&a.token))
            .json(&json!({ "embedding": query })),
    )
    .await;
    r.assert_error(StatusCode::NOT_FOUND, "PGRST202");
}

/// Functions created after the gateway started are found (DDL → `NOTIFY pgrst` → cache reload),
/// each role runs under its own `statement_timeout`, and exceeding it is 57014 → 500.
#[tokio::test]
async fn role_settings_apply_and_statement_timeouts_cancel() {
    let g = gateway();
    let db = g.db().await;
    db.batch_execute(
        "create or replace function public.test_statement_timeout() returns text language sql stable as $$ select current_setting('statement_timeout') $$;
         create or replace function public.test_sleep(seconds float8) returns void language sql as $$ select pg_sleep(seconds) $$;
         grant execute on function public.test_statement_timeout(), public.test_sleep(float8) to anon, authenticated, service_role;",
    )
    .await
    .unwrap();
    let a = g.agent("timeouts").await;
    let setting = |bearer: Option<String>| async move {
        Gateway::send(g.request(
            Method::POST,
            "/rest/v1/rpc/test_statement_timeout",
            bearer.as_deref(),
        ))
        .await
        .body
    };
    assert_eq!(setting(None).await, json!("3s"));
    assert_eq!(setting(Some(a.token.clone())).await, json!("8s"));
    let r = Gateway::send(
        g.request(Method::POST, "/rest/v1/rpc/test_sleep", None)
            .json(&json!({ "seconds": 4 })),
    )
    .await;
    r.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "57014");
    let r = Gateway::send(
        g.request(Method::POST, "/rest/v1/rpc/test_sleep", Some(&a.token))
            .json(&json!({ "seconds": 0.01 })),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "void functions answer 204: {}",
        r.body
    );
}

/// With every pooled connection busy past `db-pool-acquisition-timeout`, PostgREST answers 504 PGRST003.
#[tokio::test]
async fn an_exhausted_pool_is_504_pgrst003() {
    let small = start(|c| {
        c.rest.pool_size = 1;
        c.rest.pool_timeout = std::time::Duration::from_millis(200);
    });
    let g = gateway();
    let db = g.db().await;
    db.batch_execute(
        "create or replace function public.test_hold(seconds float8) returns void language sql as $$ select pg_sleep(seconds) $$;
         grant execute on function public.test_hold(float8) to service_role;",
    )
    .await
    .unwrap();
    let hold = tokio::spawn(Gateway::send(
        small
            .request(Method::POST, "/rest/v1/rpc/test_hold", Some(&small.service))
            .json(&json!({ "seconds": 3 })),
    ));
    // Wait until the one connection is inside the sleep (observed, not assumed).
    loop {
        let busy: i64 = db
            .query_one("select count(*) from pg_stat_activity where query like '%test_hold%' and state = 'active' and pid <> pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        if busy > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let r =
        Gateway::send(small.request(Method::GET, "/rest/v1/devices", Some(&small.service))).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.body);
    assert_eq!(r.body["code"], "PGRST003");
    assert_eq!(hold.await.unwrap().status, StatusCode::NO_CONTENT);
}
