//! The System Health AI schema against a real stack (one per test binary).
//!
//! Contents:
//! - migrations: apply twice; each file re-runs cleanly.
//! - rls: two users, each sees and writes only their own rows (claims set as PostgREST sets them);
//!   anon sees nothing.
//! - partitions: a row lands in its month; the 7-day query scans only the months it needs (read
//!   from `EXPLAIN`); maintenance keeps the previous month, creates ahead and drops expired
//!   partitions.
//!
//! Rows are dated from the test's own clock, and month arithmetic starts from one instant of it
//! handed to the database, so the tests hold on any day (`scripts/calendar-edges.sh`).
//! - alerts: a hot reading creates exactly one critical thermal alert; the threshold is a setting.
//! - memories: match_memories returns the exact nearest neighbours of the caller's rows only.

mod common;

use chrono::{Datelike, Duration, Months, NaiveDate, Utc};
use common::{Db, as_user, new_device, new_user, user_tx};
use tokio_postgres::types::Type;

#[tokio::test]
async fn migrations_apply_twice() {
    let mut db = Db::connect().await;
    let migrations = fleetbench_schema::load_dir(&common::migrations_dir()).unwrap();
    assert!(
        migrations.len() >= 5,
        "found {} migrations",
        migrations.len()
    );

    let report = fleetbench_schema::apply(&mut db.client, &migrations, &mut |_| {})
        .await
        .unwrap();
    assert!(
        report.applied.is_empty(),
        "second application applied {:?}",
        report.applied
    );
    assert_eq!(report.already_applied, migrations.len());
    let versions = fleetbench_schema::applied_versions(&db.client)
        .await
        .unwrap();
    let expected: Vec<String> = migrations.iter().map(|m| m.version.clone()).collect();
    assert_eq!(versions, expected);

    // The files themselves are safe to run again (as `supabase db reset` followed by a manual re-run would).
    for m in &migrations {
        let tx = db.client.transaction().await.unwrap();
        tx.batch_execute(&m.sql).await.unwrap_or_else(|e| {
            panic!(
                "re-running {}: {}",
                m.name,
                fleetbench_stack::db_error_text(&e)
            )
        });
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn rls_isolates_users() {
    let mut db = Db::connect().await;
    let alice = new_user(&db.client, "rls-alice").await;
    let bob = new_user(&db.client, "rls-bob").await;
    let alice_dev = new_device(&mut db.client, alice).await;
    let bob_dev = new_device(&mut db.client, bob).await;
    let now = Utc::now();

    // Alice writes telemetry for her own device.
    {
        let tx = user_tx(&mut db.client, alice).await;
        for i in 0..3 {
            tx.query_typed(
                "insert into system_metrics (device_id, ts, cpu_pct, cpu_temp_c) values ($1, $2, 10, 50)",
                &[(&alice_dev, Type::UUID), (&(now + Duration::seconds(i)), Type::TIMESTAMPTZ)],
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    // Bob writes his own.
    {
        let tx = user_tx(&mut db.client, bob).await;
        tx.query_typed(
            "insert into system_metrics (device_id, ts, cpu_pct) values ($1, $2, 20)",
            &[(&bob_dev, Type::UUID), (&now, Type::TIMESTAMPTZ)],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    // Each sees exactly their own devices and metrics.
    let (devices, metrics): (Vec<uuid::Uuid>, i64) = as_user(&mut db.client, alice, |tx| {
        Box::pin(async move {
            let d = tx
                .query_typed("select user_id from devices", &[])
                .await
                .unwrap();
            let m = tx
                .query_typed(
                    "select count(*) from system_metrics where device_id = any($1)",
                    &[(&vec![alice_dev, bob_dev], Type::UUID_ARRAY)],
                )
                .await
                .unwrap();
            (d.iter().map(|r| r.get(0)).collect(), m[0].get(0))
        })
    })
    .await;
    assert_eq!(devices, vec![alice]);
    assert_eq!(metrics, 3);

    // Writing as Bob, or onto Bob's device, is refused by the policies (42501).
    for (device, owner) in [(bob_dev, alice), (alice_dev, bob), (bob_dev, bob)] {
        let tx = user_tx(&mut db.client, alice).await;
        let err = tx
            .query_typed(
                "insert into system_metrics (device_id, user_id, ts, cpu_pct) values ($1, $2, $3, 1)",
                &[(&device, Type::UUID), (&owner, Type::UUID), (&now, Type::TIMESTAMPTZ)],
            )
            .await
            .expect_err("cross-user insert must fail");
        assert_eq!(
            err.code().unwrap().code(),
            "42501",
            "device {device} owner {owner}: {err:?}"
        );
    }
    // Updating or deleting Bob's device touches nothing.
    let touched = as_user(&mut db.client, alice, |tx| {
        Box::pin(async move {
            let u = tx
                .execute(
                    "update devices set hostname = 'pwned' where id = $1",
                    &[&bob_dev],
                )
                .await
                .unwrap();
            let d = tx
                .execute("delete from devices where id = $1", &[&bob_dev])
                .await
                .unwrap();
            u + d
        })
    })
    .await;
    assert_eq!(touched, 0);

    // anon has no grants at all.
    let tx = db.client.transaction().await.unwrap();
    tx.batch_execute("set local role anon").await.unwrap();
    let err = tx
        .query_typed("select count(*) from system_metrics", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
}

#[tokio::test]
async fn rows_land_in_their_month_and_the_7_day_query_prunes() {
    let mut db = Db::connect().await;
    let user = new_user(&db.client, "partitions").await;
    let device = new_device(&mut db.client, user).await;
    let now = Utc::now();
    // Past months exist too, so pruning has something to prune.
    for back in 1..=3u32 {
        let month = now.date_naive().with_day(1).unwrap() - Months::new(back);
        db.client
            .query_typed(
                "select fleetbench.ensure_metrics_partition($1)",
                &[(&month, Type::DATE)],
            )
            .await
            .unwrap();
    }
    let tx = user_tx(&mut db.client, user).await;
    let rows = tx
        .query_typed(
            "insert into system_metrics (device_id, ts, cpu_pct) values ($1, $2, 42) returning tableoid::regclass::text",
            &[(&device, Type::UUID), (&now, Type::TIMESTAMPTZ)],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        rows[0].get::<_, String>(0),
        partition_name(now.date_naive())
    );

    // The range is the test's own instant written into the query (not the server's `now()`, which
    // may already be in the next month), so the planner prunes with the bounds computed below.
    let plan = db
        .client
        .query_typed(
            &format!(
                "explain (analyze, format json) select avg(cpu_pct) from system_metrics \
                 where device_id = $1 and ts >= '{}'::timestamptz - interval '7 days' and ts <= '{}'::timestamptz",
                now.to_rfc3339(),
                now.to_rfc3339()
            ),
            &[(&device, Type::UUID)],
        )
        .await
        .unwrap();
    let plan: serde_json::Value = plan[0].get(0);
    let mut scanned = Vec::new();
    collect_relations(&plan, &mut scanned);
    scanned.sort();
    scanned.dedup();
    let mut expected = vec![
        partition_name((now - Duration::days(7)).date_naive()),
        partition_name(now.date_naive()),
    ];
    expected.dedup();
    assert_eq!(scanned, expected, "plan: {plan}");
}

#[tokio::test]
async fn maintenance_creates_ahead_and_drops_expired() {
    let mut db = Db::connect().await;
    // Maintenance is told the test's instant (`p_now`), so the months it works from are the ones
    // computed here even when the server's clock has just crossed into the next month.
    let now = Utc::now();
    let today = now.date_naive();
    let this_month = today.with_day(1).unwrap();
    let next = this_month + Months::new(1);
    let previous = this_month - Months::new(1);
    // Two years back: past the 13 months of retention whatever the month.
    let ancient = this_month - Months::new(24);
    let tx = db.client.transaction().await.unwrap();
    tx.query_typed(
        "select fleetbench.ensure_metrics_partition($1)",
        &[(&ancient, Type::DATE)],
    )
    .await
    .unwrap();
    for gone in [next, previous] {
        tx.batch_execute(&format!(
            "drop table if exists public.{}",
            partition_name(gone)
        ))
        .await
        .unwrap();
    }

    let rows = tx
        .query_typed(
            "select action, partition_name from fleetbench.maintain_metrics_partitions($1)",
            &[(&now, Type::TIMESTAMPTZ)],
        )
        .await
        .unwrap();
    let actions: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(
        actions.contains(&("created".into(), partition_name(next))),
        "{actions:?}"
    );
    // The previous month too: rows sampled before midnight at a month's end arrive after it.
    assert!(
        actions.contains(&("created".into(), partition_name(previous))),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("kept".into(), partition_name(today))),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("dropped".into(), partition_name(ancient))),
        "{actions:?}"
    );
    for ahead in 0..=3 {
        let month = this_month + Months::new(ahead);
        assert!(
            exists(&tx, &partition_name(month)).await,
            "{} missing",
            partition_name(month)
        );
    }
    assert!(!exists(&tx, &partition_name(ancient)).await);

    // Moving the clock: everything 13 or more months before the new current month goes.
    let later = this_month + Months::new(20);
    let later_ts = later.and_hms_opt(12, 0, 0).unwrap().and_utc();
    tx.query_typed(
        "select * from fleetbench.maintain_metrics_partitions($1)",
        &[(&later_ts, Type::TIMESTAMPTZ)],
    )
    .await
    .unwrap();
    assert!(
        !exists(&tx, &partition_name(today)).await,
        "the current month should have expired"
    );
    assert!(exists(&tx, &partition_name(later + Months::new(3))).await);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn hot_reading_creates_one_critical_thermal_alert() {
    let mut db = Db::connect().await;
    let user = new_user(&db.client, "thermal").await;
    let device = new_device(&mut db.client, user).await;
    let now = Utc::now();
    let tx = user_tx(&mut db.client, user).await;
    for (i, temp) in [70.0f32, 94.9, 97.5, 80.0].into_iter().enumerate() {
        tx.query_typed(
            "insert into system_metrics (device_id, ts, cpu_temp_c) values ($1, $2, $3)",
            &[
                (&device, Type::UUID),
                (&(now + Duration::seconds(i as i64)), Type::TIMESTAMPTZ),
                (&temp, Type::FLOAT4),
            ],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let alerts = db
        .client
        .query_typed(
            "select kind, severity, value, user_id from alerts where device_id = $1",
            &[(&device, Type::UUID)],
        )
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].get::<_, String>(0), "thermal");
    assert_eq!(alerts[0].get::<_, String>(1), "critical");
    assert_eq!(alerts[0].get::<_, f32>(2), 97.5);
    assert_eq!(alerts[0].get::<_, uuid::Uuid>(3), user);

    // The threshold is a setting: at 85, a 90 °C reading alerts too.
    let tx = db.client.transaction().await.unwrap();
    tx.batch_execute("select fleetbench.set_setting('thermal_critical_c', '85')")
        .await
        .unwrap();
    tx.batch_execute(&format!(
        "insert into system_metrics (device_id, user_id, ts, cpu_temp_c) values ('{device}', '{user}', now(), 90)"
    ))
    .await
    .unwrap();
    let n: i64 = tx
        .query_typed(
            "select count(*) from alerts where device_id = $1",
            &[(&device, Type::UUID)],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(n, 2);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn match_memories_returns_the_true_nearest_neighbours() {
    use rand::{Rng, SeedableRng};
    let mut db = Db::connect().await;
    let alice = new_user(&db.client, "rag-alice").await;
    let bob = new_user(&db.client, "rag-bob").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let dim = fleetbench_schema::names::EMBEDDING_DIM;
    let centres: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let mut alice_rows: Vec<(i64, Vec<f32>)> = Vec::new();
    for (owner, n) in [(alice, 300), (bob, 300)] {
        for i in 0..n {
            let centre = &centres[i % centres.len()];
            let v: Vec<f32> = centre
                .iter()
                .map(|c| c + rng.random_range(-0.35..0.35))
                .collect();
            let id: i64 = db
                .client
                .query_typed(
                    "insert into memories (user_id, content, embedding) values ($1, $2, $3::text::extensions.vector) returning id",
                    &[(&owner, Type::UUID), (&format!("memory {i}"), Type::TEXT), (&vector_text(&v), Type::TEXT)],
                )
                .await
                .unwrap()[0]
                .get(0);
            if owner == alice {
                alice_rows.push((id, v));
            }
        }
    }
    let query: Vec<f32> = centres[3]
        .iter()
        .map(|c| c + rng.random_range(-0.2..0.2))
        .collect();
    let k = 10;
    let mut exact: Vec<(f64, i64)> = alice_rows
        .iter()
        .map(|(id, v)| (cosine_distance(&query, v), *id))
        .collect();
    exact.sort_by(|a, b| a.0.total_cmp(&b.0));
    let expected: Vec<i64> = exact.iter().take(k).map(|(_, id)| *id).collect();

    let query_text = vector_text(&query);
    let got: Vec<(i64, f64)> = as_user(&mut db.client, alice, |tx| {
        Box::pin(async move {
            tx.query_typed(
                "select id, similarity from match_memories($1::text::extensions.vector, $2)",
                &[(&query_text, Type::TEXT), (&(k as i32), Type::INT4)],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        })
    })
    .await;
    let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, expected);
    for ((_, sim), (dist, _)) in got.iter().zip(&exact) {
        assert!(
            (sim - (1.0 - dist)).abs() < 1e-4,
            "similarity {sim} vs exact {}",
            1.0 - dist
        );
    }
}

fn partition_name(day: NaiveDate) -> String {
    format!("system_metrics_{:04}_{:02}", day.year(), day.month())
}

async fn exists(tx: &tokio_postgres::Transaction<'_>, table: &str) -> bool {
    tx.query_typed(
        "select to_regclass($1) is not null",
        &[(&format!("public.{table}"), Type::TEXT)],
    )
    .await
    .unwrap()[0]
        .get(0)
}

fn collect_relations(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(rel)) = map.get("Relation Name") {
                out.push(rel.clone());
            }
            map.values().for_each(|c| collect_relations(c, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|c| collect_relations(c, out)),
        _ => {}
    }
}

fn vector_text(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

#[tokio::test]
async fn cleanup_run_removes_exactly_that_runs_rows() {
    let mut db = Db::connect().await;
    let run = |id: &str| format!("cleanup-{id}-{}", uuid::Uuid::new_v4());
    let (gone, kept) = (run("a"), run("b"));
    let mut users = Vec::new();
    for run_id in [&gone, &gone, &kept] {
        let user = common::new_user_in_run(&db.client, run_id).await;
        let device = new_device(&mut db.client, user).await;
        let tx = user_tx(&mut db.client, user).await;
        for i in 0..5 {
            tx.query_typed(
                "insert into system_metrics (device_id, ts, cpu_temp_c) values ($1, now() + make_interval(secs => $2), 99)",
                &[(&device, Type::UUID), (&(i as f64), Type::FLOAT8)],
            )
            .await
            .unwrap();
        }
        tx.batch_execute(&format!(
            "insert into memories (content, embedding) values ('m', array_fill(0.5, array[{}])::extensions.vector)",
            fleetbench_schema::names::EMBEDDING_DIM
        ))
        .await
        .unwrap();
        tx.commit().await.unwrap();
        users.push(user);
    }
    let count = |users: Vec<uuid::Uuid>| {
        let sql = "select (select count(*) from system_metrics where user_id = any($1)) \
                        + (select count(*) from alerts where user_id = any($1)) \
                        + (select count(*) from memories where user_id = any($1)) \
                        + (select count(*) from devices where user_id = any($1)) \
                        + (select count(*) from profiles where user_id = any($1)) \
                        + (select count(*) from auth.users where id = any($1))";
        (sql, users)
    };
    let (sql, kept_users) = count(vec![users[2]]);
    let kept_before: i64 = db
        .client
        .query_typed(sql, &[(&kept_users, Type::UUID_ARRAY)])
        .await
        .unwrap()[0]
        .get(0);
    // 5 metrics, 5 alerts (99 °C), 1 memory, 1 device, 1 profile, 1 user.
    assert_eq!(kept_before, 14);

    let report = db
        .client
        .query_typed(
            "select table_name, rows_deleted from fleetbench.cleanup_run($1)",
            &[(&gone, Type::TEXT)],
        )
        .await
        .unwrap();
    let deleted: std::collections::BTreeMap<String, i64> =
        report.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(deleted["system_metrics"], 10);
    assert_eq!(deleted["alerts"], 10);
    assert_eq!(deleted["memories"], 2);
    assert_eq!(deleted["devices"], 2);
    assert_eq!(deleted["auth.users"], 2);

    let (sql, gone_users) = count(users[..2].to_vec());
    let left: i64 = db
        .client
        .query_typed(sql, &[(&gone_users, Type::UUID_ARRAY)])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(left, 0);
    let kept_after: i64 = db
        .client
        .query_typed(sql, &[(&kept_users, Type::UUID_ARRAY)])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(kept_after, kept_before);
}
