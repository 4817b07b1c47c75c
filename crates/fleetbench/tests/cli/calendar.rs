//! A stack brought up again on a cluster last up months ago (a developer machine kept for a while):
//! `stack up` returns only after the daemon has run the partition maintenance it missed, so a row
//! dated now on the test's clock is accepted the moment `up` returns.

use chrono::{Months, Utc};

use super::*;

async fn connect(dir: &Path) -> tokio_postgres::Client {
    let url = fleetbench_stack::StackState::load(&dir.join("state.json"))
        .unwrap()
        .direct_db_url();
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db
}

/// The cluster as maintenance left it when it last ran `months` ago: every partition of today's
/// gone, those of then in place, and no record of a scheduled run since.
async fn age(db: &tokio_postgres::Client, months: u32) {
    let partitions: Vec<String> = db
        .query(
            "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid \
             where i.inhparent = 'public.system_metrics'::regclass",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for p in partitions {
        db.batch_execute(&format!("drop table public.{p}"))
            .await
            .unwrap();
    }
    let then = Utc::now() - Months::new(months);
    db.query(
        "select * from fleetbench.maintain_metrics_partitions($1)",
        &[&then],
    )
    .await
    .unwrap();
    db.batch_execute("delete from fleetbench.schedule_runs")
        .await
        .unwrap();
}

/// A row dated `ts` for a new user's device, written as the superuser; the partition it landed in.
async fn write_row(
    db: &tokio_postgres::Client,
    ts: chrono::DateTime<Utc>,
) -> Result<String, String> {
    db.query_one(
        "with u as (insert into auth.users (email, email_confirmed_at) \
                    values ('calendar-' || gen_random_uuid() || '@fleetbench.test', now()) returning id), \
              d as (insert into public.devices (user_id, hostname) select id, 'calendar' from u \
                    returning id, user_id) \
         insert into public.system_metrics (device_id, user_id, ts, cpu_pct) \
         select id, user_id, $1, 1 from d returning tableoid::regclass::text",
        &[&ts],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| fleetbench_stack::db_error_text(&e))
}

#[tokio::test]
async fn a_cluster_last_up_months_ago_takes_todays_rows_once_up() {
    let instance = Instance::new("fleetbench-test-calendar-");
    let dir = instance.0.clone();
    ok(fleetbench(&dir, &["stack", "up"]));
    ok(fleetbench(&dir, &["migrate"]));
    {
        let db = connect(&dir).await;
        age(&db, 5).await;
        let refused = write_row(&db, Utc::now()).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("no partition")),
            "the aged cluster has no partition for today: {refused:?}"
        );
    }
    ok(fleetbench(&dir, &["stack", "down"]));

    ok(fleetbench(&dir, &["stack", "up"]));
    let db = connect(&dir).await;
    let now = Utc::now();
    let landed = write_row(&db, now).await;
    assert_eq!(
        landed,
        Ok(format!("system_metrics_{}", now.format("%Y_%m"))),
        "today's row, written as soon as `stack up` returned"
    );
    let runs: i64 = db
        .query_one(
            "select count(*) from fleetbench.schedule_runs \
             where name = 'system-metrics-partitions' and status = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(runs >= 1, "the missed maintenance ran and was recorded");
    ok(fleetbench(&dir, &["stack", "down"]));
    drop(instance);
}
