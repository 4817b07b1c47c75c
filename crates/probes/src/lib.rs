//! End-to-end probes of the architecture's claims. Each probe provisions its own users (tagged with the
//! run id, so `fleetbench cleanup` removes them), measures one path end to end against an
//! independently known truth (the alerts it injected, exact nearest neighbours, the plan's
//! partitions), and returns a [`ProbeReport`] for `summary.json` and the HTML report plus the samples
//! of its operations (`realtime.alert_delivery`, `rpc.match_memories`, …) so that thresholds apply
//! to them. Probes run alone (`fleetbench probe NAME`) or beside a fleet run, measuring from the
//! start of its load phase.
//!
//! # Layout
//! - [`realtime`]: dashboards subscribed to their alerts while thermal anomalies are injected.
//! - [`webhook`]: alert insert → database webhook → `anomaly-webhook` → [`receiver`].
//! - [`rag`]: clustered memories, `match_memories` at a rate, recall@k against exact search.
//! - [`partitions`]: history loaded by COPY, queries against an unpartitioned copy, pruning, maintenance.
//! - [`pooler`]: a connection storm through the transaction pooler, and the same made directly.
//! - [`rls`]: one user's attempts on another's rows through the Data API, SQL and Realtime.
//! - [`receiver`]: fleetbench's webhook receiver (also served by the local stack's daemon).
//! - `users`, `inject`, `ws`, `tally`: probe users, thermal rows, a Realtime client, delivery scoring.

pub mod partitions;
pub mod pooler;
pub mod rag;
pub mod realtime;
pub mod receiver;
pub mod rls;
pub mod webhook;

mod inject;
mod tally;
mod users;
mod ws;

use std::sync::Arc;

use fleetbench_fleet::{Clock, Target};
use fleetbench_metrics::summary::{Figure, ProbeReport};
use fleetbench_metrics::{Aggregate, Sample};
use fleetbench_scenario::probes::ProbesPlan;
use hdrhistogram::Histogram;
use tokio::sync::watch;

/// What a probe reaches the target with.
pub struct Context {
    /// Auth and the Data API (provisioning, inserts), with the keys.
    pub target: Arc<Target>,
    /// Plain HTTP for the Data API calls probes make beyond the fleet's.
    pub http: reqwest::Client,
    /// SQL with a session of its own (COPY, EXPLAIN, settings, `pg_stat_activity`): the session
    /// pooler remotely, a direct connection locally.
    pub admin_db_url: Option<String>,
    /// The transaction pooler (`SUPABASE_DB_URL`).
    pub pooler_db_url: Option<String>,
    /// Where a connection storm is made "directly" (Postgres locally, the session pooler remotely).
    pub direct_db_url: Option<String>,
    pub run_id: String,
    pub clock: Clock,
    pub window_us: u64,
    /// The fleet's phase (0 provisioning, 1 load, 2 over): probes measure from phase 1. A probe
    /// run alone gets a channel already at 1.
    pub phase: watch::Receiver<u8>,
}

impl Context {
    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.target.config.api_url)
    }

    /// Waits for the fleet's load phase (at once when it has begun or no fleet runs).
    pub async fn started(&self) {
        let mut phase = self.phase.clone();
        let _ = phase.wait_for(|p| *p >= 1).await;
    }

    /// A session of its own on the admin database URL.
    pub async fn admin(&self) -> anyhow::Result<tokio_postgres::Client> {
        let url = self.admin_db_url.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "this probe needs SQL access: set SUPABASE_DB_SESSION_URL (or SUPABASE_DB_URL)"
            )
        })?;
        connect(url).await
    }

    /// A session that keeps prepared statements (`direct_db_url`: the session pooler remotely,
    /// Postgres locally); `who` is named when there is none.
    pub async fn session(&self, who: &str) -> anyhow::Result<tokio_postgres::Client> {
        let url = self.direct_db_url.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "{who} needs a session of its own (prepared statements, COPY, EXPLAIN): set \
                 SUPABASE_DB_SESSION_URL; the transaction pooler (SUPABASE_DB_URL) keeps no \
                 prepared statement from one transaction to the next"
            )
        })?;
        connect(url).await
    }

    pub fn sample(
        &self,
        agg: &mut Aggregate,
        operation: &'static str,
        at: Timing,
        error: Option<&str>,
    ) {
        // Times read from other clocks (a commit timestamp) are kept in order: due ≤ sent ≤ done.
        let sent_us = at.sent_us.max(at.intended_us);
        let times = (at.intended_us, sent_us, at.done_us.max(sent_us));
        agg.add(&Sample::new(
            operation,
            times,
            error.map(str::to_string),
            0,
            0,
        ));
    }

    /// A wall-clock time (Unix µs) on the run's clock.
    pub fn on_clock(&self, unix_us: i64) -> u64 {
        let start = self.clock.started_at().timestamp_micros();
        (unix_us - start).max(0) as u64
    }
}

/// The HTTP client probes use: bounded waits, fleetbench's user agent.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .connect_timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("fleetbench-probes/", env!("CARGO_PKG_VERSION")))
        .tls_certs_merge(fleetbench_tls::reqwest_roots().unwrap_or_else(|e| {
            tracing::warn!("{e}: the probes trust the platform's roots only");
            Vec::new()
        }))
        .build()
        .expect("a default HTTP client builds")
}

/// When an operation was meant to start, was sent and was done, in µs on the run's clock.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub intended_us: u64,
    pub sent_us: u64,
    pub done_us: u64,
}

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let pg = fleetbench_tls::pg::PgConnect::parse(url)
        .map_err(|e| anyhow::anyhow!("connecting for SQL: {e}"))?;
    pg.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "connecting for SQL: {}",
            fleetbench_schema::db_error_text(&e)
        )
    })
}

/// A probe's results.
pub struct ProbeOutcome {
    pub report: ProbeReport,
    /// Samples of the probe's operations, on the run's clock and windows.
    pub aggregate: Aggregate,
}

impl ProbeOutcome {
    fn failed(name: &str, window_us: u64, error: &anyhow::Error) -> ProbeOutcome {
        ProbeOutcome {
            report: ProbeReport {
                title: title(name).into(),
                verdict: "fail".into(),
                findings: vec![format!("the probe could not complete: {error:#}")],
                ..Default::default()
            },
            aggregate: Aggregate::new(window_us),
        }
    }
}

fn title(name: &str) -> &'static str {
    match name {
        "realtime" => "Realtime: thermal alerts pushed to dashboards",
        "webhook" => "Edge Functions: alert webhooks",
        "rag" => "RAG: vector search over AI memory",
        "partitions" => "Partitioning by month and retention",
        "pooler" => "Pooled connections: a connection storm",
        "rls" => "Row-level security: each user sees only their own data",
        _ => "probe",
    }
}

/// Runs one probe; a probe that cannot complete is a failed probe with the reason as its finding.
pub async fn run(name: &str, plan: &ProbesPlan, ctx: &Context) -> ProbeOutcome {
    let result = match name {
        "realtime" => match &plan.realtime {
            Some(p) => realtime::run(ctx, p).await,
            None => Err(anyhow::anyhow!("not configured")),
        },
        "webhook" => match &plan.webhook {
            Some(p) => webhook::run(ctx, p).await,
            None => Err(anyhow::anyhow!("not configured")),
        },
        "rag" => match &plan.rag {
            Some(p) => rag::run(ctx, p).await,
            None => Err(anyhow::anyhow!("not configured")),
        },
        "partitions" => match &plan.partitions {
            Some(p) => partitions::run(ctx, p).await,
            None => Err(anyhow::anyhow!("not configured")),
        },
        "pooler" => match &plan.pooler {
            Some(p) => pooler::run(ctx, p).await,
            None => Err(anyhow::anyhow!("not configured")),
        },
        "rls" => rls::run(ctx).await,
        other => Err(anyhow::anyhow!("unknown probe {other:?}")),
    };
    match result {
        Ok(mut o) => {
            o.report.title = title(name).into();
            o
        }
        Err(e) => ProbeOutcome::failed(name, ctx.window_us, &e),
    }
}

/// Runs one probe until it ends or `stop` turns true; an interrupted probe reports that it was.
pub async fn run_until(
    name: &str,
    plan: &ProbesPlan,
    ctx: &Context,
    mut stop: watch::Receiver<bool>,
) -> ProbeOutcome {
    tokio::select! {
        o = run(name, plan, ctx) => o,
        _ = stop.wait_for(|s| *s) => ProbeOutcome {
            report: ProbeReport {
                title: title(name).into(),
                verdict: "info".into(),
                findings: vec!["interrupted before it finished: no figures".into()],
                ..Default::default()
            },
            aggregate: Aggregate::new(ctx.window_us),
        },
    }
}

/// Runs every configured probe: all at once except the pooler's storm, which runs last so that
/// its direct storm (which may exhaust the database's connections on purpose) cannot disturb the
/// others' measurements. Sorted by name.
pub async fn run_all(
    plan: ProbesPlan,
    ctx: Arc<Context>,
    stop: watch::Receiver<bool>,
) -> Vec<(String, ProbeOutcome)> {
    let names = plan.names();
    let plan = Arc::new(plan);
    let mut set = tokio::task::JoinSet::new();
    for name in names.iter().filter(|n| **n != "pooler") {
        let (plan, ctx, stop, name) = (plan.clone(), ctx.clone(), stop.clone(), name.to_string());
        set.spawn(async move {
            let o = run_until(&name, &plan, &ctx, stop).await;
            (name, o)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(pair) => out.push(pair),
            Err(e) => tracing::error!("a probe task failed: {e}"),
        }
    }
    if names.contains(&"pooler") {
        out.push((
            "pooler".into(),
            run_until("pooler", &plan, &ctx, stop).await,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Milliseconds at quantile `q` of a µs histogram (0 when empty).
pub(crate) fn ms_at(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

pub(crate) fn figure(name: &str, value: f64, unit: &str, published: Option<&str>) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        published: published.map(String::from),
    }
}

/// Latency figures (p50, p95, p99) of a µs histogram.
pub(crate) fn latency_figures(
    what: &str,
    h: &Histogram<u64>,
    published: Option<&str>,
) -> Vec<Figure> {
    [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")]
        .into_iter()
        .map(|(q, p)| {
            figure(
                &format!("{what} {p}"),
                ms_at(h, q),
                "ms",
                if p == "p95" { published } else { None },
            )
        })
        .collect()
}
