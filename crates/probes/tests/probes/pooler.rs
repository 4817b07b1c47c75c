//! The connection storm: every client is accounted for, the pooler serves them all with no more
//! database connections than its pool, and the direct storm is refused beyond max_connections.

use fleetbench_scenario::probes::PoolerPlan;

use crate::common::{context, db, figure};

#[tokio::test]
async fn the_pooler_absorbs_a_storm_that_the_database_refuses() {
    let _alone = crate::common::SLOTS.write().await;
    let ctx = context();
    let db = db().await;
    let max: i64 = db
        .query_one(
            "select setting::int8 from pg_settings where name = 'max_connections'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let clients = max as u32 + 50;
    let plan = PoolerPlan {
        clients,
        concurrency: 100,
        queries: 2,
        direct: true,
    };
    let out = fleetbench_probes::pooler::run(&ctx, &plan).await.unwrap();
    let r = &out.report;
    let connect = &out.aggregate.operations["pooler.connect"].total;
    assert_eq!(
        (connect.count, connect.errors),
        (u64::from(clients), 0),
        "{r:?}"
    );
    assert_eq!(
        figure(r, "connected through the pooler"),
        f64::from(clients)
    );
    // PgBouncer opens at most its pool for the one user/database pair the storm uses.
    let pool = fleetbench_stack::pooler::PoolMode::Transaction.pool_size();
    let used = figure(r, "database connections used");
    assert!(
        used >= 1.0 && used <= f64::from(pool),
        "{used} vs pool {pool}"
    );
    // Directly, every client is connected or refused, and no more than max_connections connect.
    let direct = &r.tables[0].rows[1];
    let (connected, refused): (u64, u64) = (direct[2].parse().unwrap(), direct[3].parse().unwrap());
    assert_eq!(connected + refused, u64::from(clients));
    assert!(connected < max as u64 && refused >= 50, "{direct:?}");
    assert!(
        r.findings.iter().any(|f| f.contains("db_53300")),
        "{:?}",
        r.findings
    );
    assert_eq!(r.verdict, "pass");
}
