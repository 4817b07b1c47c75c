//! The project's Metrics API, as hosted serves it: `GET /customer/v1/privileged/metrics`, HTTP basic
//! auth with the user `service_role` and the secret key (or the legacy service-role key) as the
//! password, Prometheus text. The series keep the hosted names (those Supabase's Grafana dashboard
//! queries) for what the double has:
//!
//! - Postgres (`service_type="postgresql"`): `pg_up`, `pg_stat_database_*` counters summed over the
//!   databases (transactions, blocks hit and read, tuples, deadlocks, temporary bytes),
//!   `pg_stat_database_num_backends`, `connection_stats_connection_count` by user,
//!   `max_connections_connection_count`, `pg_database_size_bytes`, `pg_wal_size_mb`,
//!   `replication_slots_max_lag_bytes` (Realtime's slot) and `pg_stat_activity_xact_runtime`.
//! - The database's host (`service_type="db"`): `node_cpu_seconds_total` as node_exporter serves
//!   it (per `cpu`, every mode, idle included: this machine's `/proc/stat`, which like hosted's
//!   VM runs the API services beside Postgres), `node_disk_read_bytes_total`/
//!   `node_disk_written_bytes_total` (the PostgreSQL processes' storage I/O),
//!   `node_memory_MemTotal_bytes`/`node_memory_MemAvailable_bytes`.
//! - The shared pooler (`service_type="pooler"`): `supavisor_connections_active` by `mode`
//!   (`transaction`, `session`), the clients PgBouncer, standing in for Supavisor, holds, with
//!   hosted's labels, its repeated `supabase_project_ref` included. No `pgbouncer_*`: those are
//!   hosted's dedicated PgBouncer, which the double does not run.
//!
//! Every series carries the labels hosted's do (fixtures/hosted/metrics-api.prom):
//! `supabase_project_ref`, and but for the pooler's `supabase_identifier`, and Postgres' `server`.
//! - Auth (`service_type="gotrue"`): `http_status_codes_total{code}`, its responses by status (the
//!   429s it sent among them).
//!
//! Written by hand: a text exposition of a few dozen gauges read fresh at each scrape, which a
//! metrics registry would only mirror.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;

/// Where the scrape reads from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub project_ref: String,
    /// PostgreSQL's postmaster: its processes' CPU and I/O.
    pub postmaster_pid: Option<u32>,
    /// Each pooler's admin console (`…/pgbouncer`), with its pool mode.
    pub pooler_consoles: Vec<(String, String)>,
}

struct MetricsState {
    sources: Sources,
    keys: crate::keys::ProjectKeys,
    db: deadpool_postgres::Pool,
    auth: Arc<crate::auth::AuthState>,
}

/// `/customer/v1/privileged/metrics`.
pub fn routes(
    sources: Sources,
    keys: crate::keys::ProjectKeys,
    db: deadpool_postgres::Pool,
    auth: Arc<crate::auth::AuthState>,
) -> Router {
    Router::new()
        .route("/customer/v1/privileged/metrics", get(scrape))
        .with_state(Arc::new(MetricsState {
            sources,
            keys,
            db,
            auth,
        }))
}

/// Basic auth `service_role:<secret key or service-role key>`.
fn authorised(s: &MetricsState, headers: &HeaderMap) -> bool {
    let Some((user, password)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|b| {
            b.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        })
    else {
        return false;
    };
    user == "service_role" && s.keys.key_role(&password) == Some(crate::keys::KeyRole::ServiceRole)
}

async fn scrape(State(s): State<Arc<MetricsState>>, headers: HeaderMap) -> Response {
    if !authorised(&s, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"metrics\"")],
            "Unauthorized",
        )
            .into_response();
    }
    let mut out = Exposition::new(&s.sources.project_ref);
    match postgres(&s.db, &mut out).await {
        Ok(()) => out.gauge(
            "pg_up",
            "Whether the last scrape of Postgres succeeded",
            &[],
            1.0,
        ),
        Err(e) => {
            tracing::warn!("metrics: postgres: {e}");
            out.gauge(
                "pg_up",
                "Whether the last scrape of Postgres succeeded",
                &[],
                0.0,
            );
        }
    }
    host(&s.sources, &mut out);
    let statuses = s
        .auth
        .statuses
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (code, n) in statuses {
        let help = "Auth's responses by HTTP status";
        out.counter(
            "http_status_codes_total",
            help,
            &[("code", &code.to_string())],
            n as f64,
        );
    }
    for (mode, url) in &s.sources.pooler_consoles {
        if let Err(e) = pooler(mode, url, &mut out).await {
            tracing::warn!("metrics: {mode} pooler: {e}");
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.text,
    )
        .into_response()
}

/// The exposition being written: each family's `# HELP`/`# TYPE` once, before its first sample.
struct Exposition {
    text: String,
    project_ref: String,
    seen: std::collections::HashSet<String>,
}

impl Exposition {
    fn new(project_ref: &str) -> Exposition {
        Exposition {
            text: String::new(),
            project_ref: project_ref.to_string(),
            seen: Default::default(),
        }
    }

    fn sample(&mut self, kind: &str, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        if self.seen.insert(name.to_string()) {
            let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        let service = if name.starts_with("pg_")
            || name.starts_with("connection_stats")
            || name.starts_with("max_connections")
            || name.starts_with("replication_slots")
        {
            "postgresql"
        } else if name.starts_with("http_") {
            "gotrue"
        } else if name.starts_with("supavisor_") {
            "pooler"
        } else {
            "db"
        };
        let project = &self.project_ref;
        let mut l = if service == "pooler" {
            format!("supabase_project_ref=\"{project}\",service_type=\"{service}\"")
        } else {
            format!(
                "supabase_project_ref=\"{project}\",supabase_identifier=\"{project}\",service_type=\"{service}\""
            )
        };
        if service == "postgresql" && !name.starts_with("pg_database_size_bytes") {
            l.push_str(",server=\"localhost:5432\"");
        }
        for (k, val) in labels {
            let _ = write!(
                l,
                ",{k}=\"{}\"",
                val.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        let _ = writeln!(self.text, "{name}{{{l}}} {v}");
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.sample("gauge", name, help, labels, v);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.sample("counter", name, help, labels, v);
    }
}

/// `pg_stat_database` summed over the databases, with the name each hosted counter has.
const DATABASE_COUNTERS: [(&str, &str); 11] = [
    ("xact_commit", "Transactions committed"),
    ("xact_rollback", "Transactions rolled back"),
    ("blks_hit", "Disk blocks found in buffer cache"),
    ("blks_read", "Disk blocks read"),
    ("tup_inserted", "Rows inserted"),
    ("tup_updated", "Rows updated"),
    ("tup_deleted", "Rows deleted"),
    ("tup_fetched", "Rows fetched"),
    ("tup_returned", "Rows returned"),
    ("deadlocks", "Deadlocks detected"),
    ("temp_bytes", "Temporary file bytes written"),
];

async fn postgres(db: &deadpool_postgres::Pool, out: &mut Exposition) -> anyhow::Result<()> {
    let c = db.get().await?;
    let sums: Vec<String> = DATABASE_COUNTERS
        .iter()
        .map(|(col, _)| format!("coalesce(sum({col}), 0)::float8"))
        .collect();
    let row = c
        .query_one(
            &format!(
                "select {}, coalesce(sum(numbackends), 0)::float8 from pg_stat_database",
                sums.join(", ")
            ),
            &[],
        )
        .await?;
    for (i, (col, help)) in DATABASE_COUNTERS.iter().enumerate() {
        let name = format!("pg_stat_database_{col}_total");
        out.counter(&name, help, &[], row.get(i));
    }
    let backends: f64 = row.get(DATABASE_COUNTERS.len());
    out.gauge(
        "pg_stat_database_num_backends",
        "The number of active backends",
        &[],
        backends,
    );
    let sql = "select coalesce(usename::text, ''), count(*)::float8 from pg_stat_activity \
               where backend_type = 'client backend' group by 1 order by 1";
    for r in c.query(sql, &[]).await? {
        let user: String = r.get(0);
        out.gauge(
            "connection_stats_connection_count",
            "Number of active connections",
            &[("username", &user)],
            r.get(1),
        );
    }
    let sql = "select current_setting('max_connections')::float8, \
                (select coalesce(sum(size), 0)::float8 from pg_ls_waldir()) / 1048576.0, \
                (select coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), \
                    coalesce(confirmed_flush_lsn, restart_lsn))), 'NaN')::float8 from pg_replication_slots), \
                (select coalesce(max(extract(epoch from now() - xact_start)), 0)::float8 \
                    from pg_stat_activity where state <> 'idle' and xact_start is not null)";
    let r = c.query_one(sql, &[]).await?;
    out.gauge(
        "max_connections_connection_count",
        "Maximum allowed connections",
        &[],
        r.get(0),
    );
    out.gauge(
        "pg_wal_size_mb",
        "Disk space used by WAL files",
        &[],
        r.get(1),
    );
    out.gauge(
        "replication_slots_max_lag_bytes",
        "Max Replication Lag",
        &[],
        r.get(2),
    );
    out.gauge(
        "pg_stat_activity_xact_runtime",
        "Transaction Runtime",
        &[],
        r.get(3),
    );
    let sql = "select datname::text, pg_database_size(oid)::float8 from pg_database \
               where datallowconn order by 1";
    for r in c.query(sql, &[]).await? {
        let name: String = r.get(0);
        out.gauge(
            "pg_database_size_bytes",
            "Disk space used by the database",
            &[("datname", &name)],
            r.get(1),
        );
    }
    Ok(())
}

/// Linux's `USER_HZ`: the unit of `/proc/stat`'s CPU times (fixed at 100 by the kernel ABI).
const USER_HZ: f64 = 100.0;

/// The postmaster's and its children's storage bytes (read, written); `None` when a
/// `/proc/<pid>/io` cannot be read (another user's processes without the right to trace them).
fn postgres_io(postmaster: u32) -> Option<(f64, f64)> {
    let mut pids = vec![postmaster];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if parent(pid) == Some(postmaster) {
                pids.push(pid);
            }
        }
    }
    let mut io = (0.0, 0.0);
    for pid in pids {
        let (r, w) = process_io(pid)?;
        io = (io.0 + r, io.1 + w);
    }
    Some(io)
}

/// `/proc/<pid>/stat`'s parent (field 4, counted after the command's closing parenthesis,
/// which may itself contain spaces).
fn parent(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `/proc/<pid>/io`'s storage bytes read and written.
fn process_io(pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((field("read_bytes:")?, field("write_bytes:")?))
}

/// node_exporter's CPU modes, in `/proc/stat`'s column order after the CPU's name.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// `/proc/stat`'s per-CPU times as node_exporter serves them: (cpu index, mode, seconds).
fn cpu_seconds() -> Vec<(String, &'static str, f64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields.next().and_then(|f| f.strip_prefix("cpu")) else {
            continue;
        };
        if cpu.is_empty() {
            continue; // the all-CPU line
        }
        for (mode, ticks) in CPU_MODES.iter().zip(fields) {
            if let Ok(t) = ticks.parse::<f64>() {
                out.push((cpu.to_string(), *mode, t / USER_HZ));
            }
        }
    }
    out
}

fn host(sources: &Sources, out: &mut Exposition) {
    let help = "Seconds the CPUs spent in each mode.";
    for (cpu, mode, seconds) in cpu_seconds() {
        out.counter(
            "node_cpu_seconds_total",
            help,
            &[("cpu", &cpu), ("mode", mode)],
            seconds,
        );
    }
    if let Some((read, written)) = sources.postmaster_pid.and_then(postgres_io) {
        let labels = [("device", "postgres")];
        let help = "The total number of bytes read successfully.";
        out.counter("node_disk_read_bytes_total", help, &labels, read);
        let help = "The total number of bytes written successfully.";
        out.counter("node_disk_written_bytes_total", help, &labels, written);
    }
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let help = "Memory information field MemTotal_bytes.";
    out.gauge(
        "node_memory_MemTotal_bytes",
        help,
        &[],
        sys.total_memory() as f64,
    );
    let help = "Memory information field MemAvailable_bytes.";
    out.gauge(
        "node_memory_MemAvailable_bytes",
        help,
        &[],
        sys.available_memory() as f64,
    );
}

/// A pooler's `SHOW POOLS` (summed over its pools) and its `max_client_conn`.
async fn pooler(mode: &str, url: &str, out: &mut Exposition) -> anyhow::Result<()> {
    let console = fleetbench_tls::pg::connect(url).await?;
    let rows =
        |msgs: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<tokio_postgres::SimpleQueryRow> {
            msgs.into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .collect()
        };
    let pools = rows(console.simple_query("SHOW POOLS").await?);
    // Supavisor's active clients are the clients it holds, served or waiting.
    let clients: f64 = pools
        .iter()
        .flat_map(|r| ["cl_active", "cl_waiting"].map(|c| r.get(c)))
        .filter_map(|v| v.and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let project = out.project_ref.clone();
    let labels = [
        ("db_name", "postgres"),
        ("mode", mode),
        // Repeated, as hosted's Supavisor lines repeat it.
        ("supabase_project_ref", project.as_str()),
        ("type", "single"),
        ("user", "postgres"),
        ("host", "localhost"),
        ("region", "local"),
    ];
    let help = "The total count of active clients for a tenant.";
    out.gauge("supavisor_connections_active", help, &labels, clients);
    Ok(())
}
