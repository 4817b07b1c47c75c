//! The run, live, as Prometheus remote-write (`[output] prometheus_remote_write`, `--prometheus-
//! remote-write URL`): once a second through the run, then once more at its end with the summary's
//! own figures, so that what a dashboard shows last equals `summary.json`. Every series carries the
//! labels `run_id`, `scenario`, `shard` (the shard's index, `0` for a whole run) and `instance`
//! (this machine's host name), so that the shards of one run write distinct series, which a
//! dashboard sums; per operation (`operation`):
//!
//! - `fleetbench_requests_total` and `fleetbench_errors_total{kind}`: counts so far;
//! - `fleetbench_latency_ms{from="intended"|"send", quantile="0.5"|"0.95"|"0.99"|"1"}`: the
//!   percentiles so far, from the intended start and from the send;
//!
//! and for the run: `fleetbench_active_agents`, `fleetbench_in_flight`, `fleetbench_planned_load`
//! (the level the scenario asks for now: agents, or uploads per second) and
//! `fleetbench_load_phase` (1 while the load runs). The wire format (protobuf, snappy) is
//! `prometheus-reqwest-remote-write`'s; failed pushes are counted, never fatal.
//!
//! Credentials never sit in the URL (the URL is part of the scenario, which the run directory
//! keeps): they come from the environment as [`Auth`], and what is said about the endpoint names
//! its scheme and host only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetbench_fleet::{Clock, Progress};
use fleetbench_metrics::Summary;
use fleetbench_metrics::summary::OperationSummary;
use fleetbench_scenario::Plan;
use prometheus_reqwest_remote_write::{LABEL_NAME, Label, Sample, TimeSeries, WriteRequest};
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use tokio::sync::watch;

/// Every series name the export writes (the Grafana dashboard's queries must name these).
pub const NAMES: [&str; 7] = [
    "fleetbench_requests_total",
    "fleetbench_errors_total",
    "fleetbench_latency_ms",
    "fleetbench_active_agents",
    "fleetbench_in_flight",
    "fleetbench_planned_load",
    "fleetbench_load_phase",
];

/// How the export authenticates to its endpoint: the headers every push carries, built once from
/// HTTP basic credentials, a bearer token and extra headers (the environment's
/// `FLEETBENCH_RW_USERNAME`/`FLEETBENCH_RW_PASSWORD`, `FLEETBENCH_RW_BEARER_TOKEN` and
/// `FLEETBENCH_RW_HTTP_HEADERS`, as k6's `K6_PROMETHEUS_RW_*`). Every value is marked sensitive;
/// `Debug` shows the header names only.
#[derive(Clone, Default)]
pub struct Auth {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Auth").field("headers", &names).finish()
    }
}

impl Auth {
    /// The headers for `basic` (user, password) or a `bearer` token, and `extra`
    /// (`"Name:value,Name:value"`, k6's `K6_PROMETHEUS_RW_HTTP_HEADERS` form). A value a header
    /// cannot carry is an error that names what it is, never the value.
    pub fn new(
        basic: Option<(&str, &str)>,
        bearer: Option<&str>,
        extra: Option<&str>,
    ) -> Result<Auth, String> {
        let mut headers = Vec::new();
        if let Some((user, password)) = basic {
            use base64::Engine as _;
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.push((
                AUTHORIZATION,
                sensitive(&format!("Basic {pair}"), "the credentials")?,
            ));
        }
        if let Some(token) = bearer {
            headers.push((
                AUTHORIZATION,
                sensitive(&format!("Bearer {token}"), "the bearer token")?,
            ));
        }
        let pairs = extra
            .into_iter()
            .flat_map(|t| t.split(','))
            .filter(|p| !p.trim().is_empty());
        for (i, pair) in pairs.enumerate() {
            let (name, value) = pair
                .split_once(':')
                .ok_or_else(|| format!("header {} has no `:` between name and value", i + 1))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("header {} has no valid name", i + 1))?;
            let value = sensitive(value.trim(), &format!("{name}'s value"))?;
            headers.push((name, value));
        }
        Ok(Auth { headers })
    }
}

/// `value` as a header value marked sensitive; the error names `what`, not the value.
fn sensitive(value: &str, what: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        format!("{what} cannot be a header value (a newline or a control character?)")
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Where the series go, and the labels every one carries.
pub struct RemoteWrite {
    http: reqwest::Client,
    url: String,
    auth: Auth,
    run_id: String,
    scenario: String,
    shard: String,
    instance: String,
}

/// What the export did: pushes accepted and refused, and why the last was.
#[derive(Debug, Default)]
pub struct Pushed {
    pub accepted: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

/// One series' name and labels (beyond `run_id` and `scenario`), and its value.
type Point = (&'static str, Vec<(&'static str, String)>, f64);

impl RemoteWrite {
    /// Series for `run_id`'s scenario `scenario`, written by shard `shard` of the run.
    pub fn new(
        url: &str,
        auth: Auth,
        run_id: &str,
        scenario: &str,
        shard: u32,
    ) -> Result<RemoteWrite, String> {
        let roots = fleetbench_tls::reqwest_roots().map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RemoteWrite {
            http,
            url: url.to_string(),
            auth,
            run_id: run_id.to_string(),
            scenario: scenario.to_string(),
            shard: shard.to_string(),
            instance: sysinfo::System::host_name().unwrap_or_else(|| "unknown".into()),
        })
    }

    /// Sends `points`, stamped `at`.
    async fn push(&self, points: Vec<Point>, at: SystemTime, pushed: &mut Pushed) {
        let ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let timeseries = points
            .into_iter()
            .map(|(name, labels, value)| self.series(name, labels, value, ms))
            .collect();
        let request = WriteRequest { timeseries }.sorted();
        let sent = match request.build_http_request(self.http.clone(), &self.url, "fleetbench") {
            Ok(mut r) => {
                for (name, value) in &self.auth.headers {
                    r.headers_mut().insert(name.clone(), value.clone());
                }
                self.http
                    .execute(r)
                    .await
                    .map_err(|e| e.without_url().to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match sent {
            Ok(r) if r.status().is_success() => pushed.accepted += 1,
            Ok(r) => {
                pushed.failed += 1;
                pushed.last_error = Some(format!(
                    "{} answered {}",
                    crate::redact(&self.url),
                    r.status()
                ));
            }
            Err(e) => {
                pushed.failed += 1;
                pushed.last_error = Some(e);
            }
        }
    }

    fn series(
        &self,
        name: &str,
        labels: Vec<(&'static str, String)>,
        value: f64,
        ms: i64,
    ) -> TimeSeries {
        let mut all = vec![
            Label {
                name: LABEL_NAME.into(),
                value: name.into(),
            },
            Label {
                name: "run_id".into(),
                value: self.run_id.clone(),
            },
            Label {
                name: "scenario".into(),
                value: self.scenario.clone(),
            },
            Label {
                name: "shard".into(),
                value: self.shard.clone(),
            },
            Label {
                name: "instance".into(),
                value: self.instance.clone(),
            },
        ];
        all.extend(labels.into_iter().map(|(n, v)| Label {
            name: n.into(),
            value: v,
        }));
        TimeSeries {
            labels: all,
            samples: vec![Sample {
                value,
                timestamp: ms,
            }],
        }
    }
}

/// The run's own series now.
fn gauges(
    progress: &Progress,
    plan: &Plan,
    clock: Clock,
    load_start_us: Option<u64>,
) -> Vec<Point> {
    use std::sync::atomic::Ordering::Relaxed;
    let planned = load_start_us.map_or(0.0, |start| {
        plan.active_at(Duration::from_micros(clock.now_us().saturating_sub(start)))
    });
    vec![
        (
            "fleetbench_active_agents",
            vec![],
            progress.active.load(Relaxed) as f64,
        ),
        (
            "fleetbench_in_flight",
            vec![],
            progress.in_flight.load(Relaxed) as f64,
        ),
        ("fleetbench_planned_load", vec![], planned),
        (
            "fleetbench_load_phase",
            vec![],
            (progress.load_started.load(Relaxed) == 1) as u8 as f64,
        ),
    ]
}

/// Pushes once a second until `stop`, then the final figures: `summary`'s, when `final_summary`
/// resolves (the run's end).
pub async fn export(
    rw: RemoteWrite,
    progress: Arc<Progress>,
    plan: Arc<Plan>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
    final_summary: tokio::sync::oneshot::Receiver<Summary>,
) -> Pushed {
    let mut pushed = Pushed::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut load_start_us = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if load_start_us.is_none()
            && progress
                .load_started
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        {
            load_start_us = Some(clock.now_us());
        }
        let mut points = gauges(&progress, &plan, clock, load_start_us);
        if let Some(live) = progress.live.get() {
            let totals = live.totals();
            let ops = totals.iter().map(|(name, c)| {
                let figures = fleetbench_metrics::summary::operation(c, 0.0);
                (name.clone(), figures)
            });
            points.extend(operations(ops));
        }
        rw.push(points, SystemTime::now(), &mut pushed).await;
    }
    if let Ok(summary) = final_summary.await {
        let mut points = gauges(&progress, &plan, clock, None);
        points.extend(operations(summary.operations.into_iter()));
        rw.push(points, SystemTime::now(), &mut pushed).await;
    }
    pushed
}

/// Each operation's series: counts, errors by kind and percentiles, from its figures as
/// `summary.json` has them (live: from the aggregate so far, computed the same way).
fn operations(ops: impl Iterator<Item = (String, OperationSummary)>) -> Vec<Point> {
    let mut points = Vec::new();
    for (name, op) in ops {
        let op_label = || vec![("operation", name.clone())];
        points.push(("fleetbench_requests_total", op_label(), op.count as f64));
        for (kind, n) in &op.errors_by_kind {
            let mut l = op_label();
            l.push(("kind", kind.clone()));
            points.push(("fleetbench_errors_total", l, *n as f64));
        }
        if op.count == 0 {
            continue;
        }
        for (from, p) in [("intended", &op.latency_ms), ("send", &op.service_ms)] {
            for (q, v) in [
                ("0.5", p.p50),
                ("0.95", p.p95),
                ("0.99", p.p99),
                ("1", p.max),
            ] {
                let mut l = op_label();
                l.push(("from", from.to_string()));
                l.push(("quantile", q.to_string()));
                points.push(("fleetbench_latency_ms", l, v));
            }
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::Auth;

    /// A credential a header cannot carry is refused, naming what it is and not its value; what
    /// is built is shown by header name only.
    #[test]
    fn credentials_become_sensitive_headers_or_a_named_error() {
        let e = Auth::new(None, Some("tok\nen-secret"), None).unwrap_err();
        assert!(
            e.contains("the bearer token") && !e.contains("secret"),
            "{e}"
        );
        let e = Auth::new(None, None, Some("X-Scope-OrgID:team,broken")).unwrap_err();
        assert!(e.contains("header 2"), "{e}");
        let auth = Auth::new(Some(("u", "hunter2")), None, Some("X-Scope-OrgID: team")).unwrap();
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("authorization") && shown.contains("x-scope-orgid"),
            "{shown}"
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("team"),
            "{shown}"
        );
        assert!(auth.headers.iter().all(|(_, v)| v.is_sensitive()));
    }
}
