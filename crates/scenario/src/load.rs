//! Reading a scenario: TOML → `--set` overrides → typed model → semantic checks → [`Plan`]. Every
//! error carries `file:line:column`; semantic checks all run, so one pass lists every problem.
//! With overrides the file is re-serialised first, and locations then refer to the resolved
//! scenario (the run directory's `scenario.toml`), which the file name says. The checks of each
//! section are in `checks`, the `--set` overrides in `overrides`.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::model::{self, Scenario};
use crate::plan::{Plan, ServerMetrics};

mod checks;
mod overrides;
use checks::{batch, closed_loop, replay, stages, thresholds};
use overrides::{RESOLVED, apply_overrides, key_path};

/// The longest duration a scenario may give (a stage, an interval, a timeout): beyond it a value is
/// a typo, and stages that add up stay far from `Duration`'s limit.
pub const MAX_DURATION: Duration = Duration::from_secs(31 * 24 * 3600);
/// The narrowest time window (`output.window`): each window holds two histograms per operation.
pub const MIN_WINDOW: Duration = Duration::from_millis(10);

/// One problem and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ScenarioError(pub Vec<Located>);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

struct Errors<'a> {
    file: &'a str,
    text: &'a str,
    list: Vec<Located>,
}

impl Errors<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let mut message = message.into();
        // Lines of the resolved text are not the user's: name the key instead.
        if self.file.ends_with(RESOLVED)
            && !span.is_empty()
            && let Some(key) = key_path(self.text, span.start)
        {
            message = format!("{key}: {message}");
        }
        self.list.push(Located {
            file: self.file.to_string(),
            line,
            column,
            message,
        });
    }

    fn duration(&mut self, s: &Spanned<String>, what: &str) -> Duration {
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) if d > MAX_DURATION => {
                self.at(s.span(), format!("{what}: {:?} is longer than 31 days, the longest duration a scenario may give", s.get_ref()));
                Duration::ZERO
            }
            Ok(d) => d,
            Err(e) => {
                self.at(s.span(), format!("{what}: {:?} is not a duration ({e}); write e.g. \"500ms\", \"10s\", \"2m\"", s.get_ref()));
                Duration::ZERO
            }
        }
    }

    /// `"200/s"`, `"6000/m"`, `"10/h"` (or a bare number, per second) → uploads per second.
    fn rate(&mut self, s: &Spanned<String>) -> f64 {
        let text = s.get_ref().trim();
        let (n, per) = text.split_once('/').unwrap_or((text, "s"));
        let unit = match per.trim() {
            "s" | "1s" => Some(1.0),
            "m" | "1m" | "min" => Some(60.0),
            "h" | "1h" => Some(3600.0),
            _ => None,
        };
        match (n.trim().parse::<f64>(), unit) {
            (Ok(v), Some(u)) if v.is_finite() && v >= 0.0 => v / u,
            _ => {
                self.at(s.span(), format!("{text:?} is not a rate: write uploads per second, minute or hour, like \"200/s\" or \"600/m\""));
                0.0
            }
        }
    }

    fn mix(
        &mut self,
        mix: &std::collections::BTreeMap<Spanned<String>, f64>,
        allowed: &[&str],
        what: &str,
        shares: bool,
    ) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (k, v) in mix {
            if !allowed.contains(&k.get_ref().as_str()) {
                self.at(
                    k.span(),
                    format!(
                        "unknown {what} {:?}: expected one of {allowed:?}",
                        k.get_ref()
                    ),
                );
            } else if !(v.is_finite() && *v >= 0.0) || (!shares && *v > 1.0) {
                self.at(
                    k.span(),
                    format!(
                        "{what} {:?}: {v} is not a share between 0 and {}",
                        k.get_ref(),
                        if shares { "any positive weight" } else { "1" }
                    ),
                );
            } else {
                out.push((k.get_ref().clone(), *v));
            }
        }
        if shares {
            let total: f64 = out.iter().map(|(_, v)| v).sum();
            if total > 0.0 {
                out.iter_mut().for_each(|(_, v)| *v /= total);
            } else if !mix.is_empty() {
                let span = mix.keys().next().map(|k| k.span()).unwrap_or(0..0);
                self.at(span, format!("the {what} weights add up to 0"));
            }
        }
        out
    }
}

/// Loads and validates a scenario file with `overrides` applied; returns the model, its plan and
/// the resolved TOML.
pub fn load_file(
    path: &Path,
    overrides: &[String],
) -> Result<(Scenario, Plan, String), ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScenarioError(vec![Located {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read the scenario: {e}"),
        }])
    })?;
    load_str(&text, &path.display().to_string(), overrides)
}

pub fn load_str(
    text: &str,
    file: &str,
    overrides: &[String],
) -> Result<(Scenario, Plan, String), ScenarioError> {
    let located = |span: Option<Range<usize>>, text: &str, file: &str, message: String| {
        let mut e = Errors {
            file,
            text,
            list: Vec::new(),
        };
        e.at(span.unwrap_or(0..0), message);
        e.list
    };
    let (text, file) = if overrides.is_empty() {
        (text.to_string(), file.to_string())
    } else {
        let mut doc: toml::Table = toml::from_str(text)
            .map_err(|e| ScenarioError(located(e.span(), text, file, e.message().to_string())))?;
        apply_overrides(&mut doc, overrides).map_err(ScenarioError)?;
        let resolved = toml::to_string(&doc).map_err(|e| {
            ScenarioError(located(
                None,
                text,
                file,
                format!("re-serialising with overrides: {e}"),
            ))
        })?;
        (resolved, format!("{file}{RESOLVED}"))
    };
    let scenario: Scenario = toml::from_str(&text).map_err(|e| {
        ScenarioError(located(
            e.span(),
            &text,
            &file,
            e.message().trim().to_string(),
        ))
    })?;
    let plan = validate(&scenario, &text, &file)?;
    Ok((scenario, plan, text))
}

fn validate(s: &Scenario, text: &str, file: &str) -> Result<Plan, ScenarioError> {
    let mut e = Errors {
        file,
        text,
        list: Vec::new(),
    };
    if s.name.trim().is_empty() {
        e.at(0..0, "name must not be empty");
    }
    let agents = *s.fleet.agents.get_ref();
    let agents_max = agents;
    if agents == 0 {
        e.at(s.fleet.agents.span(), "fleet.agents must be at least 1");
    }
    let mut custom_profiles = Vec::new();
    for f in &s.fleet.profile_files {
        match crate::profile::DeviceProfile::load(std::path::Path::new(f.get_ref())) {
            Ok(p) => custom_profiles.push(p),
            Err(err) => e.at(f.span(), format!("fleet.profile_files: {err}")),
        }
    }
    let known: Vec<&str> = model::PROFILES
        .iter()
        .copied()
        .chain(custom_profiles.iter().map(|p| p.name.as_str()))
        .collect();
    let profiles = e.mix(&s.fleet.profiles, &known, "device profile", true);
    if s.load.stages.is_empty() {
        e.at(
            0..0,
            "load.stages is empty: add at least one [[load.stages]] with duration and agents",
        );
    }
    let model = s.load.model;
    let stages = stages(&mut e, s, agents_max);
    let (think_time, iterations) = closed_loop(&mut e, s);
    let request_timeout = e.duration(&s.workload.request_timeout, "workload.request_timeout");
    if request_timeout.is_zero() {
        e.at(
            s.workload.request_timeout.span(),
            "workload.request_timeout must be longer than zero",
        );
    }
    let connections = *s.fleet.connections.get_ref();
    if connections == 0 {
        e.at(
            s.fleet.connections.span(),
            "fleet.connections must be at least 1",
        );
    }
    let grace = e.duration(&s.load.grace, "load.grace");
    let w = &s.workload;
    let (sample, upload, batch_rows) = batch(&mut e, w);
    let ingest = e.mix(&w.ingest, model::INGEST_PATHS, "ingestion path", true);
    let anomalies = e.mix(&w.anomalies, model::ANOMALIES, "anomaly", false);
    let refresh_margin = e.duration(&w.refresh_margin, "workload.refresh_margin");
    let thresholds = thresholds(&mut e, s);
    let probes = probes(&mut e, &s.probes);
    let replay = replay(&mut e, w);
    let delivery = delivery(&mut e, &s.delivery);
    if let Some(v) = &s.target.token_rate_limit
        && *v.get_ref() == 0
    {
        e.at(
            v.span(),
            "target.token_rate_limit is /token calls per 5 minutes per address: at least 1",
        );
    }
    let window = match &s.output.window {
        Some(w) => {
            let d = e.duration(w, "output.window");
            if d < MIN_WINDOW && !d.is_zero() {
                e.at(
                    w.span(),
                    format!(
                        "output.window: {:?} is under 10ms, the narrowest window fleetbench keeps",
                        w.get_ref()
                    ),
                );
            }
            d
        }
        None => Duration::from_secs(1),
    };
    let server_metrics = match &s.output.server_metrics {
        Some(v) if v.get_ref() == "off" => ServerMetrics::Off,
        Some(v) => match e.duration(v, "output.server_metrics") {
            d if d.is_zero() => ServerMetrics::Off,
            d => ServerMetrics::Every(d),
        },
        None => ServerMetrics::Default,
    };
    let prometheus_remote_write = s
        .output
        .prometheus_remote_write
        .as_ref()
        .and_then(|u| remote_write_url(&mut e, u));
    if !e.list.is_empty() {
        return Err(ScenarioError(e.list));
    }
    Ok(Plan {
        name: s.name.clone(),
        agents,
        seed: s.fleet.seed,
        provision_concurrency: s.fleet.provision_concurrency.max(1),
        connections,
        model,
        profiles,
        stages,
        grace,
        sample_interval: sample,
        upload_interval: upload,
        batch_rows,
        ingest,
        anomalies,
        refresh_margin,
        think_time,
        iterations,
        request_timeout,
        max_backlog_rows: w.max_backlog_rows,
        thresholds,
        cleanup: s.output.cleanup,
        token_rate_limit: s.target.token_rate_limit.as_ref().map(|v| *v.get_ref()),
        delivery,
        window,
        server_metrics,
        prometheus_remote_write,
        probes,
        custom_profiles,
        replay,
        collectors: w.collectors,
        shard: (0, 1),
        allow_hosts: s.target.allow_hosts.clone(),
    })
}

/// `[delivery]`: both shares between 0 and 1.
fn delivery(e: &mut Errors, d: &model::Delivery) -> crate::plan::DeliveryPlan {
    for (v, name) in [
        (&d.agents, "delivery.agents"),
        (&d.dropped, "delivery.dropped"),
    ] {
        if !(0.0..=1.0).contains(v.get_ref()) {
            e.at(
                v.span(),
                format!("{name} is a share of the plan, from 0 to 1 (0.9 = 90 %)"),
            );
        }
    }
    crate::plan::DeliveryPlan {
        agents: *d.agents.get_ref(),
        dropped: *d.dropped.get_ref(),
    }
}

/// Where `[probes.NAME]` (or the first `probes.NAME.` key) is written, to point errors at.
fn section(text: &str, name: &str) -> Range<usize> {
    let at = text
        .find(&format!("[probes.{name}]"))
        .or_else(|| text.find(&format!("probes.{name}")))
        .or_else(|| text.find(&format!("{name} =")))
        .unwrap_or(0);
    at..at
}

fn probes(e: &mut Errors, p: &crate::probes::Probes) -> crate::probes::ProbesPlan {
    use crate::probes::*;
    fn at_least(e: &mut Errors, name: &str, key: &str, v: u32, min: u32) {
        if v < min {
            e.at(
                section(e.text, name),
                format!("probes.{name}.{key} must be at least {min}"),
            );
        }
    }
    let text = e.text;
    if let Some(r) = &p.realtime {
        at_least(e, "realtime", "subscribers", r.subscribers, 1);
        at_least(e, "realtime", "alerts", r.alerts, 1);
    }
    if let Some(r) = &p.rag {
        at_least(e, "rag", "users", r.users, 1);
        at_least(e, "rag", "clusters", r.clusters, 1);
        at_least(e, "rag", "k", r.k, 1);
        at_least(e, "rag", "memories", r.memories, r.k.max(r.clusters));
        at_least(e, "rag", "queries", r.queries, 1);
        if r.k > 200 {
            e.at(section(text, "rag"), "probes.rag.k must be at most 200 (match_memories returns at most 200 rows, as Supabase advises)");
        }
    }
    if let Some(r) = &p.partitions {
        at_least(e, "partitions", "months", r.months, 1);
        at_least(e, "partitions", "rows_per_month", r.rows_per_month, 1);
        at_least(e, "partitions", "devices", r.devices, 1);
        at_least(e, "partitions", "repeats", r.repeats, 1);
        if r.months > 12 {
            e.at(section(text, "partitions"), "probes.partitions.months must be at most 12: older history would be older than the schema's 13-month retention");
        }
    }
    if let Some(r) = &p.pooler {
        at_least(e, "pooler", "clients", r.clients, 1);
        at_least(e, "pooler", "concurrency", r.concurrency, 1);
    }
    if let Some(r) = &p.webhook {
        at_least(e, "webhook", "alerts", r.alerts, 1);
    }
    let realtime = p.realtime.as_ref().map(|r| RealtimePlan {
        subscribers: r.subscribers,
        alerts: r.alerts,
        interval: e.duration(&r.interval, "probes.realtime.interval"),
        wait: e.duration(&r.wait, "probes.realtime.wait"),
        reconnect: r.reconnect,
    });
    let rag = p.rag.as_ref().map(|r| {
        let rate = e.rate(&r.rate);
        if rate <= 0.0 && r.rate.get_ref().parse::<f64>().is_ok() {
            e.at(r.rate.span(), "probes.rag.rate must be above zero");
        }
        if r.ef_search.iter().any(|&v| v == 0 || v > 1000) {
            e.at(
                section(text, "rag"),
                "probes.rag.ef_search values must be between 1 and 1000 (pgvector's range)",
            );
        }
        RagPlan {
            users: r.users,
            memories: r.memories,
            clusters: r.clusters,
            k: r.k,
            queries: r.queries,
            rate,
            ef_search: r.ef_search.clone(),
        }
    });
    let partitions = p.partitions.as_ref().map(|r| PartitionsPlan {
        months: r.months,
        rows_per_month: r.rows_per_month,
        devices: r.devices,
        repeats: r.repeats,
    });
    let pooler = p.pooler.as_ref().map(|r| PoolerPlan {
        clients: r.clients,
        concurrency: r.concurrency,
        queries: r.queries,
        direct: r.direct,
    });
    let webhook = p.webhook.as_ref().map(|r| WebhookPlan {
        alerts: r.alerts,
        interval: e.duration(&r.interval, "probes.webhook.interval"),
        wait: e.duration(&r.wait, "probes.webhook.wait"),
        receiver: r.receiver.clone(),
        listen: r.listen.as_ref().and_then(|l| match l.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                e.at(
                    l.span(),
                    format!(
                        "probes.webhook.listen: {:?} is not an address like \"127.0.0.1:8787\"",
                        l.get_ref()
                    ),
                );
                None
            }
        }),
    });
    ProbesPlan {
        shard: p.shard.unwrap_or(0),
        realtime,
        rag,
        partitions,
        pooler,
        webhook,
        rls: p.rls.is_some(),
    }
}

/// The plan of one probe run alone (`fleetbench probe NAME --set key=value`): keys are the probe
/// section's (`subscribers=50`) or full paths (`probes.realtime.subscribers=50`).
pub fn probe_plan(
    name: &str,
    overrides: &[String],
) -> Result<crate::probes::ProbesPlan, ScenarioError> {
    let file = format!("probe {name} (--set)");
    if !crate::probes::PROBES.contains(&name) {
        return Err(ScenarioError(vec![Located {
            file,
            line: 0,
            column: 0,
            message: format!(
                "unknown probe {name:?}: expected one of {:?}",
                crate::probes::PROBES
            ),
        }]));
    }
    let overrides: Vec<String> = overrides
        .iter()
        .map(|o| {
            if o.starts_with("probes.") {
                o.clone()
            } else {
                format!("probes.{name}.{o}")
            }
        })
        .collect();
    let mut doc = toml::Table::new();
    let mut section = toml::Table::new();
    section.insert(name.into(), toml::Value::Table(toml::Table::new()));
    doc.insert("probes".into(), toml::Value::Table(section));
    apply_overrides(&mut doc, &overrides).map_err(ScenarioError)?;
    let text = toml::to_string(&doc).expect("a table serialises");
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Only {
        probes: crate::probes::Probes,
    }
    let only: Only = toml::from_str(&text).map_err(|e| {
        let mut errors = Errors {
            file: &file,
            text: &text,
            list: Vec::new(),
        };
        errors.at(e.span().unwrap_or(0..0), e.message().trim().to_string());
        ScenarioError(errors.list)
    })?;
    let mut e = Errors {
        file: &file,
        text: &text,
        list: Vec::new(),
    };
    let plan = probes(&mut e, &only.probes);
    if e.list.is_empty() {
        Ok(plan)
    } else {
        Err(ScenarioError(e.list))
    }
}

/// `[output] prometheus_remote_write`: an http(s) URL without credentials. The scenario is kept in
/// the run directory, a published artifact, so credentials come from the environment
/// (`FLEETBENCH_RW_*`); a URL carrying them is refused without being repeated.
fn remote_write_url(e: &mut Errors<'_>, u: &Spanned<String>) -> Option<String> {
    let what = "output.prometheus_remote_write";
    match url::Url::parse(u.get_ref()) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") || !url.has_host() => {
            e.at(
                u.span(),
                format!("{what}: not an http:// or https:// URL with a host"),
            );
            None
        }
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            e.at(u.span(), format!(
                "{what}: the URL carries credentials, which the run directory would publish: \
                 set FLEETBENCH_RW_USERNAME and FLEETBENCH_RW_PASSWORD (or FLEETBENCH_RW_BEARER_TOKEN) instead"
            ));
            None
        }
        Ok(_) => Some(u.get_ref().clone()),
        Err(err) => {
            e.at(u.span(), format!("{what}: not a URL ({err})"));
            None
        }
    }
}
