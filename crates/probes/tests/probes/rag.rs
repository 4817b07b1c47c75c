//! RAG: the probe's exact neighbours are Postgres's own exact answer, and its recall is scored
//! against them.

use fleetbench_probes::rag::{Corpus, SEED, exact_top_k, vector_text};
use fleetbench_scenario::probes::RagPlan;

use crate::common::{context, db, figure, owned};

#[tokio::test]
async fn recall_is_scored_against_exact_search() {
    let _slots = crate::common::SLOTS.read().await;
    let ctx = context();
    let plan = RagPlan {
        users: 2,
        memories: 500,
        clusters: 5,
        k: 10,
        queries: 30,
        rate: 60.0,
        ef_search: vec![10, 1000],
    };
    let out = fleetbench_probes::rag::run(&ctx, &plan).await.unwrap();
    let r = &out.report;
    assert_eq!(owned(&ctx.run_id, "memories").await, 1000);
    let calls = &out.aggregate.operations["rpc.match_memories"].total;
    assert_eq!((calls.count, calls.errors), (30, 0), "{r:?}");

    // The truth the probe scores against equals Postgres's exact search (no index) on the same rows,
    // for every query.
    let corpus = Corpus::generate(&plan, SEED);
    let mut db = db().await;
    for (u, q) in &corpus.queries {
        let tx = db.transaction().await.unwrap();
        tx.batch_execute("set local enable_indexscan = off; set local enable_bitmapscan = off")
            .await
            .unwrap();
        let rows = tx
            .query(
                "select m.content from public.memories m join auth.users u on u.id = m.user_id \
                 where u.email like $1 and u.raw_app_meta_data ->> 'fleetbench_run_id' = $2 \
                 order by m.embedding operator(extensions.<=>) $3::text::extensions.vector limit 10",
                &[&format!("probe-rag-{u:04}-%"), &ctx.run_id, &vector_text(q)],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut sql: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut ours = exact_top_k(&corpus.memories[*u], q, 10);
        sql.sort();
        ours.sort();
        assert_eq!(sql, ours);
    }
    let mean = figure(r, "recall@10 mean");
    assert!((0.0..=1.0).contains(&mean), "{mean}");
    // An exhaustive ef_search finds the exact neighbours.
    let sweep = &r.tables[0];
    let exhaustive = sweep.rows.iter().find(|row| row[0] == "1000").unwrap();
    assert!(exhaustive[1].parse::<f64>().unwrap() >= 0.99, "{sweep:?}");
    assert_eq!(r.verdict, "pass", "{r:?}");
}
