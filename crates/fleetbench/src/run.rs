//! `fleetbench run`, `scenarios validate` and `cleanup`: the scenario is validated before anything
//! is sent (exit 2 with every problem located), the target resolved, the fleet run with live
//! progress, and the run directory written even when the run is interrupted (Ctrl-C / SIGTERM stop
//! new work and drain in-flight requests for the scenario's grace period). Thresholds decide the
//! exit code: 0 pass, 99 crossed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use fleetbench_fleet::Progress;

use crate::terminal;
use crate::{CommandError, EXIT_THRESHOLDS, machine, out_dir, progress, signals, target};

pub(crate) fn load(
    path: &Path,
    overrides: &[String],
) -> Result<(fleetbench_scenario::Plan, String), CommandError> {
    let (_, plan, resolved) = fleetbench_scenario::load_file(path, overrides)
        .map_err(|e| CommandError::invalid(anyhow::anyhow!("the scenario is not valid:\n{e}")))?;
    Ok((plan, resolved))
}

pub fn validate(files: &[PathBuf], overrides: &[String]) -> Result<(), CommandError> {
    let mut bad = Vec::new();
    for f in files {
        match fleetbench_scenario::load_file(f, overrides) {
            Ok((_, plan, _)) => println!(
                "{}: ok ({} agents, {:.0} s, {} thresholds)",
                f.display(),
                plan.agents,
                plan.duration().as_secs_f64(),
                plan.thresholds.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                bad.push(f.display().to_string());
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CommandError::invalid(anyhow::anyhow!(
            "{} invalid: {}",
            bad.len(),
            bad.join(", ")
        )))
    }
}

/// `fleetbench cleanup --run-id ID`: the run's users and rows removed in batches, each its own
/// transaction, with progress on stderr; after an interrupted cleanup, the same command finishes
/// the job.
pub fn cleanup(run_id: &str) -> Result<(), CommandError> {
    let resolved = target::resolve(false)?;
    let db = resolved
        .admin_db_url
        .context("cleanup needs SQL access: set SUPABASE_DB_SESSION_URL or SUPABASE_DB_URL")?;
    let rt = tokio::runtime::Runtime::new()?;
    let deleted = rt
        .block_on(fleetbench_runner::finish::clean_tables(
            &db,
            run_id,
            &|line| eprintln!("{line}"),
        ))
        .map_err(|e| {
            anyhow::anyhow!(
                "cleanup_run_batch: {e}; what was removed stays removed: run the same command again to finish"
            )
        })?;
    if deleted.is_empty() {
        println!("run {run_id}: nothing left to remove");
    }
    for (table, n) in deleted {
        println!("{table}: {n} rows deleted");
    }
    Ok(())
}

/// What a run knows at any moment without its workers' aggregates: written to `partial.json` when
/// a second signal leaves no time for the run directory.
fn write_partial(out: &Path, run_id: &str, scenario: &str, progress: &Progress) {
    use std::sync::atomic::Ordering::Relaxed;
    let doc = serde_json::json!({
        "complete": false,
        "reason": "stopped at once by a second signal: this file holds the live counters only",
        "run_id": run_id,
        "scenario": scenario,
        "written_at": chrono::Utc::now().to_rfc3339(),
        "progress": {
            "agents_provisioned": progress.provisioned.load(Relaxed),
            "agents_active": progress.active.load(Relaxed),
            "uploads": progress.uploads.load(Relaxed),
            "errors": progress.errors.load(Relaxed),
            "rows_written": progress.rows_written.load(Relaxed),
            "backlog_rows": progress.backlog_rows.load(Relaxed),
            "in_flight": progress.in_flight.load(Relaxed),
            "late": progress.late.load(Relaxed),
            "dropped": progress.dropped.load(Relaxed),
        },
    });
    let path = out.join("partial.json");
    if let Err(e) = std::fs::write(&path, doc.to_string() + "\n") {
        eprintln!("could not write {}: {e}", path.display());
    } else {
        eprintln!("{}", path.display());
    }
}

/// How a process takes part in a sharded run (`--shard I/N`): the shared run id (users and rows
/// of all shards carry it) and the shared start (the clock's zero; the load phase begins there).
#[derive(Debug, Clone, Default)]
pub struct Sharding {
    pub shard: Option<(u32, u32)>,
    pub run_id: Option<String>,
    pub start_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A remote project's Auth as the run plans with it, said on stderr: the `/token` limit from the
/// scenario (`[target] token_rate_limit`), else the Management API (with `SUPABASE_ACCESS_TOKEN`),
/// else the hosted default for `*.supabase.co`; the access-token lifetime (an hour unless the
/// Management API says otherwise). Forwarding asked of a project that has it off is refused.
fn project_auth(
    plan: &fleetbench_scenario::Plan,
    endpoints: &mut fleetbench_runner::Endpoints,
) -> Result<std::time::Duration, CommandError> {
    let hour = std::time::Duration::from_secs(3600);
    let config = &mut endpoints.config;
    if config.kind != "remote" {
        return Ok(hour);
    }
    let read = management_auth(&config.api_url)?;
    let mut lifetime = hour;
    if let Some(project) = &read {
        if let Some(n) = project.rate_limit_token_refresh {
            config.auth_limit = Some(fleetbench_fleet::target::AuthLimit {
                per_5min: n,
                burst: 30,
            });
        }
        if let Some(s) = project.jwt_exp.filter(|s| *s > 0) {
            lifetime = std::time::Duration::from_secs(s);
        }
        if config.forward_ip && project.security_sb_forwarded_for_enabled == Some(false) {
            return Err(CommandError::invalid(anyhow::anyhow!(
                "FLEETBENCH_IP_FORWARDING=on, but the project's IP address forwarding is off (Management API: \
                 security_sb_forwarded_for_enabled = false), so every agent would share one /token bucket; \
                 turn it on (PATCH /v1/projects/{{ref}}/config/auth) or unset FLEETBENCH_IP_FORWARDING; nothing was sent"
            )));
        }
        terminal::say(&format!(
            "project: Management API: /token {} per 5 min per address, access tokens live {} s, IP address forwarding {}",
            project
                .rate_limit_token_refresh
                .map_or("unknown".into(), |n| n.to_string()),
            lifetime.as_secs(),
            match project.security_sb_forwarded_for_enabled {
                Some(true) => "on",
                Some(false) => "off",
                None => "unknown (null)",
            }
        ));
    }
    if let Some(n) = plan.token_rate_limit {
        config.auth_limit = Some(fleetbench_fleet::target::AuthLimit {
            per_5min: n,
            burst: 30,
        });
        terminal::say(&format!(
            "project: /token {n} per 5 min per address, as [target] token_rate_limit says"
        ));
    }
    Ok(lifetime)
}

/// The Management API's Auth configuration of the target, when `SUPABASE_ACCESS_TOKEN` is set.
fn management_auth(
    api_url: &str,
) -> Result<Option<fleetbench_runner::platform::AuthConfig>, CommandError> {
    let Some(token) = target::env(&["SUPABASE_ACCESS_TOKEN"]) else {
        return Ok(None);
    };
    let explicit = target::env(&["SUPABASE_PROJECT_REF"]);
    let Some(project_ref) = fleetbench_runner::platform::project_ref(api_url, explicit.as_deref())
    else {
        return Err(CommandError::invalid(anyhow::anyhow!(
            "SUPABASE_ACCESS_TOKEN is set but the project ref is unknown (SUPABASE_URL is not \
             <ref>.supabase.co): set SUPABASE_PROJECT_REF; nothing was sent"
        )));
    };
    let api = target::env(&["FLEETBENCH_MANAGEMENT_API"])
        .unwrap_or_else(|| fleetbench_runner::platform::HOSTED_API.into());
    let read = tokio::runtime::Runtime::new()?.block_on(fleetbench_runner::platform::auth_config(
        &api,
        &project_ref,
        token.trim(),
    ));
    read.map(Some).map_err(|e| {
        CommandError::invalid(anyhow::anyhow!(
            "reading the project's Auth configuration from the Management API failed ({e}); \
             unset SUPABASE_ACCESS_TOKEN to plan with the defaults; nothing was sent"
        ))
    })
}

/// What `run` checks before it sends anything: `--dry-run` stops after the Auth preflight;
/// `--accept-slow-provisioning` runs even when the preflight says provisioning is too slow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks {
    pub dry_run: bool,
    pub accept_slow_provisioning: bool,
}

/// The Auth preflight on stderr: `Ok(false)` after a dry run (nothing to send), an invalid-input
/// refusal with the fixes when the plan cannot be met and the slow start is not accepted.
fn preflight(
    plan: &fleetbench_scenario::Plan,
    endpoints: &fleetbench_runner::Endpoints,
    lifetime: std::time::Duration,
    checks: Checks,
) -> Result<bool, CommandError> {
    let max = match std::env::var("FLEETBENCH_MAX_PROVISIONING") {
        Err(_) => std::time::Duration::from_secs(600),
        Ok(v) => humantime::parse_duration(v.trim()).map_err(|e| {
            CommandError::invalid(anyhow::anyhow!(
                "FLEETBENCH_MAX_PROVISIONING={v:?}: not a duration like 10m ({e})"
            ))
        })?,
    };
    let config = &endpoints.config;
    let p = fleetbench_runner::preflight::preflight(
        plan,
        config.auth_limit,
        config.forward_ip,
        lifetime,
        max,
    );
    for line in p.describe() {
        // Under --dry-run the preflight is the answer asked for.
        if checks.dry_run {
            eprintln!("preflight: {line}");
        } else {
            terminal::say(&format!("preflight: {line}"));
        }
    }
    if !p.problems.is_empty() && !checks.accept_slow_provisioning {
        return Err(CommandError::invalid(anyhow::anyhow!(
            "the project's Auth limits cannot carry this plan ({}); {}; nothing was sent",
            p.problems.join("; "),
            fleetbench_runner::preflight::Preflight::fixes()
        )));
    }
    if checks.dry_run {
        eprintln!("preflight: --dry-run: nothing was sent");
        return Ok(false);
    }
    Ok(true)
}

pub fn run(
    scenario: &Path,
    out: Option<PathBuf>,
    overrides: &[String],
    sharding: Sharding,
    checks: Checks,
) -> Result<(), CommandError> {
    let (mut plan, resolved_toml) = load(scenario, overrides)?;
    if let Some(shard) = sharding.shard {
        if shard.1 > 1 && sharding.run_id.is_none() {
            return Err(CommandError::invalid(anyhow::anyhow!(
                "--shard {}/{} needs --run-id: every shard of one run must carry the same id (and --start-at the same start)",
                shard.0,
                shard.1
            )));
        }
        plan.shard = shard;
        if !plan.probes.names().is_empty() && plan.probes.shard >= shard.1 {
            return Err(CommandError::invalid(anyhow::anyhow!(
                "[probes] shard = {} but the run has {} shards (0 to {}): the probes would run nowhere",
                plan.probes.shard,
                shard.1,
                shard.1 - 1
            )));
        }
    }
    if let Some(at) = sharding.start_at {
        let late = chrono::Utc::now() - at;
        if late > chrono::Duration::seconds(1) {
            return Err(CommandError::invalid(anyhow::anyhow!(
                "--start-at {} passed {} s ago: the shards of a run start together at a start still ahead \
                 (deploy/ci/prepare picks one); nothing was sent",
                at.to_rfc3339(),
                late.num_seconds()
            )));
        }
    }
    let needs_pooler = plan
        .ingest
        .iter()
        .any(|(p, share)| p == "pooler" && *share > 0.0);
    // Traces to replay are read before anything is sent: a bad one is invalid input.
    fleetbench_fleet::provision::load_traces(&plan)
        .map_err(|e| CommandError::invalid(anyhow::anyhow!(e)))?;
    target::check_caps(f64::from(plan.agents), plan.peak_rate(), plan.duration())?;
    let remote_write_auth = target::remote_write_auth()?;
    // The run directory is written at the end: one that cannot be is found before the load.
    let out = out.unwrap_or_else(|| out_dir::default_out(&plan.name));
    out_dir::writable(&out)?;
    // The resolved scenario first: a run stopped at once still says what it was.
    std::fs::write(out.join("scenario.toml"), &resolved_toml)?;
    let mut endpoints = target::resolve_allowed(
        needs_pooler || plan.probes.pooler.is_some(),
        &plan.allow_hosts,
    )?;
    let lifetime = project_auth(&plan, &mut endpoints)?;
    if !preflight(&plan, &endpoints, lifetime, checks)? {
        return Ok(());
    }
    let run_id = sharding
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    terminal::say(&format!(
        "run {run_id}: {} against {} {} ({} agents, {:.0} s of load)",
        plan.name,
        endpoints.config.kind,
        target::redact(&endpoints.config.api_url),
        plan.agents,
        plan.duration().as_secs_f64()
    ));
    let (name, agents) = (plan.name.clone(), plan.agents);
    let spec = fleetbench_runner::RunSpec {
        plan,
        resolved_toml,
        endpoints,
        run_id: run_id.clone(),
        // The clock's zero: now, or the shared start of a sharded run.
        clock: sharding
            .start_at
            .map_or_else(fleetbench_fleet::Clock::new, fleetbench_fleet::Clock::at),
        out: out.clone(),
        environment: machine::environment(),
        remote_write_auth,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let finished = runtime.block_on(async {
        let progress = Arc::new(Progress::default());
        let stop = {
            let (out, run_id, progress) = (out.clone(), run_id.clone(), progress.clone());
            signals::stop_on_signals(
                "run: stopping: no new work; in-flight requests get up to 1 s, then the run directory is written",
                move || write_partial(&out, &run_id, &name, &progress),
            )?
        };
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let shown = tokio::spawn(progress::show(progress.clone(), agents, done_rx));
        let finished = fleetbench_runner::run(spec, progress, stop, &terminal::say).await;
        let _ = done_tx.send(true);
        let _ = shown.await;
        anyhow::Ok(finished.map_err(|e| anyhow::anyhow!("{e}"))?)
    })?;
    print_end(&finished, &run_id);
    terminal::result(&out)?;
    verdict(&finished.summary)
}

/// The run's account on stderr: an abort, the rows, the generator falling behind, the operations'
/// table, each threshold, each probe, and what became of the run's users and rows (the table,
/// thresholds and probes not with `--quiet`; the rest always).
fn print_end(finished: &fleetbench_runner::Finished, run_id: &str) {
    let summary = &finished.summary;
    if let Some(reason) = &summary.aborted {
        eprintln!("run: aborted: {reason} (abort_on_fail)");
    }
    if let Some(outcome) = &finished.fleet {
        print_fleet(outcome);
    }
    for s in summary.delivery.iter().flat_map(|d| &d.shortfall) {
        eprintln!("  {} delivery: {s}", terminal::verdict_word(false));
    }
    if !terminal::output().quiet {
        terminal::operations_table(summary)
            .into_iter()
            .chain(terminal::threshold_lines(summary))
            .for_each(|l| eprintln!("{l}"));
        crate::probe::print(summary);
    }
    let worth_saying = matches!(
        finished.cleanup,
        fleetbench_runner::Cleanup::Failed(_)
            | fleetbench_runner::Cleanup::Interrupted
            | fleetbench_runner::Cleanup::NoSqlAccess
    );
    if worth_saying
        || (finished.cleanup != fleetbench_runner::Cleanup::Kept && !terminal::output().quiet)
    {
        eprintln!("{}", finished.cleanup.describe("run", run_id));
    }
}

/// The fleet's rows and whether the generator kept to its schedule.
fn print_fleet(outcome: &fleetbench_fleet::RunOutcome) {
    let written: u64 = outcome.rows_written.values().sum();
    let agg = &outcome.aggregate;
    terminal::say(&format!(
        "run: {} agents; rows sampled {}, written {written}, unsent {}, dropped {}, abandoned {}; uploads {} late, {} dropped, {} abandoned in flight",
        outcome.agents,
        outcome.rows_sampled,
        outcome.rows_unsent,
        outcome.rows_dropped,
        outcome.rows_abandoned,
        agg.late,
        agg.dropped,
        agg.abandoned
    ));
    if agg.late + agg.dropped > 0 {
        eprintln!(
            "run: warning: the generator fell behind the schedule the scenario asked for ({} uploads started over a window late, {} arrivals found no idle agent): the target saw less load than planned; add agents (arrival_rate) or CPU",
            agg.late, agg.dropped
        );
    }
}

/// Exit 0 when the run passed; 99 with what failed (thresholds, probes, an abort, less delivered
/// than planned) otherwise.
pub(crate) fn verdict(summary: &fleetbench_metrics::Summary) -> Result<(), CommandError> {
    if summary.passed() {
        return Ok(());
    }
    let mut reasons: Vec<String> = summary
        .delivery
        .iter()
        .flat_map(|d| d.shortfall.iter())
        .map(|s| format!("less delivered than planned: {s}"))
        .collect();
    let crossed: Vec<String> = summary
        .thresholds
        .iter()
        .filter(|t| !t.pass)
        .map(|t| format!("{} {}", t.operation, t.expr))
        .collect();
    if !crossed.is_empty() {
        reasons.push(format!("thresholds crossed: {}", crossed.join(", ")));
    }
    if let Some(f) = fleetbench_runner::finish::failed_probes(summary) {
        reasons.push(format!("probes failed: {f}"));
    }
    if let Some(r) = &summary.aborted {
        reasons.push(format!("the run was aborted: {r}"));
    }
    reasons.extend(summary.shards_failed.iter().cloned());
    Err(CommandError {
        code: EXIT_THRESHOLDS,
        error: anyhow::anyhow!("{}", reasons.join("; ")),
    })
}
