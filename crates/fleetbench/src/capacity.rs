//! `fleetbench capacity SCENARIO --slo EXPR`: the scenario held at one level per step (agents, or
//! uploads per second for `arrival_rate`), warm-up excluded, searched for the largest level that
//! holds the SLO (`fleetbench_capacity`), each step run by `fleetbench_runner::step` with what the
//! target's resources did (its Metrics API, else the local stack's processes); which limit binds;
//! and a capacity model per Supabase compute size from the target's own size (`--compute-size` or
//! the Management API), each estimate marked measured or extrapolated. Writes `capacity.json` and `index.html` (drawn by
//! `fleetbench_report`). Here: the arguments checked, the search started, and what is printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleetbench_capacity::{self as capacity, Report, Settings, Step};
use fleetbench_fleet::Target;
use fleetbench_runner::step::{self, offered, plan_at};
use fleetbench_scenario::{LoadModel, Plan};

use crate::target::{self, Endpoints};
use crate::{CommandError, EXIT_REGRESSIONS, EXIT_THRESHOLDS};

pub struct Args {
    pub scenario: PathBuf,
    pub slo: Vec<String>,
    pub start: Option<f64>,
    pub max: Option<f64>,
    pub growth: f64,
    pub resolution: f64,
    pub warmup: Duration,
    pub hold: Duration,
    pub time_limit: Duration,
    pub out: Option<PathBuf>,
    pub overrides: Vec<String>,
    pub compute_size: Option<String>,
}

/// A step's line on stderr: its level, held or broken, offered and done, each SLO expression.
fn print_step(step: &Step, unit: &str) {
    let level = step.level;
    eprintln!(
        "capacity: {level} {}: {} ({:.0} uploads/s offered, {:.0} done; {})",
        unit,
        if step.held() { "held" } else { "BROKE" },
        step.offered_per_s,
        step.achieved_per_s,
        step.slo
            .iter()
            .map(|s| format!(
                "{} {} observed {}",
                s.0,
                s.1,
                s.2.map_or("—".into(), |v| format!("{v:.3}"))
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

pub fn capacity(a: Args) -> Result<(), CommandError> {
    let (_, base, _) = fleetbench_scenario::load_file(&a.scenario, &a.overrides)
        .map_err(|e| CommandError::invalid(anyhow::anyhow!("the scenario is not valid:\n{e}")))?;
    let slo_text = if a.slo.is_empty() {
        base.thresholds
            .iter()
            .map(|t| format!("{}: {}", t.operation, t.expr))
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        a.slo.join("; ")
    };
    let slo = capacity::parse_slo(&slo_text)
        .map_err(|e| CommandError::invalid(anyhow::anyhow!("--slo: {e}")))?;
    let whole = base.model != LoadModel::ArrivalRate;
    let unit = if whole { "agents" } else { "uploads/s" };
    let max = a.max.unwrap_or(match base.model {
        LoadModel::ArrivalRate => base.stages.iter().map(|s| s.1).fold(0.0, f64::max).max(1.0),
        _ => f64::from(base.agents),
    });
    let start = a.start.unwrap_or((max / 16.0).max(1.0));
    if !(start > 0.0 && start <= max && a.growth > 1.0 && a.resolution > 0.0) {
        return Err(CommandError::invalid(anyhow::anyhow!(
            "need 0 < --start ({start}) <= --max ({max}), --growth above 1 and --resolution above 0"
        )));
    }
    let top = plan_at(&base, max, a.warmup, a.hold);
    target::check_caps(
        f64::from(top.agents),
        top.peak_rate(),
        a.time_limit.min(a.warmup + a.hold),
    )?;
    let resolved = target::resolve_allowed(
        base.ingest.iter().any(|(p, s)| p == "pooler" && *s > 0.0),
        &base.allow_hosts,
    )?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| crate::out_dir::default_out(&format!("capacity-{}", base.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    eprintln!(
        "capacity: {} against {} {}: {unit} from {start} up to {max} (x{} per step, then bisection to {:.0} %), {:?} warm-up + {:?} held per step, at most {:?}; SLO {slo_text}",
        base.name,
        resolved.config.kind,
        target::redact(&resolved.config.api_url),
        a.growth,
        a.resolution * 100.0,
        a.warmup,
        a.hold,
        a.time_limit
    );
    let settings = Settings {
        start,
        max,
        growth: a.growth,
        resolution: a.resolution,
        time_limit: a.time_limit,
        whole,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let size = target_size(&a, &resolved, &runtime);
    eprintln!("capacity: the target's compute size: {}", size.said);
    let compute = size
        .name
        .as_deref()
        .and_then(capacity::compute_size)
        .map(|c| (c.cpus, f64::from(c.pooler_clients)));
    let outcome = runtime.block_on(async {
        let stop = crate::signals::stop_on_signal("capacity: stopping after this step")?;
        let target = Arc::new(
            Target::new(
                resolved.config.clone(),
                16,
                base.connections as usize,
                base.request_timeout,
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        );
        let ctx = step::StepContext {
            base: &base,
            target,
            resolved: &resolved,
            slo: &slo,
            watch: tokio::sync::Mutex::new(step::Watch::new(&resolved, compute)),
            warmup: a.warmup,
            hold: a.hold,
            stop,
        };
        let measure = |level: f64| {
            let ctx = &ctx;
            async move {
                let s = step::measure(ctx, level).await;
                print_step(&s, unit);
                s
            }
        };
        anyhow::Ok(capacity::search(&settings, measure).await)
    })?;

    let report = report(&a, &base, &slo, unit, &resolved, &size, outcome);
    std::fs::write(
        out.join("capacity.json"),
        serde_json::to_string_pretty(&report).expect("serialises"),
    )
    .with_context(|| format!("writing {}", out.join("capacity.json").display()))?;
    std::fs::write(
        out.join("index.html"),
        fleetbench_report::capacity_page::html(&report),
    )
    .with_context(|| format!("writing {}", out.join("index.html").display()))?;
    print_outcome(&report, start);
    println!("{}", out.join("index.html").display());
    if report.outcome.knee.is_none() {
        return Err(CommandError {
            code: EXIT_THRESHOLDS,
            error: anyhow::anyhow!("no level held the SLO"),
        });
    }
    Ok(())
}

/// The target's compute size, and how it is known.
struct TargetSize {
    name: Option<String>,
    said: String,
}

/// `--compute-size`, else the Management API's (with `SUPABASE_ACCESS_TOKEN`); never the load
/// generator's machine: unknown, the model per size is left out and the report says why.
fn target_size(a: &Args, resolved: &Endpoints, runtime: &tokio::runtime::Runtime) -> TargetSize {
    if let Some(n) = &a.compute_size {
        return TargetSize {
            name: Some(n.clone()),
            said: format!("{n} (--compute-size)"),
        };
    }
    let unknown = |why: String| TargetSize {
        name: None,
        said: format!("unknown ({why}): no model per compute size is extrapolated"),
    };
    let Some(token) = target::env(&["SUPABASE_ACCESS_TOKEN"]) else {
        return unknown(
            "give --compute-size, or SUPABASE_ACCESS_TOKEN to read it from the Management API"
                .into(),
        );
    };
    let explicit = target::env(&["SUPABASE_PROJECT_REF"]);
    let Some(project_ref) =
        fleetbench_runner::platform::project_ref(&resolved.config.api_url, explicit.as_deref())
    else {
        return unknown("SUPABASE_PROJECT_REF is not set and the URL names no project".into());
    };
    let api = target::env(&["FLEETBENCH_MANAGEMENT_API"])
        .unwrap_or_else(|| fleetbench_runner::platform::HOSTED_API.into());
    match runtime.block_on(fleetbench_runner::platform::compute_size(
        &api,
        &project_ref,
        token.trim(),
    )) {
        Ok(n) => TargetSize {
            said: format!("{n} (Management API)"),
            name: Some(n),
        },
        Err(e) => unknown(format!("the Management API: {e}")),
    }
}

/// `capacity.json`: what the search found, with the knee in uploads/s and agents, a confidence
/// note from the repeated knee, the binding limit and the model per compute size.
fn report(
    a: &Args,
    base: &Plan,
    slo: &[fleetbench_scenario::Threshold],
    unit: &str,
    resolved: &Endpoints,
    size: &TargetSize,
    outcome: capacity::SearchOutcome,
) -> Report {
    let knee_uploads = outcome.knee.map(|k| offered(base, k));
    let knee_agents = outcome.knee.map(|k| match base.model {
        LoadModel::ArrivalRate => k * base.upload_interval.as_secs_f64(),
        _ => k,
    });
    let confidence = match outcome.repeat {
        Some((x, y)) => format!(
            "the knee measured twice: p99 {x:.1} ms then {y:.1} ms ({:+.0} %); bisection resolution {:.0} %",
            (y - x) / x.max(1e-9) * 100.0,
            a.resolution * 100.0
        ),
        None => "the knee was not measured twice (time bound or no knee)".into(),
    };
    Report {
        scenario: base.name.clone(),
        target: target::redact(&resolved.config.api_url),
        unit: unit.into(),
        slo: slo
            .iter()
            .map(|t| format!("{}: {}", t.operation, t.expr))
            .collect(),
        warmup_s: a.warmup.as_secs_f64(),
        hold_s: a.hold.as_secs_f64(),
        binding: capacity::binding(&outcome),
        knee_uploads_per_s: knee_uploads,
        knee_agents,
        confidence,
        target_size: size.said.clone(),
        model: capacity::model(knee_agents, base, size.name.as_deref()),
        outcome,
    }
}

/// The search's end on stderr: the sustainable level and what broke, or that nothing held.
fn print_outcome(report: &Report, start: f64) {
    let unit = &report.unit;
    let (knee_uploads, knee_agents) = (report.knee_uploads_per_s, report.knee_agents);
    match report.outcome.knee {
        Some(k) => eprintln!(
            "capacity: sustainable: {k} {unit} ({:.0} uploads/s, ≈ {:.0} agents); broke at {}; {}; binding: {}",
            knee_uploads.unwrap_or(0.0),
            knee_agents.unwrap_or(0.0),
            report
                .outcome
                .broke_at
                .map_or("—".into(), |b| b.to_string()),
            report
                .outcome
                .broke_first
                .as_deref()
                .unwrap_or("nothing broke"),
            report.binding
        ),
        None => eprintln!(
            "capacity: even {start} {unit} broke the SLO: {}",
            report.outcome.broke_first.as_deref().unwrap_or("?")
        ),
    }
    if let Some(s) = &report.outcome.degraded {
        eprintln!("capacity: went no higher: {s}");
    }
    if let Some(s) = &report.outcome.stopped_early {
        eprintln!("capacity: stopped early: {s}");
    }
}

/// `fleetbench compare` of two capacity runs: the knee in uploads per second may fall by at most
/// `tolerance` (a share); a run without a knee where the baseline had one is a regression too.
pub fn compare(
    baseline: &std::path::Path,
    run: &std::path::Path,
    tolerance: f64,
) -> Result<(), CommandError> {
    let read = |dir: &std::path::Path| -> Result<Report, CommandError> {
        let path = dir.join("capacity.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CommandError::invalid(anyhow::anyhow!(
                "{}: {e} (both directories must be capacity runs)",
                path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| CommandError::invalid(anyhow::anyhow!("{}: {e}", path.display())))
    };
    let (b, r) = (read(baseline)?, read(run)?);
    if b.scenario != r.scenario || b.slo != r.slo {
        return Err(CommandError::invalid(anyhow::anyhow!(
            "the runs searched different things: {} with SLO {:?} vs {} with SLO {:?}",
            b.scenario,
            b.slo,
            r.scenario,
            r.slo
        )));
    }
    let (kb, kr) = (b.knee_uploads_per_s, r.knee_uploads_per_s);
    let regressed = match (kb, kr) {
        (Some(x), Some(y)) => y < x * (1.0 - tolerance),
        (Some(_), None) => true,
        _ => false,
    };
    let show = |k: Option<f64>| k.map_or("none".to_string(), |v| format!("{v:.1} uploads/s"));
    if regressed {
        println!("REGRESSED capacity knee: {} -> {}", show(kb), show(kr));
        return Err(CommandError {
            code: EXIT_REGRESSIONS,
            error: anyhow::anyhow!(
                "the sustainable load fell by more than {:.0} %",
                tolerance * 100.0
            ),
        });
    }
    println!(
        "capacity knee: {} -> {} (within {:.0} %)",
        show(kb),
        show(kr),
        tolerance * 100.0
    );
    Ok(())
}
