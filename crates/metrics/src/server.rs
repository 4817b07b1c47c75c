//! `server.json`: what the target's Metrics API said through the run (Supabase's Prometheus-format
//! `/customer/v1/privileged/metrics`), scraped every few seconds on the run's clock, and the panels
//! the report draws from it beside the client's latency: database connections (in all and by
//! role) against their limit, transactions per second, cache hit ratio, CPU, memory, disk and WAL, Realtime's
//! replication slot lag, pooler clients against their limit.
//!
//! Only the series the panels read are kept (hosted serves hundreds), keyed `name{label="v",…}`
//! with the labels sorted and the project's own (`supabase_project_ref`, `service_type`) left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The series names the panels read.
pub const SERIES: [&str; 18] = [
    "connection_stats_connection_count",
    "max_connections_connection_count",
    "pg_stat_database_xact_commit_total",
    "pg_stat_database_xact_rollback_total",
    "pg_stat_database_blks_hit_total",
    "pg_stat_database_blks_read_total",
    "node_cpu_seconds_total",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "pg_wal_size_mb",
    "replication_slots_max_lag_bytes",
    "pgbouncer_pools_client_active_connections",
    "pgbouncer_pools_client_waiting_connections",
    "pgbouncer_config_max_client_connections",
    "pg_database_size_bytes",
    "supavisor_connections_active",
];

/// One scrape: seconds on the run's clock, and series → value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Scrape {
    pub t: f64,
    pub values: BTreeMap<String, f64>,
}

/// The run's scrapes of the Metrics API.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerSeries {
    /// Where from: scheme, host and port (no credentials).
    pub source: String,
    pub interval_s: f64,
    pub scrapes: Vec<Scrape>,
    /// Scrapes that failed (timeouts, 5xx) after the first succeeded.
    pub failed: u64,
    /// The shared pooler's client limit, from the project's compute size when it is known (the
    /// Metrics API does not give Supavisor's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler_max_clients: Option<f64>,
    /// The statements that took the most database time during the run (`pg_stat_statements`
    /// before and after it, through the session URL), most first; empty without one.
    #[serde(default)]
    pub statements: Vec<Statement>,
}

/// One statement's share of the run, from `pg_stat_statements`' counters' growth over it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Statement {
    /// The normalised text (`$1` for constants), cut to 300 characters.
    pub query: String,
    pub calls: u64,
    pub total_ms: f64,
    pub rows: u64,
}

/// One panel: a title, its unit, named lines of (seconds, value), and a limit line if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: &'static str,
    pub unit: &'static str,
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
    pub limit: Option<(String, Vec<(f64, f64)>)>,
}

/// The sum of every series of metric `name` (whatever its labels) in `s`, if it has any.
pub fn total(s: &Scrape, name: &str) -> Option<f64> {
    let mut found = None;
    for (key, v) in &s.values {
        let metric = key.split('{').next().unwrap_or(key);
        if metric == name {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// CPU seconds spent busy (every `node_cpu_seconds_total` mode but `idle` and `iowait`, which is
/// waiting), over all CPUs.
pub fn busy_cpu(s: &Scrape) -> Option<f64> {
    let mut found = None;
    for (key, v) in &s.values {
        if key.split('{').next() == Some("node_cpu_seconds_total")
            && !key.contains("mode=\"idle\"")
            && !key.contains("mode=\"iowait\"")
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The host's CPUs as node_exporter counts them (one `mode="idle"` series per CPU), if it does.
pub fn cpus(s: &Scrape) -> Option<f64> {
    let n = s
        .values
        .keys()
        .filter(|k| k.starts_with("node_cpu_seconds_total{") && k.contains("mode=\"idle\""))
        .count();
    (n > 0).then_some(n as f64)
}

/// The value of label `name` in a series key (`connection_stats_connection_count{username="x"}`).
pub fn label<'a>(key: &'a str, name: &str) -> Option<&'a str> {
    let labels = key.split_once('{')?.1.strip_suffix('}')?;
    let wanted = format!("{name}=\"");
    let start = labels
        .match_indices(&wanted)
        .map(|(i, _)| i)
        .find(|i| *i == 0 || labels.as_bytes()[i - 1] == b',')?;
    let rest = &labels[start + wanted.len()..];
    Some(&rest[..rest.find('"')?])
}

/// The sum of the series of `name` whose labels include `label` (`mode="transaction"`).
pub fn total_where(s: &Scrape, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for (key, v) in &s.values {
        if key.split('{').next() == Some(name) && key.contains(label) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

impl ServerSeries {
    /// Gauge `f` at each scrape where it has a value.
    fn gauge(&self, f: impl Fn(&Scrape) -> Option<f64>) -> Vec<(f64, f64)> {
        self.scrapes
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t, v)))
            .collect()
    }

    /// The per-second rate of counter `f` between consecutive scrapes (at the later one's time).
    fn rate(&self, f: impl Fn(&Scrape) -> Option<f64>) -> Vec<(f64, f64)> {
        self.scrapes
            .windows(2)
            .filter_map(|w| {
                let (a, b) = (f(&w[0])?, f(&w[1])?);
                let dt = w[1].t - w[0].t;
                // A counter that went down was reset: no rate across it.
                (dt > 0.0 && b >= a).then(|| (w[1].t, (b - a) / dt))
            })
            .collect()
    }

    /// Open connections per role (the Metrics API counts them by `username`), one
    /// line each, when there are several roles.
    fn by_role(&self) -> Vec<(String, Vec<(f64, f64)>)> {
        let mut keys: Vec<&String> = self
            .scrapes
            .iter()
            .flat_map(|s| s.values.keys())
            .filter(|k| k.starts_with("connection_stats_connection_count{"))
            .collect();
        keys.sort();
        keys.dedup();
        if keys.len() < 2 {
            return Vec::new();
        }
        keys.into_iter()
            .map(|k| {
                let role = label(k, "username").unwrap_or(k.as_str()).to_string();
                (role, self.gauge(|s| s.values.get(k).copied()))
            })
            .collect()
    }

    /// The share of block reads served from the cache between consecutive scrapes, in %.
    fn cache_hits(&self) -> Vec<(f64, f64)> {
        let hit = self.rate(|s| total(s, "pg_stat_database_blks_hit_total"));
        let read = self.rate(|s| total(s, "pg_stat_database_blks_read_total"));
        hit.iter()
            .zip(&read)
            .filter(|((_, h), (_, r))| h + r > 0.0)
            .map(|((t, h), (_, r))| (*t, 100.0 * h / (h + r)))
            .collect()
    }

    /// The panels the report draws; those with no data are left out.
    pub fn panels(&self) -> Vec<Panel> {
        let mib = |name: &'static str| move |s: &Scrape| total(s, name).map(|v| v / 1048576.0);
        let line = |name: &str, points: Vec<(f64, f64)>| (name.to_string(), points);
        // The shared pooler's clients by mode: Supavisor's series on hosted; a saved run of the
        // double before it served them has PgBouncer's, by `mode`.
        let pooler = |mode: &'static str| {
            move |s: &Scrape| {
                let label = format!("mode=\"{mode}\"");
                total_where(s, "supavisor_connections_active", &label).or_else(|| {
                    Some(
                        total_where(s, "pgbouncer_pools_client_active_connections", &label)?
                            + total_where(s, "pgbouncer_pools_client_waiting_connections", &label)
                                .unwrap_or(0.0),
                    )
                })
            }
        };
        let panels = vec![
            Panel {
                title: "Database connections",
                unit: "connections",
                lines: std::iter::once(line(
                    "open",
                    self.gauge(|s| total(s, "connection_stats_connection_count")),
                ))
                .chain(self.by_role())
                .collect(),
                limit: Some(line(
                    "max_connections",
                    self.gauge(|s| total(s, "max_connections_connection_count")),
                )),
            },
            Panel {
                title: "Transactions",
                unit: "per second",
                lines: vec![line(
                    "commits + rollbacks",
                    self.rate(|s| {
                        Some(
                            total(s, "pg_stat_database_xact_commit_total")?
                                + total(s, "pg_stat_database_xact_rollback_total").unwrap_or(0.0),
                        )
                    }),
                )],
                limit: None,
            },
            Panel {
                title: "Cache hit ratio",
                unit: "%",
                lines: vec![line("blocks from the cache", self.cache_hits())],
                limit: None,
            },
            Panel {
                title: "CPU",
                unit: "cores busy",
                lines: vec![line("database host", self.rate(busy_cpu))],
                limit: Some(line("CPUs", self.gauge(cpus))),
            },
            Panel {
                title: "Memory",
                unit: "MiB",
                lines: vec![line(
                    "used",
                    self.gauge(|s| {
                        Some(
                            (total(s, "node_memory_MemTotal_bytes")?
                                - total(s, "node_memory_MemAvailable_bytes")?)
                                / 1048576.0,
                        )
                    }),
                )],
                limit: Some(line("total", self.gauge(mib("node_memory_MemTotal_bytes")))),
            },
            Panel {
                title: "Disk and WAL",
                unit: "MiB/s (WAL: MiB)",
                lines: vec![
                    line("read", self.rate(mib("node_disk_read_bytes_total"))),
                    line("written", self.rate(mib("node_disk_written_bytes_total"))),
                    line("WAL size", self.gauge(|s| total(s, "pg_wal_size_mb"))),
                ],
                limit: None,
            },
            Panel {
                title: "Replication slot lag (Realtime)",
                unit: "MiB",
                lines: vec![line(
                    "max lag",
                    self.gauge(mib("replication_slots_max_lag_bytes")),
                )],
                limit: None,
            },
            Panel {
                title: "Pooler clients",
                unit: "connections",
                lines: vec![
                    line("transaction mode", self.gauge(pooler("transaction"))),
                    line("session mode", self.gauge(pooler("session"))),
                ],
                limit: Some(line(
                    "max client connections",
                    match self.pooler_max_clients {
                        // Supavisor's limit is the compute size's; the Metrics API has none.
                        Some(max) => self.gauge(|_| Some(max)),
                        None => self.gauge(|s| {
                            total_where(
                                s,
                                "pgbouncer_config_max_client_connections",
                                "mode=\"transaction\"",
                            )
                        }),
                    },
                )),
            },
        ];
        panels
            .into_iter()
            .map(|mut p| {
                p.lines.retain(|(_, pts)| !pts.is_empty());
                p.limit = p.limit.filter(|(_, pts)| !pts.is_empty());
                p
            })
            .filter(|p| !p.lines.is_empty())
            .collect()
    }
}

impl ServerSeries {
    /// One figure per line of each panel over the whole run: its mean and its peak, named
    /// `<panel>: <line> mean|max` with the panel's unit (what `compare` sets side by side).
    pub fn figures(&self) -> Vec<(String, String, f64)> {
        let mut out = Vec::new();
        for p in self.panels() {
            for (line, points) in &p.lines {
                let n = points.len() as f64;
                let mean = points.iter().map(|x| x.1).sum::<f64>() / n;
                let max = points.iter().map(|x| x.1).fold(f64::MIN, f64::max);
                out.push((
                    format!("{}: {line} mean", p.title),
                    p.unit.to_string(),
                    mean,
                ));
                out.push((format!("{}: {line} max", p.title), p.unit.to_string(), max));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(t: f64, pairs: &[(&str, f64)]) -> Scrape {
        Scrape {
            t,
            values: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn rates_ratios_and_gauges_from_scrapes() {
        let s = ServerSeries {
            source: "https://x".into(),
            interval_s: 5.0,
            scrapes: vec![
                scrape(
                    0.0,
                    &[
                        ("pg_stat_database_xact_commit_total", 100.0),
                        ("pg_stat_database_xact_rollback_total", 0.0),
                        ("pg_stat_database_blks_hit_total", 900.0),
                        ("pg_stat_database_blks_read_total", 100.0),
                        ("connection_stats_connection_count{username=\"a\"}", 3.0),
                        ("connection_stats_connection_count{username=\"b\"}", 4.0),
                    ],
                ),
                scrape(
                    5.0,
                    &[
                        ("pg_stat_database_xact_commit_total", 600.0),
                        ("pg_stat_database_xact_rollback_total", 50.0),
                        ("pg_stat_database_blks_hit_total", 1_890.0),
                        ("pg_stat_database_blks_read_total", 110.0),
                        ("connection_stats_connection_count{username=\"a\"}", 5.0),
                    ],
                ),
            ],
            failed: 0,
            statements: Vec::new(),
            pooler_max_clients: None,
        };
        let panels = s.panels();
        let get = |title: &str| panels.iter().find(|p| p.title == title).unwrap();
        assert_eq!(get("Transactions").lines[0].1, vec![(5.0, 110.0)]);
        assert_eq!(get("Cache hit ratio").lines[0].1, vec![(5.0, 99.0)]);
        assert_eq!(
            get("Database connections").lines[0].1,
            vec![(0.0, 7.0), (5.0, 5.0)]
        );
        // And by role: b's line ends where its series does.
        let roles: Vec<(&str, usize)> = get("Database connections").lines[1..]
            .iter()
            .map(|(n, pts)| (n.as_str(), pts.len()))
            .collect();
        assert_eq!(roles, vec![("a", 2), ("b", 1)]);
        // No CPU series: no CPU panel.
        assert!(panels.iter().all(|p| p.title != "CPU"));
        // node_exporter's idle time is not load: two CPUs, 3 busy seconds over 5 s.
        let cpu = |t: f64, user: f64, idle: f64| {
            scrape(
                t,
                &[
                    ("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}", user),
                    ("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}", idle),
                    ("node_cpu_seconds_total{cpu=\"1\",mode=\"idle\"}", idle),
                ],
            )
        };
        let host = ServerSeries {
            scrapes: vec![cpu(0.0, 10.0, 100.0), cpu(5.0, 13.0, 103.5)],
            ..Default::default()
        };
        let panels = host.panels();
        let cpu_panel = panels.iter().find(|p| p.title == "CPU").unwrap();
        assert_eq!(cpu_panel.lines[0].1, vec![(5.0, 0.6)]);
        assert_eq!(cpus(&host.scrapes[0]), Some(2.0));
    }
}
