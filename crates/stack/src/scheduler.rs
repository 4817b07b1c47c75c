//! The pg_cron stand-in. Jobs are the rows of `fleetbench.schedules` (the same rows the migrations
//! hand to `cron.schedule` on hosted projects); schedules are pg_cron's: five-field cron patterns,
//! `@hourly`-style aliases, or `N seconds`. Each run is recorded in `fleetbench.schedule_runs`, like
//! `cron.job_run_details`, and announced with `NOTIFY fleetbench_schedule_runs`.
//!
//! A job is run once as soon as the scheduler first sees it (the stack may have been down when it
//! was due), then on its schedule. `NOTIFY fleetbench_schedules` makes it re-read the table at once.
//! `caught_up` turns true once that first pass has run, so the daemon can serve clients only after
//! the jobs missed while the stack was down (a cluster last up months ago gets this month's
//! partition before the first row arrives).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use tokio_postgres::Client;

use crate::{Result, StackError, db_error_text};

/// Re-read the schedules at least this often even without a notification.
const RELOAD_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<Cron>),
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule> {
        let t = text.trim();
        if let Some(n) = t
            .strip_suffix("seconds")
            .or_else(|| t.strip_suffix("second"))
        {
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|_| bad_schedule(text, "expected `N seconds`"))?;
            if !(1..=59).contains(&n) {
                return Err(bad_schedule(text, "pg_cron takes 1 to 59 seconds"));
            }
            return Ok(Schedule::Every(Duration::from_secs(n)));
        }
        if !t.starts_with('@') && t.split_whitespace().count() != 5 {
            return Err(bad_schedule(
                text,
                "pg_cron patterns have five fields: minute hour day month weekday",
            ));
        }
        Cron::from_str(t)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| bad_schedule(text, &e.to_string()))
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(after + chrono::Duration::from_std(*d).ok()?),
            Schedule::Cron(c) => c.find_next_occurrence(&after, false).ok(),
        }
    }
}

fn bad_schedule(text: &str, why: &str) -> StackError {
    StackError::Config(format!("schedule {text:?}: {why}"))
}

#[derive(Debug, Clone)]
struct Job {
    /// The schedule as written in the table, to notice changes without re-parsing.
    text: String,
    schedule: Schedule,
    command: String,
    next: DateTime<Utc>,
}

/// Runs until `shutdown` resolves. Connection failures (the database restarting) are retried.
/// `caught_up` is set once the jobs due at start have run.
pub async fn run(
    db_url: String,
    shutdown: tokio::sync::watch::Receiver<bool>,
    caught_up: tokio::sync::watch::Sender<bool>,
) {
    crate::listen::supervise("scheduler", shutdown, |stop| {
        let (db_url, caught_up) = (db_url.clone(), caught_up.clone());
        async move { run_connected(&db_url, stop, &caught_up).await }
    })
    .await
}

async fn run_connected(
    db_url: &str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    caught_up: &tokio::sync::watch::Sender<bool>,
) -> Result<()> {
    let mut listening = crate::listen::Listening::connect(db_url, "fleetbench_schedules").await?;
    let client = &listening.client;
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    loop {
        reload(client, &mut jobs).await?;
        let now = Utc::now();
        for (name, job) in jobs.iter_mut().filter(|(_, j)| j.next <= now) {
            record_run(client, name, &job.command).await?;
            job.next = job
                .schedule
                .next_after(Utc::now())
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
        }
        caught_up.send_replace(true);
        let earliest = jobs
            .values()
            .map(|j| j.next)
            .min()
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let wait = (earliest - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(RELOAD_EVERY);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(()) = listening.wakeups.recv() => {}
            _ = shutdown.changed() => break Ok(()),
        }
        listening.check("scheduler")?;
    }
}

/// Merges the table into `jobs`: new jobs are due now, changed schedules are re-planned, removed
/// jobs dropped. A missing table (migrations not applied yet) means no jobs.
async fn reload(client: &Client, jobs: &mut BTreeMap<String, Job>) -> Result<()> {
    let rows = match client
        .query_typed(
            "select name, schedule, command from fleetbench.schedules",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Vec::new(),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME) => {
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let mut seen = Vec::new();
    for row in rows {
        let (name, schedule_text, command): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        seen.push(name.clone());
        if jobs
            .get(&name)
            .is_some_and(|j| j.text == schedule_text && j.command == command)
        {
            continue;
        }
        let schedule = match Schedule::parse(&schedule_text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("scheduler: job {name}: {e}");
                continue;
            }
        };
        // A changed job is re-planned from now; a new one is due at once.
        let next = match jobs.contains_key(&name) {
            true => schedule
                .next_after(Utc::now())
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            false => Utc::now(),
        };
        jobs.insert(
            name,
            Job {
                text: schedule_text,
                schedule,
                command,
                next,
            },
        );
    }
    jobs.retain(|name, _| seen.contains(name));
    Ok(())
}

async fn record_run(client: &Client, name: &str, command: &str) -> Result<()> {
    let started = Utc::now();
    let outcome = client.batch_execute(command).await;
    let (status, message) = match &outcome {
        Ok(()) => ("succeeded", None),
        Err(e) => ("failed", Some(db_error_text(e))),
    };
    tracing::info!("scheduler: {name} {status}");
    client
        .query_typed(
            "insert into fleetbench.schedule_runs (name, started_at, finished_at, status, message) \
             values ($1, $2, now(), $3, $4)",
            &[
                (&name, tokio_postgres::types::Type::TEXT),
                (&started, tokio_postgres::types::Type::TIMESTAMPTZ),
                (&status, tokio_postgres::types::Type::TEXT),
                (&message, tokio_postgres::types::Type::TEXT),
            ],
        )
        .await?;
    client
        .batch_execute(&format!(
            "notify fleetbench_schedule_runs, '{}'",
            name.replace('\'', "''")
        ))
        .await?;
    Ok(())
}
