//! `report`, `compare` and `merge`: finished run directories drawn again, compared and merged
//! (the work is the report crate's; here are the exit codes and what is printed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{CommandError, EXIT_REGRESSIONS};

fn invalid(e: String) -> CommandError {
    CommandError::invalid(anyhow::anyhow!(e))
}

pub fn report(run_dir: &Path) -> Result<(), CommandError> {
    let page = fleetbench_report::rundir::rerender(run_dir).map_err(invalid)?;
    println!("{}", page.display());
    Ok(())
}

/// Prints each regression; exit 3 when there is one.
pub fn compare(
    baseline: &Path,
    run: &Path,
    tolerance_pct: f64,
    min_delta: Duration,
    error_tolerance_points: f64,
) -> Result<(), CommandError> {
    if baseline.join("capacity.json").is_file() || run.join("capacity.json").is_file() {
        return crate::capacity::compare(baseline, run, tolerance_pct / 100.0);
    }
    let tol = fleetbench_report::compare::Tolerance {
        relative: tolerance_pct / 100.0,
        min_delta_ms: min_delta.as_secs_f64() * 1000.0,
        error_points: error_tolerance_points,
    };
    let c = fleetbench_report::rundir::compare_dirs(baseline, run, tol).map_err(invalid)?;
    for ch in c.regressions() {
        println!(
            "REGRESSED {} {}: {:.3} -> {:.3} ({})",
            ch.operation,
            ch.metric,
            ch.baseline,
            ch.run,
            ch.relative
                .map_or("n/a".into(), |r| format!("{:+.1} %", r * 100.0))
        );
    }
    for ch in &c.server {
        eprintln!(
            "compare: server {}: {:.3} -> {:.3} {} ({})",
            ch.figure,
            ch.baseline,
            ch.run,
            ch.unit,
            ch.relative
                .map_or("n/a".into(), |r| format!("{:+.1} %", r * 100.0))
        );
    }
    let n = c.regressions().count();
    eprintln!(
        "compare: {n} regression(s) of {} figures; {} written",
        c.changes.len(),
        run.join("compare.json").display()
    );
    if n == 0 {
        return Ok(());
    }
    Err(CommandError {
        code: EXIT_REGRESSIONS,
        error: anyhow::anyhow!("{n} regression(s) against {}", baseline.display()),
    })
}

/// Exit 99 when the merged run fails, as a run would: thresholds crossed over every shard's
/// samples, or a shard that failed on its own (a probe, its delivery, a signal, an abort).
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<(), CommandError> {
    let summary = fleetbench_report::rundir::merge(shards, out).map_err(invalid)?;
    if !crate::terminal::output().quiet {
        crate::terminal::operations_table(&summary)
            .into_iter()
            .chain(crate::terminal::threshold_lines(&summary))
            .for_each(|l| eprintln!("{l}"));
    }
    crate::terminal::result(out)?;
    crate::run::verdict(&summary)
}
