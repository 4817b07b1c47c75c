//! The architecture's claim: "Supavisor manages thousands of simultaneous connections without crashing the
//! database".
//!
//! A storm of `clients` SQL clients connects through the transaction-mode pooler, at most
//! `concurrency` handshakes at a time; each runs `queries` queries and then holds its connection
//! until every client has connected or been refused, so that the storm's clients are simultaneous.
//! Measured: connect latency (`pooler.connect`), refusals by SQLSTATE (PgBouncer's
//! `no more connections allowed`, Supavisor's `Max client connections reached`, Postgres's
//! `too many clients already`), queries per second, and the server connections the database saw
//! (`pg_stat_activity` at the storm's peak, less those open before it). With `direct`, the same
//! storm is made without the pooler (Postgres locally, the session pooler remotely).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetbench_metrics::Aggregate;
use fleetbench_metrics::aggregate::histogram;
use fleetbench_metrics::summary::{ProbeReport, Table};
use fleetbench_scenario::probes::PoolerPlan;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore, watch};

use crate::{Context, ProbeOutcome, Timing, figure, ms_at};

/// How long one handshake may take before it counts as a timeout.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Storm {
    pub clients: u64,
    pub connected: u64,
    /// Refusal kind (`db_53300`, `timeout`, …) → count, with one message per kind.
    pub refused: BTreeMap<String, (u64, String)>,
    pub connect: Option<Histogram<u64>>,
    pub queries: u64,
    pub query_errors: u64,
    pub seconds: f64,
    /// Client backends the database held at the peak, less those before the storm.
    pub server_connections: i64,
}

async fn client_backends(admin: &tokio_postgres::Client) -> anyhow::Result<i64> {
    let rows = admin
        .query_typed(
            "select count(*) from pg_stat_activity where backend_type = 'client backend'",
            &[],
        )
        .await?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}

/// Runs one storm against `url`; connect samples go to `op` when given.
pub async fn storm(
    ctx: &Context,
    admin: &tokio_postgres::Client,
    url: &str,
    plan: &PoolerPlan,
    op: Option<&'static str>,
    agg: &mut Aggregate,
) -> anyhow::Result<Storm> {
    let pg = fleetbench_tls::pg::PgConnect::parse(url)?;
    let (config, tls) = (pg.config, pg.tls);
    let before = client_backends(admin).await?;
    let gate = Arc::new(Semaphore::new(plan.concurrency as usize));
    let (release_tx, release) = watch::channel(false);
    let attempted = Arc::new((AtomicU64::new(0), Notify::new()));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..plan.clients {
        let (config, tls, gate, attempted, mut release, clock) = (
            config.clone(),
            tls.clone(),
            gate.clone(),
            attempted.clone(),
            release.clone(),
            ctx.clock,
        );
        let queries = plan.queries;
        set.spawn(async move {
            let permit = gate.acquire_owned().await.expect("the gate stays open");
            let t0 = clock.now_us();
            let conn = tokio::time::timeout(CONNECT_WITHIN, config.connect(tls)).await;
            let t1 = clock.now_us();
            drop(permit);
            let mut result = (t0, t1, Ok(()), 0u64, 0u64);
            let client = match conn {
                Err(_) => {
                    result.2 = Err(("timeout".to_string(), "no answer within 30 s".to_string()));
                    None
                }
                Ok(Err(e)) => {
                    let kind = e.as_db_error().map_or_else(
                        || "connect".to_string(),
                        |d| format!("db_{}", d.code().code()),
                    );
                    result.2 = Err((kind, fleetbench_schema::db_error_text(&e)));
                    None
                }
                Ok(Ok((client, connection))) => {
                    tokio::spawn(connection);
                    for _ in 0..queries {
                        match client.simple_query("select 1").await {
                            Ok(_) => result.3 += 1,
                            Err(_) => result.4 += 1,
                        }
                    }
                    Some(client)
                }
            };
            let (n, all) = &*attempted;
            n.fetch_add(1, Ordering::SeqCst);
            all.notify_one();
            // Hold the connection until every client has connected or been refused.
            let _ = release.wait_for(|r| *r).await;
            drop(client);
            result
        });
    }
    let (n, all) = &*attempted;
    while n.load(Ordering::SeqCst) < u64::from(plan.clients) {
        all.notified().await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak = client_backends(admin).await?;
    let _ = release_tx.send(true);

    let mut s = Storm {
        clients: u64::from(plan.clients),
        seconds,
        server_connections: peak - before,
        ..Default::default()
    };
    let mut connect = histogram();
    while let Some(r) = set.join_next().await {
        let (t0, t1, outcome, ok, failed) = r?;
        let timing = Timing {
            intended_us: t0,
            sent_us: t0,
            done_us: t1,
        };
        s.queries += ok;
        s.query_errors += failed;
        match outcome {
            Ok(()) => {
                s.connected += 1;
                connect.saturating_record((t1 - t0).max(1));
                if let Some(op) = op {
                    ctx.sample(agg, op, timing, None);
                }
            }
            Err((kind, message)) => {
                if let Some(op) = op {
                    ctx.sample(agg, op, timing, Some(&kind));
                }
                s.refused.entry(kind).or_insert((0, message)).0 += 1;
            }
        }
    }
    s.connect = Some(connect);
    Ok(s)
}

fn row(label: &str, s: &Storm) -> Vec<String> {
    let h = s.connect.as_ref();
    let refused: u64 = s.refused.values().map(|(n, _)| n).sum();
    vec![
        label.into(),
        s.clients.to_string(),
        s.connected.to_string(),
        refused.to_string(),
        format!("{:.1}", h.map_or(0.0, |h| ms_at(h, 0.5))),
        format!("{:.1}", h.map_or(0.0, |h| ms_at(h, 0.99))),
        format!("{:.0}", s.queries as f64 / s.seconds.max(1e-9)),
        s.server_connections.to_string(),
    ]
}

pub async fn run(ctx: &Context, plan: &PoolerPlan) -> anyhow::Result<ProbeOutcome> {
    // Thousands of sockets: the soft descriptor limit is raised to the hard one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let pooled_url = ctx.pooler_db_url.clone().ok_or_else(|| {
        anyhow::anyhow!("the pooler probe needs SUPABASE_DB_URL (the transaction pooler)")
    })?;
    let admin = ctx.admin().await?;
    let max_connections: String = admin
        .query_typed("show max_connections", &[])
        .await?
        .first()
        .map_or_else(String::new, |r| r.get(0));
    ctx.started().await;
    let mut agg = Aggregate::new(ctx.window_us);
    let pooled = storm(
        ctx,
        &admin,
        &pooled_url,
        plan,
        Some("pooler.connect"),
        &mut agg,
    )
    .await?;
    let direct_label = if ctx.target.config.kind == "local" {
        "direct to Postgres"
    } else {
        "session pooler"
    };
    let direct = match (&ctx.direct_db_url, plan.direct) {
        (Some(url), true) => Some(storm(ctx, &admin, url, plan, None, &mut agg).await?),
        _ => None,
    };

    let mut table = Table {
        title: format!(
            "{} clients, {} handshakes at a time, {} queries each",
            plan.clients, plan.concurrency, plan.queries
        ),
        columns: [
            "path",
            "clients",
            "connected",
            "refused",
            "connect p50 ms",
            "connect p99 ms",
            "queries/s",
            "server connections",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![row("transaction pooler", &pooled)],
    };
    let mut findings = vec![format!(
        "through the transaction pooler {} of {} simultaneous clients connected, served by {} database connections (the database allows {max_connections})",
        pooled.connected, pooled.clients, pooled.server_connections
    )];
    for (kind, (n, message)) in &pooled.refused {
        findings.push(format!(
            "the pooler refused {n} clients ({kind}): {message}"
        ));
    }
    if let Some(d) = &direct {
        table.rows.push(row(direct_label, d));
        let refused: u64 = d.refused.values().map(|(n, _)| n).sum();
        findings.push(format!(
            "{direct_label}: {} of {} connected, {refused} refused, using {} database connections",
            d.connected, d.clients, d.server_connections
        ));
        for (kind, (n, message)) in &d.refused {
            findings.push(format!(
                "{direct_label} refused {n} clients ({kind}): {message}"
            ));
        }
    }
    let h = pooled.connect.as_ref().expect("set by the storm");
    let refused: u64 = pooled.refused.values().map(|(n, _)| n).sum();
    let figures = vec![
        figure(
            "clients",
            pooled.clients as f64,
            "clients",
            Some("pooler max clients: Micro 200 … 16XL 12,000"),
        ),
        figure(
            "connected through the pooler",
            pooled.connected as f64,
            "clients",
            None,
        ),
        figure("refused by the pooler", refused as f64, "clients", None),
        figure("connect p50", ms_at(h, 0.5), "ms", None),
        figure("connect p99", ms_at(h, 0.99), "ms", None),
        figure(
            "queries per second",
            pooled.queries as f64 / pooled.seconds.max(1e-9),
            "queries/s",
            Some("Supavisor load test: 20,000+ QPS over 1,003,200 clients"),
        ),
        figure(
            "database connections used",
            pooled.server_connections as f64,
            "connections",
            Some("DB max connections: Micro 60 … 16XL 500"),
        ),
    ];
    // The claim holds when the pooler took every client without exhausting the database.
    let pass = refused == 0 && pooled.query_errors == 0;
    Ok(ProbeOutcome {
        report: ProbeReport {
            title: String::new(),
            claim: "Supavisor manages thousands of simultaneous connections without crashing the database".into(),
            verdict: if pass { "pass" } else { "fail" }.into(),
            figures,
            findings,
            tables: vec![table],
            charts: Vec::new(),
        },
        aggregate: agg,
    })
}
