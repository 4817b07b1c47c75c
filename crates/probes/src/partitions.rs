//! The architecture's claim: "system_metrics is partitioned by month, which keeps queries fast as data grows,
//! and pg_cron cleans up old data".
//!
//! One probe user gets `devices` devices; `months` months of history are loaded one month at a
//! time, newest first, by COPY over a session connection into `system_metrics` and into an
//! unpartitioned copy with the same indexes. After each month the dashboard's queries run
//! `repeats` times on both tables, and `EXPLAIN ANALYZE` on the partitioned one says which
//! partitions were scanned. Then maintenance: next month's partition must already exist, a row
//! dated into a month with no partition must fail through the Data API with PostgREST's 400 and
//! SQLSTATE 23514, and an expired partition must be dropped by `maintain_metrics_partitions()`
//! while every month inside the retention stays.

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use fleetbench_metrics::Aggregate;
use fleetbench_metrics::aggregate::histogram;
use fleetbench_metrics::summary::{ChartSeries, ProbeChart, ProbeReport, Table};
use fleetbench_scenario::probes::PartitionsPlan;
use futures_util::SinkExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Context, ProbeOutcome, figure, ms_at};

/// The dashboard's canonical queries: (name, SQL with `{t}` for the table; `$1` is a device).
pub const QUERIES: &[(&str, &str)] = &[
    (
        "latest sample",
        "select ts, cpu_pct from {t} where device_id = $1 order by ts desc limit 1",
    ),
    (
        "7-day average CPU",
        "select avg(cpu_pct) from {t} where device_id = $1 and ts >= now() - interval '7 days'",
    ),
    (
        "24 h hourly max temperature",
        "select date_trunc('hour', ts), max(cpu_temp_c) from {t} \
         where device_id = $1 and ts >= now() - interval '24 hours' group by 1 order by 1",
    ),
];

pub fn month_start(t: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(t.year(), t.month(), 1).expect("a month's first day")
}

/// The partition that holds `month`.
pub fn partition_name(month: NaiveDate) -> String {
    format!("system_metrics_{}", month.format("%Y_%m"))
}

/// Distinct partitions an `EXPLAIN (ANALYZE, FORMAT JSON)` plan actually scanned (loops > 0).
pub fn scanned(plan: &Value) -> BTreeSet<String> {
    fn walk(node: &Value, out: &mut BTreeSet<String>) {
        if let Some(rel) = node["Relation Name"].as_str()
            && rel.starts_with("system_metrics_")
            && node["Actual Loops"].as_u64().unwrap_or(0) > 0
        {
            out.insert(rel.to_string());
        }
        if let Some(children) = node["Plans"].as_array() {
            children.iter().for_each(|c| walk(c, out));
        }
    }
    let mut out = BTreeSet::new();
    walk(&plan[0]["Plan"], &mut out);
    out
}

/// `rows` samples spread evenly over `[from, to)` across `devices`, as COPY text.
fn history(
    devices: &[Uuid],
    user: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rows: u32,
) -> String {
    let span = (to - from).num_microseconds().unwrap_or(0).max(1);
    let mut out = String::with_capacity(rows as usize * 120);
    for r in 0..rows {
        let ts = from + chrono::Duration::microseconds(span * i64::from(r) / i64::from(rows));
        let load = (r % 97) as f32;
        out.push_str(&format!(
            "{}\t{user}\t{}\t{:.1}\t{}\t{}\t{:.1}\n",
            devices[r as usize % devices.len()],
            ts.to_rfc3339(),
            load,
            4_000_000_000u64 + u64::from(r % 1000) * 1_000_000,
            16_000_000_000u64,
            40.0 + load * 0.4,
        ));
    }
    out
}

async fn copy(db: &tokio_postgres::Client, table: &str, data: &str) -> anyhow::Result<u64> {
    let sink = db
        .copy_in(&format!(
            "copy {table} (device_id, user_id, ts, cpu_pct, mem_used_bytes, mem_total_bytes, cpu_temp_c) from stdin"
        ))
        .await?;
    futures_util::pin_mut!(sink);
    for chunk in data.as_bytes().chunks(1 << 20) {
        sink.send(Bytes::copy_from_slice(chunk)).await?;
    }
    Ok(sink.finish().await?)
}

struct Check {
    name: String,
    expected: String,
    observed: String,
    ok: bool,
}

pub async fn run(ctx: &Context, plan: &PartitionsPlan) -> anyhow::Result<ProbeOutcome> {
    // Timed prepared statements, COPY and EXPLAIN: a session of its own, never the transaction
    // pooler (which keeps no prepared statement from one transaction to the next).
    let db = ctx.session("the partitions probe").await?;
    let user = crate::users::provision(ctx, "partitions", 1)
        .await?
        .remove(0);
    let devices: Vec<Uuid> = db
        .query(
            "insert into public.devices (user_id, hostname) \
             select $1, 'probe-partitions-' || g from generate_series(1, $2::int) g returning id",
            &[&user.id, &(plan.devices as i32)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let short: String = ctx
        .run_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect();
    let flat = format!("fleetbench.probe_flat_{short}");
    db.batch_execute(&format!(
        "create table {flat} (like public.system_metrics including defaults including identity); \
         create index on {flat} (device_id, ts desc); create index on {flat} (user_id, ts desc)"
    ))
    .await?;
    let result = measure(ctx, plan, &db, &user, &devices, &flat).await;
    let _ = db
        .batch_execute(&format!("drop table if exists {flat}"))
        .await;
    result
}

/// What loading the history month by month measured.
struct Growth {
    loaded: u64,
    /// Seconds spent in COPY into the partitioned table.
    copy_time: f64,
    months: Vec<NaiveDate>,
    /// Per month and query: rows loaded, the query, both medians, partitions scanned.
    table: Table,
    series: Vec<ChartSeries>,
    /// The partitions each query scanned after the last month.
    last_scanned: Vec<(String, BTreeSet<String>)>,
}

/// `plan.months` of history, newest first, into the partitioned table and the unpartitioned copy;
/// after each month the dashboard's queries timed on both and their plans read.
async fn grow(
    plan: &PartitionsPlan,
    db: &tokio_postgres::Client,
    user: &crate::users::User,
    devices: &[Uuid],
    flat: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Growth> {
    let current = month_start(now);
    let mut loaded = 0u64;
    let mut copy_time = 0f64;
    let mut months = Vec::new();
    let mut table = Table {
        title: "the dashboard's queries as the history grows (median of the runs)".into(),
        columns: [
            "rows loaded",
            "query",
            "partitioned p50 ms",
            "unpartitioned p50 ms",
            "partitions scanned",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
    };
    let mut series: Vec<ChartSeries> = QUERIES
        .iter()
        .flat_map(|(q, _)| {
            [
                ChartSeries {
                    name: format!("{q} (partitioned)"),
                    points: vec![],
                },
                ChartSeries {
                    name: format!("{q} (unpartitioned)"),
                    points: vec![],
                },
            ]
        })
        .collect();
    let mut last_scanned: Vec<(String, BTreeSet<String>)> = Vec::new();
    for step in 0..plan.months {
        let month = current - Months::new(step);
        db.execute("select fleetbench.ensure_metrics_partition($1)", &[&month])
            .await?;
        let from = month.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        let to = if step == 0 {
            now
        } else {
            (month + Months::new(1))
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
        };
        let data = history(devices, user.id, from, to, plan.rows_per_month);
        let t = Instant::now();
        loaded += copy(db, "public.system_metrics", &data).await?;
        copy_time += t.elapsed().as_secs_f64();
        copy(db, flat, &data).await?;
        months.push(month);
        db.batch_execute(&format!("analyze public.system_metrics; analyze {flat}"))
            .await?;

        last_scanned.clear();
        for (i, (name, sql)) in QUERIES.iter().enumerate() {
            let mut p50 = [0.0; 2];
            for (j, t) in ["public.system_metrics", flat].iter().enumerate() {
                let stmt = db.prepare(&sql.replace("{t}", t)).await?;
                let mut h = histogram();
                for r in 0..plan.repeats {
                    let device = devices[r as usize % devices.len()];
                    let t0 = Instant::now();
                    db.query(&stmt, &[&device]).await?;
                    h.saturating_record(t0.elapsed().as_micros().max(1) as u64);
                }
                p50[j] = ms_at(&h, 0.5);
                series[i * 2 + j].points.push((loaded as f64, p50[j]));
            }
            let explain: Value = db
                .query_one(
                    &format!(
                        "explain (analyze, format json) {}",
                        sql.replace("{t}", "public.system_metrics")
                    ),
                    &[&devices[0]],
                )
                .await?
                .get(0);
            let parts = scanned(&explain);
            table.rows.push(vec![
                loaded.to_string(),
                name.to_string(),
                format!("{:.2}", p50[0]),
                format!("{:.2}", p50[1]),
                parts.len().to_string(),
            ]);
            last_scanned.push((name.to_string(), parts));
        }
    }

    Ok(Growth {
        loaded,
        copy_time,
        months,
        table,
        series,
        last_scanned,
    })
}

/// Whether partition `name` exists.
async fn partition_exists(
    db: &tokio_postgres::Client,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    db.query_one("select to_regclass('public.' || $1) is not null", &[&name])
        .await
        .map(|r| r.get::<_, bool>(0))
}

/// Retention: an expired month (with rows) is dropped by maintenance, every loaded month stays.
async fn retention(
    db: &tokio_postgres::Client,
    (user, devices): (&crate::users::User, &[Uuid]),
    current: NaiveDate,
    months: &[NaiveDate],
) -> anyhow::Result<Check> {
    let retention: i64 = db
        .query_one(
            "select value::int8 from fleetbench.settings where key = 'metrics_retention_months'",
            &[],
        )
        .await?
        .get(0);
    let expired = current - Months::new(retention as u32 + 1);
    db.execute(
        "select fleetbench.ensure_metrics_partition($1)",
        &[&expired],
    )
    .await?;
    let old = expired.and_hms_opt(12, 0, 0).expect("noon").and_utc();
    copy(
        db,
        "public.system_metrics",
        &history(devices, user.id, old, old + chrono::Duration::hours(1), 5),
    )
    .await?;
    let actions: Vec<(String, String)> = db
        .query(
            "select action, partition_name from fleetbench.maintain_metrics_partitions()",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let dropped_expired = actions
        .iter()
        .any(|(a, p)| a == "dropped" && *p == partition_name(expired))
        && !partition_exists(db, &partition_name(expired)).await?;
    let mut kept = true;
    for m in months {
        kept &= partition_exists(db, &partition_name(*m)).await?;
    }
    Ok(Check {
        name: "retention drops an expired partition and keeps the months inside it".into(),
        expected: format!(
            "{} dropped, {} loaded months kept",
            partition_name(expired),
            months.len()
        ),
        observed: format!(
            "{}; loaded months {}",
            if dropped_expired {
                "dropped"
            } else {
                "not dropped"
            },
            if kept { "kept" } else { "NOT all kept" }
        ),
        ok: dropped_expired && kept,
    })
}

/// The checks: pruning (each time-bounded query scanned exactly the partitions its range overlaps),
/// next month ahead of time, a row with no partition refused by the Data API, retention; and the
/// number of partitions there are.
async fn checks(
    ctx: &Context,
    db: &tokio_postgres::Client,
    (user, devices): (&crate::users::User, &[Uuid]),
    now: DateTime<Utc>,
    months: &[NaiveDate],
    last_scanned: &[(String, BTreeSet<String>)],
) -> anyhow::Result<(Vec<Check>, usize)> {
    let current = month_start(now);
    let existing: Vec<String> = db
        .query(
            "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid \
             where i.inhparent = 'public.system_metrics'::regclass",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut checks = Vec::new();
    // Pruning: a query from `now() - bound` on touches only the partitions whose range ends after
    // that instant (the premade future months included: the range has no upper bound).
    for (name, parts) in last_scanned {
        if name == "latest sample" {
            continue;
        }
        let bound = if name.starts_with("7-day") { 7 } else { 1 };
        let since = (now - chrono::Duration::days(bound)).date_naive();
        let want: BTreeSet<String> = existing
            .iter()
            .filter(|p| {
                NaiveDate::parse_from_str(&format!("{}_01", &p[p.len() - 7..]), "%Y_%m_%d")
                    .is_ok_and(|m| m + Months::new(1) > since)
            })
            .cloned()
            .collect();
        checks.push(Check {
            name: format!("{name}: partitions scanned"),
            expected: want.iter().cloned().collect::<Vec<_>>().join(", "),
            observed: parts.iter().cloned().collect::<Vec<_>>().join(", "),
            ok: *parts == want,
        });
    }
    // Next month exists before it is needed.
    let next = current + Months::new(1);
    let next_ok = partition_exists(db, &partition_name(next)).await?;
    checks.push(Check {
        name: "next month's partition exists ahead of time".into(),
        expected: partition_name(next),
        observed: if next_ok {
            "exists".into()
        } else {
            "missing".into()
        },
        ok: next_ok,
    });
    // A month with no partition: the first one ahead without one.
    let mut gap = next;
    for _ in 0..36 {
        if !partition_exists(db, &partition_name(gap)).await? {
            break;
        }
        gap = gap + Months::new(1);
    }
    let res = ctx
        .http
        .post(ctx.api("/rest/v1/system_metrics"))
        .header("apikey", &ctx.target.config.anon_key)
        .bearer_auth(user.token())
        .json(&json!([{ "device_id": devices[0], "user_id": user.id, "ts": format!("{gap}T12:00:00Z"), "cpu_pct": 1.0 }]))
        .send()
        .await?;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["code"].as_str().unwrap_or("").to_string();
    checks.push(Check {
        name: format!("a row dated {gap} (no partition yet) through the Data API"),
        expected: "HTTP 400, code 23514".into(),
        observed: format!("HTTP {status}, code {code}"),
        ok: status == 400 && code == "23514",
    });
    checks.push(retention(db, (user, devices), current, months).await?);

    Ok((checks, existing.len()))
}

/// What the history says, in words.
fn findings(plan: &PartitionsPlan, g: &Growth, total_partitions: usize) -> Vec<String> {
    let latest = g
        .last_scanned
        .iter()
        .find(|(n, _)| n == "latest sample")
        .map_or(0, |(_, p)| p.len());
    let mut findings = vec![format!(
        "{} rows of {} months loaded by COPY at {:.0} rows/s",
        g.loaded,
        plan.months,
        g.loaded as f64 / g.copy_time.max(1e-9)
    )];
    findings.push(format!(
        "\"latest sample\" has no time bound: it scanned {latest} of the {total_partitions} partitions, newest first (the empty premade months included) until the first row"
    ));
    let last = g.table.rows.len().saturating_sub(QUERIES.len());
    let mut widest = 0f64;
    for row in &g.table.rows[last..] {
        let (p, f): (f64, f64) = (row[2].parse().unwrap_or(0.0), row[3].parse().unwrap_or(0.0));
        widest = widest.max((p - f).abs() / f.max(p).max(1e-9));
        findings.push(format!(
            "at {} rows, {}: {} ms partitioned vs {} ms unpartitioned",
            row[0], row[1], row[2], row[3]
        ));
    }
    if widest < 0.25 {
        findings.push(format!(
            "at {} rows the per-device queries are index lookups either way: partitioning changes their median by under 25 %; what it buys at this size is retention by DROP TABLE instead of DELETE",
            g.loaded
        ));
    }
    findings
}

async fn measure(
    ctx: &Context,
    plan: &PartitionsPlan,
    db: &tokio_postgres::Client,
    user: &crate::users::User,
    devices: &[Uuid],
    flat: &str,
) -> anyhow::Result<ProbeOutcome> {
    ctx.started().await;
    let now = Utc::now();
    let g = grow(plan, db, user, devices, flat, now).await?;
    let (checks, total_partitions) =
        checks(ctx, db, (user, devices), now, &g.months, &g.last_scanned).await?;
    let findings = findings(plan, &g, total_partitions);
    let Growth {
        loaded,
        copy_time,
        table,
        series,
        last_scanned,
        ..
    } = g;
    let pass = checks.iter().all(|c| c.ok);
    let mut figures = vec![
        figure("rows loaded", loaded as f64, "rows", None),
        figure(
            "COPY rate",
            loaded as f64 / copy_time.max(1e-9),
            "rows/s",
            None,
        ),
        figure("partitions", total_partitions as f64, "tables", None),
    ];
    for (name, parts) in &last_scanned {
        figures.push(figure(
            &format!("{name}: partitions scanned"),
            parts.len() as f64,
            "partitions",
            None,
        ));
    }
    Ok(ProbeOutcome {
        report: ProbeReport {
            title: String::new(),
            claim: "partitioning by month keeps queries fast as data grows; old data is cleaned up on a schedule".into(),
            verdict: if pass { "pass" } else { "fail" }.into(),
            figures,
            findings,
            tables: vec![
                table,
                Table {
                    title: "pruning and maintenance".into(),
                    columns: ["check", "expected", "observed", "ok"].map(String::from).to_vec(),
                    rows: checks
                        .iter()
                        .map(|c| vec![c.name.clone(), c.expected.clone(), c.observed.clone(), if c.ok { "yes" } else { "NO" }.into()])
                        .collect(),
                },
            ],
            charts: vec![ProbeChart {
                title: "query latency against data size".into(),
                x_label: " rows".into(),
                y_label: "p50 ms".into(),
                series,
            }],
        },
        aggregate: Aggregate::new(ctx.window_us),
    })
}
