//! A scenario's run: the fleet, with its probes and real collectors beside it on the same clock
//! (they measure from the start of the load phase), then the summary, the run directory and the
//! cleanup the scenario asks for. A stop signal ends the fleet's load; the directory is still
//! written.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetbench_fleet::{Clock, Progress, RunOutcome, Target};
use fleetbench_probes::ProbeOutcome;
use fleetbench_scenario::Plan;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::finish::{self, Cleanup};
use crate::{Finished, RunError, RunSpec};

/// SQL connections the fleet keeps for its pooler path.
const POOLER_CONNECTIONS: usize = 16;

/// Runs the scenario to its end (or until `stop`); `say` hears what the run has to report as it
/// goes (probes starting, collectors' accounts).
pub async fn run(
    spec: RunSpec<Plan>,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Finished, RunError> {
    let plan = &spec.plan;
    let target = Arc::new(
        Target::new(
            spec.endpoints.config.clone(),
            POOLER_CONNECTIONS,
            plan.connections as usize,
            plan.request_timeout,
        )
        .map_err(RunError::Target)?,
    );
    let started_wall = SystemTime::now();
    let clock = spec.clock;
    say_mode(&spec, say);
    let statements_before = statements(&spec, say).await;
    let (server_done, server_stop) = watch::channel(false);
    let server = start_server_metrics(&spec, server_stop.clone());
    let (final_summary, export) = start_export(&spec, &progress, server_stop, say);
    let probes = start_probes(&spec, &target, &progress, &stop, say);
    let stop_after = stop.clone();
    let collectors = start_collectors(&spec, &target, &progress, &stop);
    let mut outcome = match fleetbench_fleet::run_at(
        clock,
        plan.clone(),
        target,
        spec.run_id.clone(),
        progress,
        stop,
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            // Provisioning began: whatever it created is removed (or the command to do so said).
            let cleanup = clean_up(&spec, stop_after, say).await;
            say(&cleanup.describe("run", &spec.run_id));
            return Err(e.into());
        }
    };
    let delivery = delivery(plan, &outcome);
    let probe_outcomes = match probes {
        Some(task) => {
            say("run: the load is over; waiting for the probes to finish");
            task.await.unwrap_or_default()
        }
        None => Vec::new(),
    };
    for (_, o) in &probe_outcomes {
        outcome.aggregate.merge(&o.aggregate);
    }
    join_collectors(collectors, &mut outcome.aggregate, say).await;
    for (name, op) in &outcome.aggregate.operations {
        if let Some(e) = op.spill_error() {
            say(&format!(
                "run: {name}: closed windows were kept in memory, not on disk ({e}); set TMPDIR to a writable directory"
            ));
        }
    }
    let _ = server_done.send(true);
    let server = join_server(server, say).await;
    let server = with_statements(&spec, server, statements_before, say).await;
    let mut summary = finish::summary(
        &spec,
        &plan.name,
        &outcome.aggregate,
        Duration::from_micros(outcome.clock.now_us()),
        Some(outcome.load_start_us..outcome.load_end_us),
        // A signal after the load (while the probes ran) interrupts the run too.
        (
            outcome.interrupted || *stop_after.borrow(),
            outcome.aborted.clone(),
        ),
        &plan.thresholds,
        probe_outcomes,
    );
    summary.attach_delivery(delivery);
    summary.shard = (plan.shard.1 > 1).then_some(fleetbench_metrics::summary::Shard {
        index: plan.shard.0,
        count: plan.shard.1,
    });
    finish_export(export, final_summary, &summary, say).await;
    let written = finish::write_dir(
        &spec,
        &summary,
        &outcome.aggregate,
        &load_shape(plan, &outcome),
        server.as_ref(),
        started_wall,
    );
    let cleanup = clean_up(&spec, stop_after, say).await;
    if let Err(e) = written {
        say(&cleanup.describe("run", &spec.run_id));
        return Err(e);
    }
    Ok(Finished {
        summary,
        fleet: Some(outcome),
        cleanup,
    })
}

/// The cleanup the scenario asks for, on every way out of a run once provisioning began: a
/// shard leaves it to the end of the whole run.
async fn clean_up(
    spec: &RunSpec<Plan>,
    stop: watch::Receiver<bool>,
    say: &(dyn Fn(&str) + Sync),
) -> Cleanup {
    match (spec.plan.cleanup, spec.plan.shard.1 > 1) {
        (false, _) => Cleanup::Kept,
        (true, true) => Cleanup::LeftToShards,
        (true, false) => {
            say("run: removing the run's users and rows");
            finish::clean_until(&spec.endpoints, &spec.run_id, stop, say).await
        }
    }
}

/// Which shard this is and which Auth mode the run is in, and why.
fn say_mode(spec: &RunSpec<Plan>, say: &(dyn Fn(&str) + Sync)) {
    if spec.plan.shard.1 > 1 {
        say(&format!(
            "run: shard {}/{} of run {}: agents {} + k·{}; the load starts at {}",
            spec.plan.shard.0,
            spec.plan.shard.1,
            spec.run_id,
            spec.plan.shard.0,
            spec.plan.shard.1,
            spec.clock.started_at().to_rfc3339()
        ));
    }
    say(if spec.endpoints.config.forward_ip {
        "run: Auth: IP address forwarding on: each agent signs in and refreshes as its own address \
         (198.18.0.0/15) with the secret key, so each has its own /token bucket"
    } else {
        "run: Auth: every sign-in and refresh comes from this machine's address and shares its \
         /token bucket (hosted: 150 per 5 min, burst 30); FLEETBENCH_IP_FORWARDING=on with the secret \
         key gives each agent its own"
    });
}

/// The real collectors' samples into `agg`, each collector's account said.
async fn join_collectors(
    collectors: Vec<
        JoinHandle<Result<fleetbench_fleet::collectors::Pushed, fleetbench_fleet::target::Failure>>,
    >,
    agg: &mut fleetbench_metrics::Aggregate,
    say: &(dyn Fn(&str) + Sync),
) {
    for c in collectors {
        match c.await {
            Ok(Ok(pushed)) => {
                say(&format!(
                    "run: real collector: {} samples, {} rows written in {} uploads",
                    pushed.samples, pushed.rows_written, pushed.uploads
                ));
                agg.add_in_order(&pushed.timings);
            }
            Ok(Err(e)) => say(&format!("run: a real collector could not start: {e}")),
            Err(e) => say(&format!("run: a real collector failed: {e}")),
        }
    }
}

/// The server's series once the scraper has stopped; none (said) when the target had no Metrics
/// API.
async fn join_server(
    task: Option<JoinHandle<Result<fleetbench_metrics::server::ServerSeries, String>>>,
    say: &(dyn Fn(&str) + Sync),
) -> Option<fleetbench_metrics::server::ServerSeries> {
    match task?.await {
        Ok(Ok(series)) => Some(series),
        Ok(Err(why)) => {
            say(&format!(
                "run: server metrics: none ({why}); the report has no Server section"
            ));
            None
        }
        Err(_) => None,
    }
}

/// The summary to the live export for its last push, and what the export did, said.
async fn finish_export(
    export: Option<JoinHandle<crate::remote_write::Pushed>>,
    final_summary: tokio::sync::oneshot::Sender<fleetbench_metrics::Summary>,
    summary: &fleetbench_metrics::Summary,
    say: &(dyn Fn(&str) + Sync),
) {
    if let Some(task) = export {
        let _ = final_summary.send(summary.clone());
        if let Ok(pushed) = task.await {
            say(&match pushed.last_error {
                None => format!("run: remote write: {} pushes", pushed.accepted),
                Some(e) => format!(
                    "run: remote write: {} of {} pushes failed (last: {e})",
                    pushed.failed,
                    pushed.failed + pushed.accepted
                ),
            });
        }
    }
}

/// What the fleet delivered of `plan`, judged against `[delivery]` (from the fleet's own samples,
/// before the probes' and collectors' join them). Agents a stop signal kept from starting are not
/// a shortfall: the run says it was interrupted.
fn delivery(plan: &Plan, outcome: &RunOutcome) -> fleetbench_metrics::summary::Delivery {
    let started: u64 = ["rest.insert_metrics", "pooler.insert_metrics"]
        .iter()
        .filter_map(|op| outcome.aggregate.operations.get(*op))
        .map(|o| o.total.count)
        .sum();
    fleetbench_metrics::summary::Delivery {
        agents_planned: u64::from(outcome.agents_planned),
        agents_ran: u64::from(outcome.agents),
        agents_required: plan.delivery.agents,
        uploads_planned: started + outcome.aggregate.dropped,
        uploads_dropped: outcome.aggregate.dropped,
        dropped_allowed: plan.delivery.dropped,
        shortfall: Vec::new(),
    }
    .judge((!outcome.interrupted).then_some(outcome.provision_failure.as_deref()))
}

/// `pg_stat_statements`' counters now, through the run's SQL access (none without it, or when the
/// target has no such view: said once).
async fn statements(
    spec: &RunSpec<Plan>,
    say: &(dyn Fn(&str) + Sync),
) -> Option<crate::server::Counters> {
    let url = spec.endpoints.admin_db_url.as_ref()?;
    match crate::server::statement_counters(url).await {
        Ok(c) => Some(c),
        Err(e) => {
            say(&format!("run: no statement statistics ({e})"));
            None
        }
    }
}

/// The server's series with the statements that took the most time during the run (`before` the
/// counters at its start); a series of statements alone when the target had no Metrics API.
async fn with_statements(
    spec: &RunSpec<Plan>,
    server: Option<fleetbench_metrics::server::ServerSeries>,
    before: Option<crate::server::Counters>,
    say: &(dyn Fn(&str) + Sync),
) -> Option<fleetbench_metrics::server::ServerSeries> {
    let top = match before {
        Some(b) => statements(spec, say)
            .await
            .map(|after| crate::server::top_during(&b, &after, 10))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    match server {
        Some(mut s) => {
            s.statements = top;
            Some(s)
        }
        None if !top.is_empty() => Some(fleetbench_metrics::server::ServerSeries {
            source: crate::redact(&spec.endpoints.config.api_url),
            statements: top,
            ..Default::default()
        }),
        None => None,
    }
}

/// The live export to `[output] prometheus_remote_write`, until `done`, then the summary sent on
/// the returned channel; none when the scenario has no URL.
#[allow(clippy::type_complexity)]
fn start_export(
    spec: &RunSpec<Plan>,
    progress: &Arc<Progress>,
    done: watch::Receiver<bool>,
    say: &(dyn Fn(&str) + Sync),
) -> (
    tokio::sync::oneshot::Sender<fleetbench_metrics::Summary>,
    Option<JoinHandle<crate::remote_write::Pushed>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let Some(url) = &spec.plan.prometheus_remote_write else {
        return (tx, None);
    };
    let rw = match crate::remote_write::RemoteWrite::new(
        url,
        spec.remote_write_auth.clone(),
        &spec.run_id,
        &spec.plan.name,
        spec.plan.shard.0,
    ) {
        Ok(rw) => rw,
        Err(e) => {
            say(&format!("run: remote write: cannot start ({e})"));
            return (tx, None);
        }
    };
    let task = tokio::spawn(crate::remote_write::export(
        rw,
        progress.clone(),
        Arc::new(spec.plan.clone()),
        spec.clock,
        done,
        rx,
    ));
    (tx, Some(task))
}

/// The target's Metrics API scraped every `[output] server_metrics` until `done`; none when the
/// scenario turned it off or the client cannot be built.
fn start_server_metrics(
    spec: &RunSpec<Plan>,
    done: watch::Receiver<bool>,
) -> Option<JoinHandle<Result<fleetbench_metrics::server::ServerSeries, String>>> {
    let every = spec
        .plan
        .server_metrics
        .every(spec.endpoints.config.kind == "remote")?;
    let config = &spec.endpoints.config;
    let api = crate::server::MetricsApi::new(&config.api_url, &config.service_key).ok()?;
    let source = crate::redact(&config.api_url);
    Some(tokio::spawn(crate::server::scrape_until(
        api, source, spec.clock, every, done,
    )))
}

/// The probes of `[probes.*]`, spawned on the run's clock; none when no section is set.
fn start_probes(
    spec: &RunSpec<Plan>,
    target: &Arc<Target>,
    progress: &Progress,
    stop: &watch::Receiver<bool>,
    say: &(dyn Fn(&str) + Sync),
) -> Option<JoinHandle<Vec<(String, ProbeOutcome)>>> {
    let names = spec.plan.probes.names();
    if names.is_empty() {
        return None;
    }
    if !spec.plan.probes.on_shard(spec.plan.shard) {
        say(&format!(
            "run: probes ({}) run once per run, on shard {}: none on this shard",
            names.join(", "),
            spec.plan.probes.shard
        ));
        return None;
    }
    say(&format!(
        "run: probes beside the fleet: {}",
        names.join(", ")
    ));
    let ctx = crate::probe_run::context(
        spec,
        target.clone(),
        spec.plan.window.as_micros().max(1) as u64,
        progress.phase.subscribe(),
    );
    Some(tokio::spawn(fleetbench_probes::run_all(
        spec.plan.probes.clone(),
        Arc::new(ctx),
        stop.clone(),
    )))
}

/// The real collectors beside the fleet, each pushing this machine's readings through the load
/// phase (from its start until it ends or the run is stopped).
fn start_collectors(
    spec: &RunSpec<Plan>,
    target: &Arc<Target>,
    progress: &Progress,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<Result<fleetbench_fleet::collectors::Pushed, fleetbench_fleet::target::Failure>>>
{
    let clock: Clock = spec.clock;
    let (sample, upload) = (spec.plan.sample_interval, spec.plan.upload_interval);
    (0..spec.plan.collectors)
        .map(|i| {
            let (target, run_id) = (target.clone(), spec.run_id.clone());
            let (mut phase, mut stop) = (progress.phase.subscribe(), stop.clone());
            tokio::spawn(async move {
                let _ = phase.wait_for(|p| *p >= 1).await;
                let (tx, until) = watch::channel(false);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = phase.wait_for(|p| *p >= 2) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    let _ = tx.send(true);
                });
                fleetbench_fleet::collectors::push(
                    &target, &run_id, i, sample, upload, clock, until,
                )
                .await
            })
        })
        .collect()
}

/// The planned load for the report (the stages' corners, from the start of the load phase) and
/// the measured gauges.
fn load_shape(plan: &Plan, outcome: &RunOutcome) -> fleetbench_report::LoadShape {
    let unit = match plan.model {
        fleetbench_scenario::LoadModel::ArrivalRate => "uploads/s",
        _ => "active agents",
    };
    let load_start_s = outcome.load_start_us as f64 / 1e6;
    let corners = std::iter::once((0.0, 0.0)).chain(
        plan.stages
            .iter()
            .map(|(end, level)| (end.as_secs_f64(), *level)),
    );
    fleetbench_report::LoadShape {
        unit: unit.to_string(),
        points: corners.map(|(t, l)| (load_start_s + t, l)).collect(),
        gauges: outcome
            .gauges
            .iter()
            .map(|&(t, a, f)| (t as f64 / 1e6, a as f64, f as f64))
            .collect(),
    }
}
