//! `fleetbench probe NAME`: one end-to-end probe alone, against the same target a run would use,
//! written as a run directory of its own (`summary.json` with the probe's figures, `index.html`).
//! The run itself is `fleetbench_runner::probe`; this module resolves, prints and decides the exit.
//! A probe that fails (a lost alert, a leaked row, a partition not pruned) fails the run (exit 99).

use std::path::PathBuf;

use anyhow::Context as _;
use fleetbench_metrics::Summary;

use crate::{CommandError, EXIT_THRESHOLDS, machine, out_dir, signals, target};

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
) -> Result<(), CommandError> {
    let plan = fleetbench_scenario::probe_plan(name, overrides).map_err(|e| {
        CommandError::invalid(anyhow::anyhow!("the probe's settings are not valid:\n{e}"))
    })?;
    let endpoints = target::resolve(name == "pooler")?;
    let out = out.unwrap_or_else(|| out_dir::default_out(&format!("probe-{name}")));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("creating the run directory {}", out.display()))?;
    let run_id = uuid::Uuid::new_v4().to_string();
    eprintln!(
        "probe {name} (run {run_id}) against {} {}",
        endpoints.config.kind,
        target::redact(&endpoints.config.api_url)
    );
    let resolved_toml = format!(
        "# fleetbench probe {name}: the probe's settings as resolved\n{}",
        toml::to_string(&plan).unwrap_or_default()
    );
    let spec = fleetbench_runner::RunSpec {
        plan,
        resolved_toml,
        endpoints,
        run_id: run_id.clone(),
        clock: fleetbench_fleet::Clock::new(),
        out: out.clone(),
        environment: machine::environment(),
        remote_write_auth: Default::default(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let finished = runtime.block_on(async {
        let stop = signals::stop_on_signal("probe: stopping")?;
        anyhow::Ok(fleetbench_runner::probe(name, spec, keep, stop).await?)
    })?;
    if !crate::terminal::output().quiet {
        print(&finished.summary);
    }
    eprintln!("{}", finished.cleanup.describe("probe", &run_id));
    crate::terminal::result(&out)?;
    match fleetbench_runner::finish::failed_probes(&finished.summary) {
        None => Ok(()),
        Some(_) => Err(CommandError {
            code: EXIT_THRESHOLDS,
            error: anyhow::anyhow!(
                "probe {name} failed: {}",
                finished.summary.probes[name].findings.join("; ")
            ),
        }),
    }
}
