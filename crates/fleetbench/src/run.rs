//! `fleetbench run`, `scenarios validate` and `cleanup`: the scenario is validated before anything
//! is sent (exit 2 with every problem located), the target resolved, the fleet run with live
//! progress, and the run directory written even when the run is interrupted (Ctrl-C / SIGTERM stop
//! new work and drain in-flight requests for the scenario's grace period). Thresholds decide the
//! exit code: 0 pass, 99 crossed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use fleetbench_fleet::{Progress, Target};
use fleetbench_metrics::Summary;
use fleetbench_metrics::summary::{RunFacts, Target as SummaryTarget};
use tokio::signal::unix::{SignalKind, signal};

use crate::{EXIT_THRESHOLDS, Failure, progress, target};

pub(crate) fn load(
    path: &Path,
    overrides: &[String],
) -> Result<(fleetbench_scenario::Plan, String), Failure> {
    let (_, plan, resolved) = fleetbench_scenario::load_file(path, overrides)
        .map_err(|e| Failure::invalid(anyhow::anyhow!("the scenario is not valid:\n{e}")))?;
    Ok((plan, resolved))
}

pub fn validate(files: &[PathBuf], overrides: &[String]) -> Result<(), Failure> {
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
        Err(Failure::invalid(anyhow::anyhow!(
            "{} invalid: {}",
            bad.len(),
            bad.join(", ")
        )))
    }
}

pub fn cleanup(run_id: &str) -> Result<(), Failure> {
    let resolved = target::resolve(false)?;
    let db = resolved
        .admin_db_url
        .context("cleanup needs SQL access: set SUPABASE_DB_SESSION_URL or SUPABASE_DB_URL")?;
    let rt = tokio::runtime::Runtime::new()?;
    let deleted = rt
        .block_on(fleetbench_fleet::cleanup(&db, run_id))
        .map_err(|e| anyhow::anyhow!("cleanup_run: {}", fleetbench_stack::db_error_text(&e)))?;
    for (table, n) in deleted {
        println!("{table}: {n} rows deleted");
    }
    Ok(())
}

pub fn sink(
    listen: std::net::SocketAddr,
    latency: fleetbench_fleet::sink::Latency,
    stall: Option<fleetbench_fleet::sink::Stall>,
    capacity: Option<f64>,
    faults: Vec<fleetbench_fleet::sink::Fault>,
) -> Result<(), Failure> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let sink = fleetbench_fleet::sink::Sink::faulty(
            fleetbench_fleet::sink::Model {
                latency,
                stall,
                capacity,
            },
            faults.clone(),
        );
        println!("http://{}", listener.local_addr()?);
        eprintln!(
            "sink: latency {latency:?}, stall {stall:?}, capacity {capacity:?}/s, faults {faults:?}; Ctrl-C stops it"
        );
        tokio::select! {
            r = fleetbench_fleet::sink::serve(listener, sink.clone()) => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!(
            "sink: {} requests, {} inserts, {} rows, {} answered with a fault",
            sink.requests.load(std::sync::atomic::Ordering::Relaxed),
            sink.inserts.load(std::sync::atomic::Ordering::Relaxed),
            sink.rows.load(std::sync::atomic::Ordering::Relaxed),
            sink.faulted.load(std::sync::atomic::Ordering::Relaxed)
        );
        anyhow::Ok(())
    })?;
    Ok(())
}

/// A stop flag that SIGTERM or SIGINT (Ctrl-C) raises, saying `message` when it does; a second
/// signal exits at once (exit 1). Call within a runtime.
pub fn stop_on_signal(message: &'static str) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    stop_on_signals(message, || {})
}

/// [`stop_on_signal`], with `last_words` run on the second signal before the process exits.
pub fn stop_on_signals(
    message: &'static str,
    last_words: impl FnOnce() + Send + 'static,
) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("{message} (a second signal exits at once)");
        let _ = stop_tx.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        last_words();
        eprintln!("stopped at once by a second signal");
        std::process::exit(i32::from(crate::EXIT_FAILED));
    });
    Ok(stop_rx)
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

/// Creates `dir` and checks that a file can be written there; invalid input (exit 2) otherwise.
pub(crate) fn writable(dir: &Path) -> Result<(), Failure> {
    let probe = dir.join(".fleetbench-write-check");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            Failure::invalid(anyhow::anyhow!(
                "the run directory {} cannot be written ({e}): choose another --out; nothing was sent",
                dir.display()
            ))
        })
}

pub fn default_out(name: &str) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    PathBuf::from("reports").join(format!("{stamp}-{name}"))
}

/// How a process takes part in a sharded run (`--shard I/N`): the shared run id (users and rows
/// of all shards carry it) and the shared start (the clock's zero; the load phase begins there).
#[derive(Debug, Clone, Default)]
pub struct Sharding {
    pub shard: Option<(u32, u32)>,
    pub run_id: Option<String>,
    pub start_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `I/N` with I < N.
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: write the shard as I/N, e.g. 0/4"))?;
    let (i, n): (u32, u32) = (
        i.trim()
            .parse()
            .map_err(|_| format!("{s:?}: {i:?} is not a shard index"))?,
        n.trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a shard count"))?,
    );
    if n == 0 || i >= n {
        return Err(format!(
            "{s:?}: the index must be below the count (0/{n} … {}/{n})",
            n.saturating_sub(1)
        ));
    }
    Ok((i, n))
}

pub fn run(
    scenario: &Path,
    out: Option<PathBuf>,
    overrides: &[String],
    sharding: Sharding,
) -> Result<(), Failure> {
    let (mut plan, resolved_toml) = load(scenario, overrides)?;
    if let Some(shard) = sharding.shard {
        if shard.1 > 1 && sharding.run_id.is_none() {
            return Err(Failure::invalid(anyhow::anyhow!(
                "--shard {}/{} needs --run-id: every shard of one run must carry the same id (and --start-at the same start)",
                shard.0,
                shard.1
            )));
        }
        plan.shard = shard;
    }
    let needs_pooler = plan
        .ingest
        .iter()
        .any(|(p, share)| p == "pooler" && *share > 0.0);
    // Traces to replay are read before anything is sent: a bad one is invalid input.
    fleetbench_fleet::engine::load_traces(&plan)
        .map_err(|e| Failure::invalid(anyhow::anyhow!(e)))?;
    target::check_caps(f64::from(plan.agents), plan.peak_rate(), plan.duration())?;
    // The run directory is written at the end: one that cannot be is found before the load.
    let out = out.unwrap_or_else(|| default_out(&plan.name));
    writable(&out)?;
    // The resolved scenario first: a run stopped at once still says what it was.
    std::fs::write(out.join("scenario.toml"), &resolved_toml)?;
    let resolved = target::resolve_allowed(
        needs_pooler || plan.probes.pooler.is_some(),
        &plan.allow_hosts,
    )?;
    let run_id = sharding
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    eprintln!(
        "run {run_id}: {} against {} {} ({} agents, {:.0} s of load)",
        plan.name,
        resolved.config.kind,
        target::redact(&resolved.config.api_url),
        plan.agents,
        plan.duration().as_secs_f64()
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(async {
        let pooler_connections = 16;
        let target = Arc::new(Target::new(resolved.config.clone(), pooler_connections, plan.connections as usize, plan.request_timeout).map_err(|e| anyhow::anyhow!(e))?);
        let progress = Arc::new(Progress::default());
        let stop_rx = {
            let (out, run_id, name, progress) = (out.clone(), run_id.clone(), plan.name.clone(), progress.clone());
            stop_on_signals(
                "run: stopping: no new work; in-flight requests get up to 1 s, then the run directory is written",
                move || write_partial(&out, &run_id, &name, &progress),
            )?
        };
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let shown = tokio::spawn(progress::show(progress.clone(), plan.agents, done_rx));
        let started_wall = SystemTime::now();
        let thresholds = plan.thresholds.clone();
        let cleanup = plan.cleanup;
        let name = plan.name.clone();
        // The planned load for the report: the stages' corners, from the start of the load phase.
        let unit = match plan.model {
            fleetbench_scenario::LoadModel::ArrivalRate => "uploads/s",
            _ => "active agents",
        };
        let corners: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
            .chain(plan.stages.iter().map(|(end, level)| (end.as_secs_f64(), *level)))
            .collect();
        // Probes beside the fleet: on the same clock, measuring from the load phase on.
        let clock = sharding.start_at.map_or_else(fleetbench_fleet::Clock::new, fleetbench_fleet::Clock::at);
        if plan.shard.1 > 1 {
            eprintln!(
                "run: shard {}/{} of run {run_id}: agents {} + k·{}; the load starts at {}",
                plan.shard.0, plan.shard.1, plan.shard.0, plan.shard.1, clock.started_at().to_rfc3339()
            );
        }
        let sharded = plan.shard.1 > 1;
        let probe_names = plan.probes.names();
        let probes = (!probe_names.is_empty()).then(|| {
            eprintln!("run: probes beside the fleet: {}", probe_names.join(", "));
            let ctx = crate::probe::context(
                &resolved,
                target.clone(),
                run_id.clone(),
                clock,
                plan.window.as_micros().max(1) as u64,
                progress.phase.subscribe(),
            );
            tokio::spawn(fleetbench_probes::run_all(plan.probes.clone(), Arc::new(ctx), stop_rx.clone()))
        });
        // Real collectors beside the fleet, through its load phase.
        let collectors: Vec<_> = (0..plan.collectors)
            .map(|i| {
                let (target, run_id, mut phase, stop) = (target.clone(), run_id.clone(), progress.phase.subscribe(), stop_rx.clone());
                let (sample, upload) = (plan.sample_interval, plan.upload_interval);
                tokio::spawn(async move {
                    let _ = phase.wait_for(|p| *p >= 1).await;
                    let (tx, until) = tokio::sync::watch::channel(false);
                    let mut stop = stop;
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = phase.wait_for(|p| *p >= 2) => {}
                            _ = stop.wait_for(|s| *s) => {}
                        }
                        let _ = tx.send(true);
                    });
                    fleetbench_fleet::collectors::push(&target, &run_id, i, sample, upload, clock, until).await
                })
            })
            .collect();
        let result = fleetbench_fleet::run_at(clock, plan, target, run_id.clone(), progress, stop_rx).await;
        let _ = done_tx.send(true);
        let _ = shown.await;
        let mut outcome = result.map_err(|e| anyhow::anyhow!("{e}"))?;
        let probe_outcomes = match probes {
            Some(task) => {
                eprintln!("run: the load is over; waiting for the probes to finish");
                task.await.unwrap_or_default()
            }
            None => Vec::new(),
        };
        for (_, o) in &probe_outcomes {
            outcome.aggregate.merge(&o.aggregate);
        }
        for c in collectors {
            match c.await {
                Ok(Ok(pushed)) => {
                    eprintln!(
                        "run: real collector: {} samples, {} rows written in {} uploads",
                        pushed.samples, pushed.rows_written, pushed.uploads
                    );
                    pushed.timings.iter().for_each(|s| outcome.aggregate.add(s));
                }
                Ok(Err(e)) => eprintln!("run: a real collector could not start: {e}"),
                Err(e) => eprintln!("run: a real collector failed: {e}"),
            }
        }
        let duration = Duration::from_micros(outcome.clock.now_us());
        let summary = Summary::new(
            &outcome.aggregate,
            RunFacts {
                run_id: run_id.clone(),
                scenario: name,
                started_at: outcome.clock.started_at().to_rfc3339(),
                duration_s: duration.as_secs_f64(),
                target: SummaryTarget {
                    kind: resolved.config.kind.clone(),
                    url: target::redact(&resolved.config.api_url),
                },
                interrupted: outcome.interrupted,
                aborted: outcome.aborted.clone(),
                environment: environment(),
            },
            &thresholds,
        );
        let mut summary = summary;
        crate::probe::attach(&mut summary, probe_outcomes);
        let load_start_s = outcome.load_start_us as f64 / 1e6;
        let shape = fleetbench_report::LoadShape {
            unit: unit.to_string(),
            points: corners.iter().map(|(t, l)| (load_start_s + t, *l)).collect(),
            gauges: outcome
                .gauges
                .iter()
                .map(|&(t, a, f)| (t as f64 / 1e6, a as f64, f as f64))
                .collect(),
        };
        fleetbench_report::rundir::write(&out, &resolved_toml, &summary, &outcome.aggregate, &shape, started_wall)
            .map_err(|e| anyhow::anyhow!(e))?;
        if let Some(reason) = &outcome.aborted {
            eprintln!("run: aborted: {reason} (abort_on_fail)");
        }
        let written: u64 = outcome.rows_written.values().sum();
        let agg = &outcome.aggregate;
        eprintln!(
            "run: {} agents; rows sampled {}, written {written}, unsent {}, dropped {}; uploads {} late, {} dropped, {} abandoned in flight",
            outcome.agents, outcome.rows_sampled, outcome.rows_unsent, outcome.rows_dropped, agg.late, agg.dropped, agg.abandoned
        );
        if agg.late + agg.dropped > 0 {
            eprintln!(
                "run: warning: the generator fell behind the schedule the scenario asked for ({} uploads started over a window late, {} arrivals found no idle agent): the target saw less load than planned; add agents (arrival_rate) or CPU",
                agg.late, agg.dropped
            );
        }
        for t in &summary.thresholds {
            let observed = t.observed.map_or("no samples".into(), |v| format!("{v:.3}"));
            eprintln!("  {} {:<24} {:<22} observed {observed}", if t.pass { "pass" } else { "FAIL" }, t.operation, t.expr);
        }
        crate::probe::print(&summary);
        if cleanup && sharded {
            eprintln!("run: a shard leaves cleanup to the end of the whole run: `fleetbench cleanup --run-id {run_id}` once every shard has ended");
        } else if cleanup {
            clean(&resolved, &run_id, "run").await;
        }
        anyhow::Ok(summary)
    })?;
    println!("{}", out.join("index.html").display());
    if summary.passed() {
        Ok(())
    } else {
        Err(Failure {
            code: EXIT_THRESHOLDS,
            error: anyhow::anyhow!(
                "thresholds crossed: {}{}{}",
                summary
                    .thresholds
                    .iter()
                    .filter(|t| !t.pass)
                    .map(|t| format!("{} {}", t.operation, t.expr))
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::probe::failed(&summary)
                    .map_or(String::new(), |f| format!("; probes failed: {f}")),
                summary
                    .aborted
                    .as_ref()
                    .map_or(String::new(), |r| format!("; the run was aborted: {r}"))
            ),
        })
    }
}

/// Removes the users and rows tagged with `run_id`, saying so (as `who`) on stderr; a failure is
/// reported with the command that finishes the job, not raised.
pub async fn clean(resolved: &target::Resolved, run_id: &str, who: &str) {
    match &resolved.admin_db_url {
        Some(db) => match fleetbench_fleet::cleanup(db, run_id).await {
            Ok(deleted) => {
                let users = deleted
                    .iter()
                    .find(|(t, _)| t == "auth.users")
                    .map_or(0, |d| d.1);
                eprintln!("{who}: cleaned up {users} users and their rows");
            }
            Err(e) => eprintln!(
                "{who}: cleanup failed ({}); run `fleetbench cleanup --run-id {run_id}`",
                fleetbench_stack::db_error_text(&e)
            ),
        },
        None => eprintln!(
            "{who}: no SQL access for cleanup; run `fleetbench cleanup --run-id {run_id}` with SUPABASE_DB_URL set"
        ),
    }
}

/// fleetbench's version and commit, and the machine generating the load.
pub fn environment() -> fleetbench_metrics::summary::Environment {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    fleetbench_metrics::summary::Environment {
        fleetbench_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("FLEETBENCH_GIT_COMMIT").into(),
        os: sysinfo::System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_bytes: sys.total_memory(),
    }
}
