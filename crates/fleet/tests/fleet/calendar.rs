//! The calendar's edges through the whole write path: a fleet whose clock reads the last seconds of
//! this month samples on both sides of midnight, and every row lands, each in its month's partition.
//! The server's clock is the real one; the fleet's is moved (`Clock::reading`), so the test does not
//! depend on the day it runs.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Months, Utc};
use fleetbench_fleet::{Clock, Progress};

use crate::common::*;

/// Seconds of load before the fleet's clock reaches midnight; provisioning comes first on the same
/// clock, so this leaves it that long before the boundary falls outside the load phase.
const BEFORE_MIDNIGHT_S: i64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_across_a_months_end_lands_every_row_in_its_month() {
    let _shared = QUIET.read().await;
    let g = gateway(|_| {});
    let this_month = Utc::now().date_naive().with_day(1).unwrap();
    let midnight = (this_month + Months::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let clock = Clock::reading(midnight - chrono::Duration::seconds(BEFORE_MIDNIGHT_S));
    let run_id = uuid::Uuid::new_v4().to_string();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let out = fleetbench_fleet::run_at(
        clock,
        plan(&["load.stages.1.duration=\"5s\""]),
        target(&g),
        run_id.clone(),
        Arc::new(Progress::default()),
        rx,
    )
    .await
    .unwrap();
    let load_start = clock.wall(out.load_start_us);
    assert!(
        load_start < midnight,
        "provisioning took past the fleet's midnight (load began {load_start}): the run did not span it"
    );

    let written: u64 = out.rows_written.values().sum();
    for path in ["rest.insert_metrics", "pooler.insert_metrics"] {
        let c = op(&out, path);
        assert_eq!(c.errors, 0, "{path}: {:?}", c.errors_by_kind);
    }
    assert_eq!(out.rows_dropped, 0);
    assert_eq!(
        out.rows_sampled,
        written + out.rows_unsent,
        "every sampled row was sent or is still in a backlog"
    );
    // Each stored row, with the partition Postgres put it in, against the month of its own time.
    let rows = db()
        .await
        .query(
            "select m.ts, m.tableoid::regclass::text from public.system_metrics m \
             join auth.users u on u.id = m.user_id \
             where u.raw_app_meta_data ->> 'fleetbench_run_id' = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, written, "rows stored = rows written");
    let (mut before, mut after) = (0, 0);
    for row in &rows {
        let (ts, partition): (DateTime<Utc>, String) = (row.get(0), row.get(1));
        let want = format!("system_metrics_{:04}_{:02}", ts.year(), ts.month());
        assert_eq!(partition, want, "a row dated {ts}");
        if ts < midnight {
            before += 1;
        } else {
            after += 1;
        }
    }
    assert!(
        before > 0 && after > 0,
        "rows on both sides of {midnight}: {before} before, {after} after"
    );
    clean_up(&run_id).await;
}
