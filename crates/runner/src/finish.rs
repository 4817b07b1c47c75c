//! The end of every run: the summary from the aggregate and the probes' reports (a failed probe
//! fails the run), the run directory, and the cleanup.

use std::time::{Duration, SystemTime};

use fleetbench_metrics::summary::RunFacts;
use fleetbench_metrics::{Aggregate, Summary};
use fleetbench_probes::ProbeOutcome;
use fleetbench_scenario::threshold::Threshold;

use crate::{Endpoints, RunError, RunSpec};

/// What became of the run's users and rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Cleanup {
    /// Removed: this many users, and this many rows in all (the users' included).
    Done { users: i64, rows: i64 },
    /// Kept on purpose (`output.cleanup = false`, `probe --keep`).
    Kept,
    /// One shard of a sharded run: cleanup waits for the end of the whole run.
    LeftToShards,
    /// No SQL access to clean up with.
    NoSqlAccess,
    /// The cleanup failed: why.
    Failed(String),
    /// A stop signal came before it could finish (the database rolls back what was under way).
    Interrupted,
}

impl Cleanup {
    /// One line for the terminal, as `who` (`run`, `probe`), with the command that finishes the
    /// job where one is needed.
    pub fn describe(&self, who: &str, run_id: &str) -> String {
        let finish = format!("`fleetbench cleanup --run-id {run_id}`");
        match self {
            Cleanup::Done { users, rows } => {
                format!("{who}: cleaned up {users} users and their rows ({rows} rows in all)")
            }
            Cleanup::Kept => format!("{who}: kept its users and rows; {finish} removes them"),
            Cleanup::LeftToShards => format!(
                "{who}: a shard leaves cleanup to the end of the whole run: {finish} once every shard has ended"
            ),
            Cleanup::NoSqlAccess => {
                format!("{who}: no SQL access for cleanup; run {finish} with SUPABASE_DB_URL set")
            }
            Cleanup::Failed(why) => format!("{who}: cleanup failed ({why}); run {finish}"),
            Cleanup::Interrupted => format!(
                "{who}: stopped by a signal before its cleanup finished: {finish} removes the run's users and rows"
            ),
        }
    }
}

/// How long a cleanup may still take once a stop signal has come (before or during it): the run
/// directory is already written, and a stopped run ends within 2 s of the signal.
pub const CLEANUP_AFTER_STOP: Duration = Duration::from_secs(1);

/// [`clean`], given at most [`CLEANUP_AFTER_STOP`] after a stop signal; then left, and said
/// (every batch already committed stays removed).
pub async fn clean_until(
    endpoints: &Endpoints,
    run_id: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    say: &(dyn Fn(&str) + Sync),
) -> Cleanup {
    let cleaning = clean_saying(endpoints, run_id, say);
    tokio::pin!(cleaning);
    tokio::select! {
        c = &mut cleaning => c,
        _ = stop.wait_for(|s| *s) => tokio::time::timeout(CLEANUP_AFTER_STOP, cleaning)
            .await
            .unwrap_or(Cleanup::Interrupted),
    }
}

/// Removes the users and rows tagged with `run_id`, quietly.
pub async fn clean(endpoints: &Endpoints, run_id: &str) -> Cleanup {
    clean_saying(endpoints, run_id, &|_| {}).await
}

/// How often a long cleanup says how far it is.
const CLEANUP_PROGRESS: Duration = Duration::from_secs(5);

/// Removes the users and rows tagged with `run_id` in batches: [`clean_tables`], summed up.
pub async fn clean_saying(
    endpoints: &Endpoints,
    run_id: &str,
    say: &(dyn Fn(&str) + Sync),
) -> Cleanup {
    let Some(db) = &endpoints.admin_db_url else {
        return Cleanup::NoSqlAccess;
    };
    match clean_tables(db, run_id, say).await {
        Ok(deleted) => Cleanup::Done {
            users: deleted
                .iter()
                .find(|(t, _)| t == "auth.users")
                .map_or(0, |d| d.1),
            rows: deleted.iter().map(|d| d.1).sum(),
        },
        Err(e) => Cleanup::Failed(e.to_string()),
    }
}

/// Removes the users and rows tagged with `run_id` from the database at `db` in batches
/// ([`fleetbench_fleet::CLEANUP_BATCH`] rows a transaction), saying every few seconds how many
/// rows of which table are gone: the rows each table lost.
pub async fn clean_tables(
    db: &str,
    run_id: &str,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, i64)>, fleetbench_tls::pg::PgError> {
    let mut last = std::time::Instant::now();
    let mut progress = |table: &str, n: i64| {
        if last.elapsed() >= CLEANUP_PROGRESS {
            last = std::time::Instant::now();
            say(&format!("cleanup: {table}: {n} rows removed so far"));
        }
    };
    fleetbench_fleet::cleanup(db, run_id, fleetbench_fleet::CLEANUP_BATCH, &mut progress).await
}

/// The summary of a run that lasted `duration` (its load phase `load`, µs on the run's clock, if it
/// had a fleet): the aggregate judged against `thresholds`, with the probes' reports attached.
#[allow(clippy::too_many_arguments)]
pub fn summary<P>(
    spec: &RunSpec<P>,
    scenario: &str,
    agg: &Aggregate,
    duration: Duration,
    load: Option<std::ops::Range<u64>>,
    (interrupted, aborted): (bool, Option<String>),
    thresholds: &[Threshold],
    probes: Vec<(String, ProbeOutcome)>,
) -> Summary {
    let mut summary = Summary::new(
        agg,
        RunFacts {
            run_id: spec.run_id.clone(),
            scenario: scenario.to_string(),
            started_at: spec.clock.started_at().to_rfc3339(),
            duration_s: duration.as_secs_f64(),
            load_phase: load.map(|us| fleetbench_metrics::summary::LoadPhase {
                started_at: spec.clock.wall(us.start).to_rfc3339(),
                duration_s: (us.end - us.start) as f64 / 1e6,
            }),
            target: spec.endpoints.summary_target(),
            interrupted,
            aborted,
            environment: spec.environment.clone(),
        },
        thresholds,
    );
    attach(&mut summary, probes);
    summary
}

/// Puts the probes' reports into the summary; a failed probe fails the run.
fn attach(summary: &mut Summary, outcomes: Vec<(String, ProbeOutcome)>) {
    for (name, o) in outcomes {
        summary.probes.insert(name, o.report);
    }
    if failed_probes(summary).is_some() {
        summary.verdict = "fail".into();
    }
}

/// The failed probes' names, if any.
pub fn failed_probes(summary: &Summary) -> Option<String> {
    let names: Vec<&str> = summary
        .probes
        .iter()
        .filter(|(_, p)| p.verdict == "fail")
        .map(|(n, _)| n.as_str())
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// Writes every file of the run directory.
pub fn write_dir<P>(
    spec: &RunSpec<P>,
    summary: &Summary,
    agg: &Aggregate,
    shape: &fleetbench_report::LoadShape,
    server: Option<&fleetbench_metrics::server::ServerSeries>,
    started: SystemTime,
) -> Result<(), RunError> {
    fleetbench_report::rundir::write(
        &spec.out,
        &spec.resolved_toml,
        summary,
        agg,
        shape,
        server,
        started,
    )
    .map_err(RunError::RunDir)
}
