//! `fleetbench goose SCENARIO -- <goose flags>` (cargo feature `goose`, on by default): the
//! scenario's agents as goose users ([`fleetbench_goose`]) against the resolved target, and with
//! `--cross-check` the same closed workload through fleetbench's engine first, compared operation by
//! operation (exit 3 when they disagree).

use std::sync::Arc;

use anyhow::Context;
use fleetbench_fleet::Target;
use fleetbench_goose::{AttackError, Fleet, cross_check};
use fleetbench_scenario::LoadModel;
use goose::config::GooseConfiguration;

use crate::{CommandError, EXIT_REGRESSIONS, EXIT_THRESHOLDS, GooseArgs, run, target};

/// Goose's own flags, read before anything is sent (`-- --help` prints goose's help).
fn parse_flags(flags: &[String]) -> Result<Option<GooseConfiguration>, CommandError> {
    if flags.iter().any(|f| f == "--help" || f == "-h") {
        let mut help = <GooseConfiguration as clap::CommandFactory>::command()
            .name("fleetbench goose SCENARIO --");
        help.print_long_help()?;
        return Ok(None);
    }
    GooseConfiguration::parse_args_default(flags)
        .map(Some)
        .map_err(|e| {
            CommandError::invalid(anyhow::anyhow!(
                "goose's flags (after --): {e}; `fleetbench goose SCENARIO -- --help` lists them"
            ))
        })
}

pub fn goose(args: GooseArgs) -> Result<(), CommandError> {
    let (plan, _) = run::load(&args.scenario, &args.overrides)?;
    let Some(flags) = parse_flags(&args.goose)? else {
        return Ok(());
    };
    if args.cross_check && (plan.model != LoadModel::Closed || plan.iterations.is_none()) {
        return Err(CommandError::invalid(anyhow::anyhow!(
            "--cross-check needs a workload both can count exactly: load.model = \"closed\" and workload.iterations \
             (e.g. --set load.model=closed --set workload.iterations=20)"
        )));
    }
    let traces = fleetbench_fleet::provision::load_traces(&plan)
        .map_err(|e| CommandError::invalid(anyhow::anyhow!(e)))?;
    target::check_caps(f64::from(plan.agents), plan.peak_rate(), plan.duration())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::out_dir::default_out(&format!("{}-goose", plan.name)));
    crate::out_dir::writable(&out)?;
    let needs_pooler = plan
        .ingest
        .iter()
        .any(|(p, share)| p == "pooler" && *share > 0.0);
    let resolved = target::resolve_allowed(needs_pooler, &plan.allow_hosts)?;
    let api_url = resolved.config.api_url.clone();
    let config = fleetbench_goose::configure(flags, &args.goose, &plan, &api_url, &out);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ours = if args.cross_check {
            Some(cross_check::engine_run(&plan, &resolved).await?)
        } else {
            None
        };
        let run_id = uuid::Uuid::new_v4().to_string();
        eprintln!(
            "goose {run_id}: {} against {} {} as goose users",
            plan.name,
            resolved.config.kind,
            target::redact(&api_url)
        );
        let target = Target::new(resolved.config.clone(), 16, 1, plan.request_timeout)
            .map_err(|e| anyhow::anyhow!(e))?;
        let fleet = Arc::new(Fleet::new(plan.clone(), target, run_id.clone(), traces));
        let result = fleetbench_goose::attack(fleet.clone(), config).await;
        let rows = fleet.rows();
        eprintln!(
            "goose: rows sampled {}, written {}, dropped {}",
            rows.sampled, rows.written, rows.dropped
        );
        fleetbench_goose::write_rows(&out, &fleet)?;
        if plan.cleanup {
            let cleanup = fleetbench_runner::finish::clean(&resolved, &run_id).await;
            eprintln!("{}", cleanup.describe("goose", &run_id));
        }
        let metrics = result.map_err(|e| match e {
            AttackError::Thresholds(_) => CommandError {
                code: EXIT_THRESHOLDS,
                error: e.into(),
            },
            AttackError::Goose(_) => CommandError::from(anyhow::Error::from(e)),
        })?;
        for name in ["goose-report.html", "goose-report.json"] {
            if out.join(name).exists() {
                println!("{}", out.join(name).display());
            }
        }
        if let Some(ours) = ours {
            compare(&ours, &metrics, &args, &out)?;
        }
        Ok::<(), CommandError>(())
    })
}

/// Prints and writes the comparison; exit 3 when the two disagree.
fn compare(
    ours: &fleetbench_metrics::Aggregate,
    metrics: &goose::metrics::GooseMetrics,
    args: &GooseArgs,
    out: &std::path::Path,
) -> Result<(), CommandError> {
    let rows = cross_check::agreement(
        ours,
        &cross_check::goose_operations(metrics),
        args.tolerance,
        args.min_delta,
    );
    eprintln!(
        "{:<26} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "operation", "requests", "goose", "p50 ms", "goose", "p99 ms", "goose"
    );
    for r in &rows {
        eprintln!(
            "{:<26} {:>9} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>10.2}  {}",
            r.operation,
            r.fleetbench_count,
            r.goose_count,
            r.fleetbench_p50_ms,
            r.goose_p50_ms,
            r.fleetbench_p99_ms,
            r.goose_p99_ms,
            match (r.agree, r.percentiles_compared) {
                (true, true) => "agree".to_string(),
                (true, false) => "counts agree (too few for percentiles)".to_string(),
                (false, _) => r.why_not.join("; "),
            }
        );
    }
    let path = out.join("cross-check.json");
    let doc = serde_json::json!({
        "tolerance": args.tolerance,
        "min_delta_ms": args.min_delta.as_secs_f64() * 1e3,
        "operations": rows,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    let disagree: Vec<String> = rows
        .iter()
        .filter(|r| !r.agree)
        .map(|r| format!("{}: {}", r.operation, r.why_not.join("; ")))
        .collect();
    if disagree.is_empty() {
        Ok(())
    } else {
        Err(CommandError {
            code: EXIT_REGRESSIONS,
            error: anyhow::anyhow!("fleetbench and goose disagree: {}", disagree.join(" | ")),
        })
    }
}
