//! The architecture's claim: "row-level security: each user sees only their own data".
//!
//! User B owns a device, a metric, the alert it raised and a memory. User A then tries to read,
//! write, acknowledge, rename and delete them through the Data API (with A's token, with the anon
//! key alone, and with a token forged with the wrong secret), through SQL as A the way PostgREST
//! runs it (`SET LOCAL ROLE authenticated` and A's claims, through the pooler, rolled back), and
//! through Realtime (a channel filtered to B's rows, an unfiltered one, and a join with the forged
//! token). Every attempt must fail; any that succeeds is a leak, the probe fails, and so does the
//! run. Writes are double-checked with SQL: B's rows must be unchanged afterwards.

use anyhow::Context as _;
use fleetbench_metrics::Aggregate;
use fleetbench_metrics::summary::{ProbeReport, Table};
use serde_json::{Value, json};
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::users::User;
use crate::{Context, ProbeOutcome, figure, inject};

mod attempts;
mod realtime;

use attempts::{Attempt, Attempts};

/// A read: a non-empty array is a leak.
async fn read(req: reqwest::RequestBuilder) -> Result<String, String> {
    match req.send().await {
        Err(e) => Ok(format!("no answer ({e})")),
        Ok(res) => {
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            match body.as_array() {
                Some(rows) if status < 300 && !rows.is_empty() => {
                    Err(format!("HTTP {status} with {} rows", rows.len()))
                }
                Some(_) if status < 300 => Ok(format!("HTTP {status}, no rows")),
                _ => Ok(format!(
                    "HTTP {status} {}",
                    body["code"].as_str().unwrap_or("")
                )),
            }
        }
    }
}

/// A write: success (2xx with rows back, or 201 for an insert) is a leak.
async fn write(req: reqwest::RequestBuilder) -> Result<String, String> {
    match req.send().await {
        Err(e) => Ok(format!("no answer ({e})")),
        Ok(res) => {
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let rows = body.as_array().map_or(0, Vec::len);
            if status == 201 || (status < 300 && rows > 0) {
                Err(format!(
                    "HTTP {status}: the write succeeded ({rows} rows back)"
                ))
            } else if status < 300 {
                Ok(format!("HTTP {status}, no rows affected"))
            } else {
                Ok(format!(
                    "HTTP {status} {}",
                    body["code"].as_str().unwrap_or("")
                ))
            }
        }
    }
}

/// A JWT for `sub` signed with a secret that is not the project's.
fn forged(sub: uuid::Uuid) -> String {
    let claims = json!({
        "sub": sub, "role": "authenticated", "aud": "authenticated",
        "exp": chrono::Utc::now().timestamp() + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"fleetbench: not the project's secret"),
    )
    .expect("HS256 signs")
}

/// One SQL statement as `a` (PostgREST's role and claims), in a transaction that is rolled back.
async fn sql_as(
    db: &mut tokio_postgres::Client,
    a: &User,
    sql: &str,
    params: &[Uuid],
) -> Result<u64, String> {
    // Unnamed statements only: this runs through the transaction pooler, which keeps none.
    let typed: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> = params
        .iter()
        .map(|p| (p as &(dyn tokio_postgres::types::ToSql + Sync), Type::UUID))
        .collect();
    let tx = db
        .transaction()
        .await
        .map_err(|e| fleetbench_schema::db_error_text(&e))?;
    let claims = json!({ "sub": a.id, "role": "authenticated" }).to_string();
    tx.batch_execute("set local role authenticated")
        .await
        .map_err(|e| fleetbench_schema::db_error_text(&e))?;
    tx.query_typed(
        "select set_config('request.jwt.claims', $1, true)",
        &[(&claims, Type::TEXT)],
    )
    .await
    .map_err(|e| fleetbench_schema::db_error_text(&e))?;
    let r = if sql.trim_start().starts_with("select") {
        tx.query_typed(sql, &typed)
            .await
            .map(|rows| rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    } else {
        tx.query_typed(&format!("{sql} returning 1"), &typed)
            .await
            .map(|rows| rows.len() as u64)
    };
    let _ = tx.rollback().await;
    r.map_err(|e| fleetbench_schema::db_error_text(&e))
}

/// A request as user `u` makes it: the anon key and the user's token.
fn as_user(ctx: &Context, u: &User, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("apikey", &ctx.target.config.anon_key)
        .bearer_auth(u.token())
}

/// [`as_user`], asking for the affected rows back.
fn repr(ctx: &Context, u: &User, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    as_user(ctx, u, req).header("Prefer", "return=representation")
}

/// B's rows for A to try: a hot metric (and the alert it raises) and a memory; B's secret and its
/// embedding.
async fn plant(ctx: &Context, b: &User) -> anyhow::Result<(String, Vec<f32>)> {
    let cfg = &ctx.target.config;
    inject::thermal(&ctx.http, cfg, b)
        .await
        .map_err(|e| anyhow::anyhow!("B's metric: {e}"))?;
    let secret = format!("rls secret of {}", b.id);
    let embedding: Vec<f32> = (0..crate::rag::DIMS)
        .map(|i| ((i % 7) as f32 - 3.0) / 10.0)
        .collect();
    let res = ctx
        .http
        .post(ctx.api("/rest/v1/memories"))
        .header("apikey", &cfg.anon_key)
        .bearer_auth(b.token())
        .json(&json!([{ "content": secret, "embedding": embedding }]))
        .send()
        .await?;
    anyhow::ensure!(
        res.status().as_u16() == 201,
        "B's memory: HTTP {}",
        res.status()
    );
    Ok((secret, embedding))
}

/// Data API reads as A of B's rows.
async fn api_reads(ctx: &Context, a: &User, b: &User, at: &mut Attempts) {
    let (bid, bdev) = (b.id, b.device);
    for (what, path) in [
        ("B's device by id", format!("/rest/v1/devices?id=eq.{bdev}")),
        (
            "B's metrics by device",
            format!("/rest/v1/system_metrics?device_id=eq.{bdev}"),
        ),
        (
            "B's metrics by user",
            format!("/rest/v1/system_metrics?user_id=eq.{bid}"),
        ),
        ("B's alerts", format!("/rest/v1/alerts?user_id=eq.{bid}")),
        (
            "B's memories",
            format!("/rest/v1/memories?user_id=eq.{bid}&select=id,content"),
        ),
    ] {
        at.push(
            "Data API",
            format!("read {what}"),
            read(as_user(ctx, a, ctx.http.get(ctx.api(&path)))).await,
        );
    }
}

/// Data API writes as A on B's rows (inserts as B or on B's device, updates, deletes), and B's
/// memory looked for with `match_memories`.
async fn api_writes(
    ctx: &Context,
    a: &User,
    b: &User,
    (secret, embedding): (&str, &[f32]),
    at: &mut Attempts,
) {
    let (bid, bdev) = (b.id, b.device);
    let ts = chrono::Utc::now().to_rfc3339();
    for (what, table, row) in [
        (
            "insert a metric as B on B's device",
            "system_metrics",
            json!([{ "device_id": bdev, "user_id": bid, "ts": ts, "cpu_pct": 1.0 }]),
        ),
        (
            "insert a metric as A on B's device",
            "system_metrics",
            json!([{ "device_id": bdev, "user_id": a.id, "ts": ts, "cpu_pct": 1.0 }]),
        ),
        (
            "insert a memory as B",
            "memories",
            json!([{ "user_id": bid, "content": "planted", "embedding": embedding }]),
        ),
        (
            "insert a device as B",
            "devices",
            json!([{ "user_id": bid, "hostname": "planted" }]),
        ),
    ] {
        let req = as_user(ctx, a, ctx.http.post(ctx.api(&format!("/rest/v1/{table}"))))
            .header("Prefer", "return=minimal")
            .json(&row);
        at.push("Data API", what, write(req).await);
    }
    at.push(
        "Data API",
        "acknowledge B's alerts",
        write(
            repr(
                ctx,
                a,
                ctx.http
                    .patch(ctx.api(&format!("/rest/v1/alerts?user_id=eq.{bid}"))),
            )
            .json(&json!({ "acknowledged_at": ts })),
        )
        .await,
    );
    at.push(
        "Data API",
        "rename B's device",
        write(
            repr(
                ctx,
                a,
                ctx.http
                    .patch(ctx.api(&format!("/rest/v1/devices?id=eq.{bdev}"))),
            )
            .json(&json!({ "hostname": "pwned" })),
        )
        .await,
    );
    at.push(
        "Data API",
        "delete B's memories",
        write(repr(
            ctx,
            a,
            ctx.http
                .delete(ctx.api(&format!("/rest/v1/memories?user_id=eq.{bid}"))),
        ))
        .await,
    );
    at.push(
        "Data API",
        "delete B's device",
        write(repr(
            ctx,
            a,
            ctx.http
                .delete(ctx.api(&format!("/rest/v1/devices?id=eq.{bdev}"))),
        ))
        .await,
    );
    let found = as_user(
        ctx,
        a,
        ctx.http.post(ctx.api("/rest/v1/rpc/match_memories")),
    )
    .json(&json!({ "query_embedding": embedding, "match_count": 50 }))
    .send()
    .await;
    at.push(
        "Data API",
        "find B's memory with match_memories",
        match found {
            Err(e) => Ok(format!("no answer ({e})")),
            Ok(res) => {
                let rows: Value = res.json().await.unwrap_or(Value::Null);
                let hit = rows
                    .as_array()
                    .is_some_and(|r| r.iter().any(|m| m["content"] == json!(secret)));
                if hit {
                    Err("B's memory came back".into())
                } else {
                    Ok("not among the results".into())
                }
            }
        },
    );
}

/// The anon key alone, and a token forged with the wrong secret; the forged token.
async fn anon_and_forged(ctx: &Context, b: &User, at: &mut Attempts) -> String {
    let bid = b.id;
    for table in ["devices", "system_metrics", "alerts", "memories"] {
        let req = ctx
            .http
            .get(ctx.api(&format!("/rest/v1/{table}?user_id=eq.{bid}")))
            .header("apikey", &ctx.target.config.anon_key);
        at.push(
            "Data API",
            format!("read B's {table} with the anon key alone"),
            read(req).await,
        );
    }
    let fake = forged(bid);
    let req = ctx
        .http
        .get(ctx.api(&format!("/rest/v1/alerts?user_id=eq.{bid}")))
        .header("apikey", &ctx.target.config.anon_key)
        .bearer_auth(&fake);
    at.push(
        "Data API",
        "read B's alerts with a forged token for B",
        read(req).await,
    );

    fake
}

/// SQL as A, through the pooler, the way the Data API runs a request (rolled back).
async fn sql_as_user(ctx: &Context, a: &User, b: &User, at: &mut Attempts) -> anyhow::Result<()> {
    let (bid, bdev) = (b.id, b.device);
    match ctx.pooler_db_url.as_deref().or(ctx.admin_db_url.as_deref()) {
        Some(url) => {
            let mut db = crate::connect(url).await?;
            for table in ["devices", "system_metrics", "alerts", "memories"] {
                let sql = format!("select count(*) from public.{table} where user_id = $1");
                let r = sql_as(&mut db, a, &sql, &[bid]).await;
                at.push(
                    "SQL as the user",
                    format!("read B's {table}"),
                    match r {
                        Ok(0) => Ok("no rows".into()),
                        Ok(n) => Err(format!("{n} rows")),
                        Err(e) => Ok(e),
                    },
                );
            }
            for (what, sql) in [
                (
                    "insert a metric on B's device",
                    "insert into public.system_metrics (device_id, user_id, ts, cpu_pct) values ($1, $2, now(), 1)",
                ),
                (
                    "acknowledge B's alerts",
                    "update public.alerts set acknowledged_at = now() where user_id = $2 and $1::uuid is not null",
                ),
                (
                    "delete B's memories",
                    "delete from public.memories where user_id = $2 and $1::uuid is not null",
                ),
                (
                    "rename B's device",
                    "update public.devices set hostname = 'pwned' where id = $1 and user_id = $2",
                ),
            ] {
                let r = sql_as(&mut db, a, sql, &[bdev, bid]).await;
                at.push(
                    "SQL as the user",
                    what,
                    match r {
                        Ok(0) => Ok("no rows affected".into()),
                        Ok(n) => Err(format!("{n} rows affected (rolled back)")),
                        Err(e) => Ok(e),
                    },
                );
            }
        }
        None => at.push(
            "SQL as the user",
            "all",
            Ok("skipped: no SQL access".into()),
        ),
    }

    Ok(())
}

/// The writes above must have left B's rows as they were (with SQL access to look).
async fn b_unchanged(ctx: &Context, b: &User, at: &mut Attempts) -> anyhow::Result<()> {
    let bid = b.id;
    if ctx.admin_db_url.is_some() {
        let db = ctx.admin().await?;
        let rows = db
            .query_typed(
                "select (select count(*) from public.alerts where user_id = $1 and acknowledged_at is not null), \
                        (select count(*) from public.memories where user_id = $1), \
                        (select count(*) from public.devices where user_id = $1 and hostname <> 'pwned'), \
                        (select count(*) from public.memories where user_id = $1 and content = 'planted') + \
                        (select count(*) from public.devices where user_id = $1 and hostname = 'planted')",
                &[(&bid, Type::UUID)],
            )
            .await?;
        let row = rows.first().context("no counts")?;
        let (acked, memories, devices, planted): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let intact = acked == 0 && memories == 1 && devices == 1 && planted == 0;
        at.push(
            "SQL check",
            "B's rows afterwards",
            if intact {
                Ok("unchanged".into())
            } else {
                Err(format!("{acked} acknowledged alerts, {memories} memories (1 expected), {devices} intact devices, {planted} planted rows"))
            },
        );
    }

    Ok(())
}

pub async fn run(ctx: &Context) -> anyhow::Result<ProbeOutcome> {
    let users = crate::users::provision(ctx, "rls", 2).await?;
    let (a, b) = (&users[0], &users[1]);
    let (secret, embedding) = plant(ctx, b).await?;
    ctx.started().await;
    let mut at = Attempts::default();
    api_reads(ctx, a, b, &mut at).await;
    api_writes(ctx, a, b, (&secret, &embedding), &mut at).await;
    let fake = anon_and_forged(ctx, b, &mut at).await;
    sql_as_user(ctx, a, b, &mut at).await?;
    realtime::realtime(ctx, a, b, &fake, &mut at).await?;
    b_unchanged(ctx, b, &mut at).await?;
    let leaks: Vec<&Attempt> = at.0.iter().filter(|a| a.result.is_err()).collect();
    let mut findings = vec![format!(
        "{} of {} attempts on another user's data failed as they must",
        at.0.len() - leaks.len(),
        at.0.len()
    )];
    for l in &leaks {
        findings.push(format!(
            "SECURITY FAILURE: {} — {}: {}",
            l.path,
            l.what,
            l.result.as_ref().err().map_or("", String::as_str)
        ));
    }
    Ok(ProbeOutcome {
        report: ProbeReport {
            title: String::new(),
            claim: "each user sees only their own data (row-level security)".into(),
            verdict: if leaks.is_empty() { "pass" } else { "fail" }.into(),
            figures: vec![
                figure("attempts", at.0.len() as f64, "attempts", None),
                figure(
                    "refused",
                    (at.0.len() - leaks.len()) as f64,
                    "attempts",
                    None,
                ),
                figure("leaked", leaks.len() as f64, "attempts", None),
            ],
            findings,
            tables: vec![Table {
                title: "attempts by user A on user B's rows".into(),
                columns: ["path", "attempt", "result"].map(String::from).to_vec(),
                rows: at
                    .0
                    .iter()
                    .map(|a| {
                        vec![
                            a.path.into(),
                            a.what.clone(),
                            match &a.result {
                                Ok(how) if a.path == "SQL check" => format!("held: {how}"),
                                Ok(how) => format!("refused: {how}"),
                                Err(what) => format!("LEAKED: {what}"),
                            },
                        ]
                    })
                    .collect(),
            }],
            charts: Vec::new(),
        },
        aggregate: Aggregate::new(ctx.window_us),
    })
}
