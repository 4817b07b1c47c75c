//! The server's side of a run: the target's Metrics API (`<api>/customer/v1/privileged/metrics`,
//! HTTP basic auth `service_role` with the secret or service-role key, Prometheus text) scraped
//! every `interval` on the run's clock from the start until the run ends, kept as `server.json`.
//! A target without one (401, 404, not Prometheus text at the first scrape) is said once and not
//! asked again; the run goes on without a Server section. With SQL access (the session URL),
//! `pg_stat_statements` is read before and after the run for the statements that took the most
//! database time during it.

use std::time::Duration;

use fleetbench_fleet::Clock;
use fleetbench_metrics::server::{SERIES, Scrape, ServerSeries, Statement};
use tokio::sync::watch;

/// The Metrics API of the project at `api_url`, read with `service_key`.
pub struct MetricsApi {
    http: reqwest::Client,
    url: String,
    service_key: String,
}

impl MetricsApi {
    pub fn new(api_url: &str, service_key: &str) -> Result<MetricsApi, String> {
        let roots = fleetbench_tls::reqwest_roots().map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(MetricsApi {
            http,
            url: format!(
                "{}/customer/v1/privileged/metrics",
                api_url.trim_end_matches('/')
            ),
            service_key: service_key.to_string(),
        })
    }

    /// One scrape: the kept series (see [`SERIES`]) and their values.
    pub async fn scrape(&self, t: f64) -> Result<Scrape, String> {
        let response = self
            .http
            .get(&self.url)
            .basic_auth("service_role", Some(&self.service_key))
            .send()
            .await
            .map_err(|e| format!("GET the Metrics API: {}", e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the Metrics API answered {status}"));
        }
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading the Metrics API: {}", e.without_url()))?;
        parse(&text, t)
    }
}

/// Labels that say where a series comes from rather than what it counts: left out of the key
/// (series that differ only by them are added up: the nodes of the pooler, say).
pub const PROVENANCE: [&str; 9] = [
    "supabase_project_ref",
    "supabase_identifier",
    "service_type",
    "server",
    "host",
    "region",
    "tenant",
    "type",
    "db_name",
];

/// The kept series of a Prometheus text exposition, as hosted serves it (supabase/supabase-grafana's
/// published series, `fixtures/hosted/metrics-api.prom`): the primary database's only (a read
/// replica's series carry a `supabase_identifier` other than the project's ref), values that are
/// numbers (a `NaN` slot lag without a slot is no value), keyed by the labels that say what is
/// counted (`username`, `cpu` and `mode`, `device`, `datname`, the pooler's `mode` and `user`).
/// Repeated label names, as on hosted's Supavisor lines, are read as one.
pub fn parse(text: &str, t: f64) -> Result<Scrape, String> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines)
        .map_err(|e| format!("the Metrics API's answer is not Prometheus text: {e}"))?;
    let mut values = std::collections::BTreeMap::new();
    for s in parsed.samples {
        if !SERIES.contains(&s.metric.as_str()) {
            continue;
        }
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let replica = match (
            s.labels.get("supabase_identifier"),
            s.labels.get("supabase_project_ref"),
        ) {
            (Some(id), Some(project)) => id != project,
            _ => false,
        };
        if !value.is_finite() || replica {
            continue;
        }
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| !PROVENANCE.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        *values.entry(key).or_insert(0.0) += value;
    }
    if values.is_empty() {
        return Err("the Metrics API's answer holds none of the series fleetbench reads".into());
    }
    Ok(Scrape { t, values })
}

/// Scrapes `api` every `every` from now until `stop`, on `clock`; why not, when the first scrape
/// finds no Metrics API.
pub async fn scrape_until(
    api: MetricsApi,
    source: String,
    clock: Clock,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<ServerSeries, String> {
    let mut series = ServerSeries {
        source,
        interval_s: every.as_secs_f64(),
        ..ServerSeries::default()
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let t = clock.now_us() as f64 / 1e6;
        match api.scrape(t).await {
            Ok(s) => series.scrapes.push(s),
            Err(e) if series.scrapes.is_empty() => return Err(e),
            Err(_) => series.failed += 1,
        }
    }
    // One last scrape at the end, so that the rates cover the whole run.
    let t = clock.now_us() as f64 / 1e6;
    match api.scrape(t).await {
        Ok(s) => series.scrapes.push(s),
        Err(_) => series.failed += 1,
    }
    Ok(series)
}

/// `pg_stat_statements`' counters at one moment: (userid, dbid, queryid, toplevel) → (query,
/// calls, total ms, rows).
pub type Counters = std::collections::BTreeMap<String, (String, u64, f64, u64)>;

/// The roles a run's statements execute as: PostgREST's (`authenticator` and the roles it sets),
/// the pooler path's and the probes' (`postgres`), Auth's. A shared staging project runs other
/// teams' SQL too; only these roles' statements, in the run's database, are read and published.
pub const RUN_ROLES: [&str; 6] = [
    "authenticator",
    "anon",
    "authenticated",
    "service_role",
    "postgres",
    "supabase_auth_admin",
];

/// Reads `pg_stat_statements` (the `extensions` schema as on Supabase, else the search path's)
/// through `db_url` with the simple protocol (no named statement, whatever the pooler), for the
/// run's database and [`RUN_ROLES`] only.
pub async fn statement_counters(db_url: &str) -> Result<Counters, String> {
    let db = fleetbench_tls::pg::connect(db_url)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let columns = "userid::text || '/' || dbid::text || '/' || coalesce(queryid::text, '') || '/' || toplevel::text, \
         left(query, 300), calls, total_exec_time, rows";
    let roles = RUN_ROLES.map(|r| format!("'{r}'")).join(", ");
    let only_the_run = format!(
        "dbid = (select oid from pg_database where datname = current_database()) \
         and userid in (select oid from pg_roles where rolname in ({roles}))"
    );
    let mut last = String::new();
    for view in ["extensions.pg_stat_statements", "pg_stat_statements"] {
        match db
            .simple_query(&format!(
                "select {columns} from {view} where {only_the_run}"
            ))
            .await
        {
            Ok(messages) => return Ok(counters(&messages)),
            Err(e) => {
                last = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string())
            }
        }
    }
    Err(format!("pg_stat_statements: {last}"))
}

fn counters(messages: &[tokio_postgres::SimpleQueryMessage]) -> Counters {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get(0)?.to_string(),
                (
                    r.get(1).unwrap_or_default().to_string(),
                    r.get(2)?.parse().ok()?,
                    r.get(3)?.parse().ok()?,
                    r.get(4)?.parse().ok()?,
                ),
            )),
            _ => None,
        })
        .collect()
}

/// The `n` statements whose total time grew most from `before` to `after` (a statement new in
/// `after` grew from nothing; one whose counters went down was reset and is left out).
pub fn top_during(before: &Counters, after: &Counters, n: usize) -> Vec<Statement> {
    let mut grown: Vec<Statement> = after
        .iter()
        .filter_map(|(key, (query, calls, ms, rows))| {
            let (c0, ms0, r0) = before
                .get(key)
                .map_or((0, 0.0, 0), |(_, c, m, r)| (*c, *m, *r));
            (*calls > c0 && *ms >= ms0).then(|| Statement {
                query: query.clone(),
                calls: calls - c0,
                total_ms: ms - ms0,
                rows: rows.saturating_sub(r0),
            })
        })
        .collect();
    grown.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    grown.truncate(n);
    grown
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_top_statements_are_those_that_grew_most() {
        let c = |rows: &[(&str, u64, f64)]| -> super::Counters {
            rows.iter()
                .map(|(k, calls, ms)| (k.to_string(), (format!("q{k}"), *calls, *ms, *calls)))
                .collect()
        };
        let before = c(&[("a", 10, 100.0), ("b", 5, 900.0), ("r", 50, 500.0)]);
        let after = c(&[
            ("a", 30, 400.0),
            ("b", 6, 950.0),
            ("n", 3, 120.0),
            ("r", 2, 1.0),
        ]);
        let top = super::top_during(&before, &after, 2);
        assert_eq!(
            top.iter()
                .map(|s| (s.query.as_str(), s.calls, s.total_ms))
                .collect::<Vec<_>>(),
            vec![("qa", 20, 300.0), ("qn", 3, 120.0)]
        );
    }

    #[test]
    fn only_the_panels_series_are_kept_without_the_project_labels() {
        let text = "# TYPE pg_stat_database_xact_commit_total counter\n\
            pg_stat_database_xact_commit_total{supabase_project_ref=\"abc\",service_type=\"postgresql\"} 42\n\
            connection_stats_connection_count{username=\"postgres\",service_type=\"postgresql\"} 3\n\
            connection_stats_connection_count{username=\"authenticator\",service_type=\"postgresql\"} 4\n\
            go_goroutines 12\n";
        let s = super::parse(text, 1.5).unwrap();
        assert_eq!(s.t, 1.5);
        assert_eq!(s.values["pg_stat_database_xact_commit_total"], 42.0);
        assert_eq!(
            s.values["connection_stats_connection_count{username=\"postgres\"}"],
            3.0
        );
        assert_eq!(s.values.len(), 3);
        assert!(super::parse("go_goroutines 1\n", 0.0).is_err());
    }

    /// The Metrics API as hosted publishes it (the fixture's series and labels are
    /// supabase/supabase-grafana's, values filled in): connections by role name, the primary's
    /// series only, the shared pooler's clients by mode, node_exporter's CPUs, no `NaN`.
    #[test]
    fn hosted_series_read_as_hosted_publishes_them() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/hosted/metrics-api.prom"
        ))
        .unwrap();
        let s = super::parse(&text, 0.0).unwrap();
        let by_role: Vec<(&str, f64)> = s
            .values
            .iter()
            .filter_map(|(k, v)| {
                let role = k
                    .strip_prefix("connection_stats_connection_count{username=\"")?
                    .strip_suffix("\"}")?;
                Some((role, *v))
            })
            .collect();
        // The replica's 9 backends are not the primary's.
        assert_eq!(
            by_role,
            vec![
                ("authenticator", 12.0),
                ("other", 3.0),
                ("supabase_admin", 7.0)
            ]
        );
        assert_eq!(
            fleetbench_metrics::server::total(&s, "connection_stats_connection_count"),
            Some(22.0)
        );
        assert_eq!(fleetbench_metrics::server::cpus(&s), Some(2.0));
        // Busy: every mode but idle and iowait, over both CPUs.
        assert_eq!(
            fleetbench_metrics::server::busy_cpu(&s),
            Some(400.0 + 100.0 + 10.0 + 5.0 + 300.0 + 80.0 + 6.0 + 4.0)
        );
        // The shared pooler (Supavisor, on two nodes) by mode; its repeated label read once.
        assert_eq!(
            s.values["supavisor_connections_active{mode=\"transaction\",user=\"postgres\"}"],
            45.0
        );
        assert_eq!(
            s.values["supavisor_connections_active{mode=\"session\",user=\"postgres\"}"],
            2.0
        );
        // A slot lag of NaN (no slot) is no value; the replica's size is not the primary's.
        assert!(
            !s.values
                .keys()
                .any(|k| k.starts_with("replication_slots_max_lag_bytes"))
        );
        assert_eq!(
            s.values["pg_database_size_bytes{datname=\"postgres\"}"],
            52428800.0
        );
    }
}
