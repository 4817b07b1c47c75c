//! The fleet engine: virtual desktop agents that sign in and stream telemetry the way the real
//! agent does, paced by the scenario's plan, measured from the intended start of every upload.
//!
//! # Layout
//! - [`telemetry`]: device profiles, the daily usage curve, correlated metrics, anomalies (seeded).
//! - [`body`]: the Data API insert body for a batch of rows (the hot path's JSON writer).
//! - [`failure`]: why a call failed, by kind (errors are data).
//! - [`target`]: Auth, the Data API and the transaction pooler as agents call them.
//! - [`http`]: the uploads' HTTP/1.1 client: a capped pool of kept-alive connections.
//! - [`agent`]: one agent's state machine: tokens, backlog, backoff, one upload at a time.
//! - [`calibrate`]: the synthetic model fitted to a recorded trace, and samples of it to compare.
//! - [`collectors`]: real collectors (this machine, read by sysinfo) as agents of their own.
//! - [`clock`]: the run's clock (microseconds since its start, and the wall time it reads).
//! - [`progress`]: live counters and the run's phase, for the display, probes and collectors.
//! - [`provision`]: users, sign-ins and devices, a few agents at a time, with retries; machines.
//! - [`engine`]: a run: provisioning, then the load phase's workers, stop and drain.
//! - `worker`: one worker's agents, schedule and aggregate (the hot loop).
//! - `abort`: `abort_on_fail` thresholds evaluated during the load phase.

mod abort;
pub mod agent;
pub mod body;
pub mod calibrate;
pub mod clock;
pub mod collectors;
pub mod engine;
pub mod failure;
pub mod http;
pub mod progress;
pub mod provision;
pub mod target;
pub mod telemetry;
mod worker;

pub use abort::Live;
pub use clock::Clock;
pub use engine::{RunOutcome, run, run_at};
pub use progress::Progress;
pub use provision::EngineError;
pub use target::{Target, TargetConfig};

/// Rows one cleanup transaction removes at most: a batch commits in well under a second, so a
/// stop signal loses at most one batch's work, and the next cleanup finishes the job.
pub const CLEANUP_BATCH: i32 = 10_000;

/// Removes everything run `run_id` wrote (its users and their rows) through
/// `fleetbench.cleanup_run_batch`, at most `batch` rows per transaction, children before parents
/// and the users last; `on_batch(table, rows removed from it so far)` hears each batch. Returns
/// (table, rows deleted) for every table that had rows. A second call after an interrupted one
/// removes what is left.
pub async fn cleanup(
    db_url: &str,
    run_id: &str,
    batch: i32,
    on_batch: &mut (dyn FnMut(&str, i64) + Send),
) -> Result<Vec<(String, i64)>, fleetbench_tls::pg::PgError> {
    let pg = fleetbench_tls::pg::PgConnect::parse(db_url)?;
    let (client, conn) = pg.config.connect(pg.tls).await?;
    let driver = tokio::spawn(conn);
    let mut deleted: Vec<(String, i64)> = Vec::new();
    loop {
        let rows = client
            .query_typed(
                "select table_name, rows_deleted from fleetbench.cleanup_run_batch($1, $2)",
                &[
                    (&run_id, tokio_postgres::types::Type::TEXT),
                    (&batch, tokio_postgres::types::Type::INT4),
                ],
            )
            .await?;
        let Some(row) = rows.first() else { break };
        let (table, n): (String, i64) = (row.get(0), row.get(1));
        match deleted.last_mut() {
            Some((t, sum)) if *t == table => *sum += n,
            _ => deleted.push((table.clone(), n)),
        }
        on_batch(&table, deleted.last().map_or(n, |d| d.1));
        if n == 0 {
            break;
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(deleted)
}
