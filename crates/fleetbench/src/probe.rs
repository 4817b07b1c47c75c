//! `fleetbench probe NAME`: one end-to-end probe alone, against the same target a run would use,
//! written as a run directory of its own (`summary.json` with the probe's figures, `index.html`).
//! Also what a fleet run needs to carry probes: their context, and their results in the summary.
//! A probe that fails (a lost alert, a leaked row, a partition not pruned) fails the run (exit 99).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use fleetbench_fleet::{Clock, Target};
use fleetbench_metrics::Summary;
use fleetbench_metrics::summary::{RunFacts, Target as SummaryTarget};
use fleetbench_probes::{Context, Outcome};

use crate::target::{self, Resolved};
use crate::{EXIT_THRESHOLDS, Failure};

pub fn context(
    resolved: &Resolved,
    target: Arc<Target>,
    run_id: String,
    clock: Clock,
    window_us: u64,
    phase: tokio::sync::watch::Receiver<u8>,
) -> Context {
    Context {
        target,
        http: fleetbench_probes::http_client(),
        admin_db_url: resolved.admin_db_url.clone(),
        pooler_db_url: resolved.config.db_url.clone(),
        direct_db_url: resolved.direct_db_url.clone(),
        run_id,
        clock,
        window_us,
        phase,
    }
}

/// Puts the probes' reports into the summary; a failed probe fails the run.
pub fn attach(summary: &mut Summary, outcomes: Vec<(String, Outcome)>) {
    for (name, o) in outcomes {
        summary.probes.insert(name, o.report);
    }
    if failed(summary).is_some() {
        summary.verdict = "fail".into();
    }
}

/// The failed probes' names, if any.
pub fn failed(summary: &Summary) -> Option<String> {
    let names: Vec<&str> = summary
        .probes
        .iter()
        .filter(|(_, p)| p.verdict == "fail")
        .map(|(n, _)| n.as_str())
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// One line per probe and its first findings, for the terminal.
pub fn print(summary: &Summary) {
    for (name, p) in &summary.probes {
        eprintln!("  probe {name}: {}", p.verdict.to_uppercase());
        for f in p.findings.iter().take(4) {
            eprintln!("    {f}");
        }
    }
}

pub fn probe(
    name: &str,
    out: Option<PathBuf>,
    overrides: &[String],
    keep: bool,
) -> Result<(), Failure> {
    let plan = fleetbench_scenario::probe_plan(name, overrides).map_err(|e| {
        Failure::invalid(anyhow::anyhow!("the probe's settings are not valid:\n{e}"))
    })?;
    let resolved = target::resolve(name == "pooler")?;
    let out = out.unwrap_or_else(|| crate::run::default_out(&format!("probe-{name}")));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("creating the run directory {}", out.display()))?;
    let run_id = uuid::Uuid::new_v4().to_string();
    eprintln!(
        "probe {name} (run {run_id}) against {} {}",
        resolved.config.kind,
        target::redact(&resolved.config.api_url)
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(async {
        let target = Arc::new(
            Target::new(resolved.config.clone(), 2, 16, fleetbench_fleet::target::DEFAULT_TIMEOUT).map_err(|e| anyhow::anyhow!(e))?,
        );
        let stop_rx = crate::run::stop_on_signal("probe: stopping")?;
        let (_phase, phase) = tokio::sync::watch::channel(1u8);
        let clock = Clock::new();
        let ctx = context(&resolved, target, run_id.clone(), clock, 1_000_000, phase);
        let started = SystemTime::now();
        let o = fleetbench_probes::run_until(name, &plan, &ctx, stop_rx.clone()).await;
        let duration_s = clock.now_us() as f64 / 1e6;
        let mut summary = Summary::new(
            &o.aggregate,
            RunFacts {
                run_id: run_id.clone(),
                scenario: format!("probe-{name}"),
                started_at: clock.started_at().to_rfc3339(),
                duration_s,
                target: SummaryTarget {
                    kind: resolved.config.kind.clone(),
                    url: target::redact(&resolved.config.api_url),
                },
                interrupted: *stop_rx.borrow(),
                aborted: None,
                environment: crate::run::environment(),
            },
            &[],
        );
        let aggregate = o.aggregate.clone();
        attach(&mut summary, vec![(name.to_string(), o)]);
        let resolved_toml = format!(
            "# fleetbench probe {name}: the probe's settings as resolved\n{}",
            toml::to_string(&plan).unwrap_or_default()
        );
        let shape = fleetbench_report::LoadShape {
            unit: "active agents".into(),
            points: Vec::new(),
            gauges: Vec::new(),
        };
        fleetbench_report::rundir::write(&out, &resolved_toml, &summary, &aggregate, &shape, started)
            .map_err(|e| anyhow::anyhow!(e))?;
        print(&summary);
        if keep {
            eprintln!("probe: kept its users and rows; `fleetbench cleanup --run-id {run_id}` removes them");
        } else if let Some(db) = &resolved.admin_db_url
            && let Err(e) = fleetbench_fleet::cleanup(db, &run_id).await
        {
            eprintln!(
                "probe: cleanup failed ({}); run `fleetbench cleanup --run-id {run_id}`",
                fleetbench_stack::db_error_text(&e)
            );
        }
        anyhow::Ok(summary)
    })?;
    println!("{}", out.join("index.html").display());
    match failed(&summary) {
        None => Ok(()),
        Some(_) => Err(Failure {
            code: EXIT_THRESHOLDS,
            error: anyhow::anyhow!(
                "probe {name} failed: {}",
                summary.probes[name].findings.join("; ")
            ),
        }),
    }
}
