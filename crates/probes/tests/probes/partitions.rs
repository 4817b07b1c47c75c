//! Partitions: rows loaded are counted back, partitions scanned are read from the plan and
//! checked against the months each query's range overlaps, computed here from the calendar.

use fleetbench_scenario::probes::PartitionsPlan;

use crate::common::{context, db, figure, owned};

#[tokio::test]
async fn queries_prune_and_maintenance_keeps_ahead_and_drops_expired() {
    let _slots = crate::common::SLOTS.read().await;
    let ctx = context();
    let plan = PartitionsPlan {
        months: 3,
        rows_per_month: 3000,
        devices: 5,
        repeats: 5,
    };
    let out = fleetbench_probes::partitions::run(&ctx, &plan)
        .await
        .unwrap();
    let r = &out.report;
    // Every loaded row is there; the five rows of the expired month went with their partition.
    assert_eq!(owned(&ctx.run_id, "system_metrics").await, 9000, "{r:?}");
    let db = db().await;
    // The newest row is in the current month: an ordered scan, newest partition first, reads the
    // premade months and the current one.
    let from_now: i64 = db
        .query_one(
            "select count(*) from pg_inherits i join pg_class c on c.oid = i.inhrelid \
             where i.inhparent = 'public.system_metrics'::regclass \
               and to_date(right(c.relname, 7), 'YYYY_MM') >= date_trunc('month', now())::date",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        figure(r, "latest sample: partitions scanned"),
        from_now as f64
    );
    // A range from `now() - N` on overlaps the partitions that end after that instant.
    let ending_after = async |since: &str| -> f64 {
        let n: i64 = db
            .query_one(
                &format!(
                    "select count(*) from pg_inherits i join pg_class c on c.oid = i.inhrelid \
                     where i.inhparent = 'public.system_metrics'::regclass \
                       and to_date(right(c.relname, 7), 'YYYY_MM') + interval '1 month' > (now() - interval '{since}')::date"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n as f64
    };
    assert_eq!(
        figure(r, "7-day average CPU: partitions scanned"),
        ending_after("7 days").await
    );
    assert_eq!(
        figure(r, "24 h hourly max temperature: partitions scanned"),
        ending_after("1 day").await
    );
    // The checks (pruning, next month ahead, 23514 through the Data API, retention) all held.
    let checks = &r.tables[1];
    assert_eq!(checks.rows.len(), 5, "{checks:?}");
    assert!(checks.rows.iter().all(|row| row[3] == "yes"), "{checks:?}");
    assert_eq!(r.verdict, "pass");
    // One row per query per month in the size table, and the unpartitioned copy is gone.
    assert_eq!(r.tables[0].rows.len(), 9);
    let left: i64 = db
        .query_one(
            "select count(*) from pg_tables where schemaname = 'fleetbench' and tablename like 'probe_flat_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
