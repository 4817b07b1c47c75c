//! RLS with the project's policies: every attempt on another user's rows is refused.

use crate::common::{context, figure};

#[tokio::test]
async fn every_attempt_on_another_users_rows_is_refused() {
    let _slots = crate::common::SLOTS.read().await;
    let ctx = context();
    let out = fleetbench_probes::rls::run(&ctx).await.unwrap();
    let r = &out.report;
    let attempts = &r.tables[0].rows;
    assert!(
        attempts
            .iter()
            .all(|a| a[2].starts_with("refused") || a[2].starts_with("held")),
        "{attempts:#?}"
    );
    // Data API (5 reads, 8 writes, match_memories, 4 with the anon key, 1 forged), SQL as the user
    // (4 reads, 4 writes), Realtime (forged join, filtered, unfiltered), and the check of B's rows.
    assert_eq!(attempts.len(), 31, "{attempts:#?}");
    assert_eq!(figure(r, "leaked"), 0.0);
    assert_eq!(r.verdict, "pass");
}
