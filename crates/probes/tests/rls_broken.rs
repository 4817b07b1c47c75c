//! The rls probe catches a broken policy: in this binary's own stack (a test database no other
//! test shares), `alerts: owner reads` is replaced by one that lets everybody read every alert.
//! The probe must report exactly the attempts that policy opens, and fail.

// The probes binary's fixtures; this binary uses some of them.
#[allow(dead_code)]
#[path = "probes/common.rs"]
mod common;

#[tokio::test]
async fn a_policy_that_lets_everyone_read_alerts_is_reported_as_a_leak() {
    let db = common::db().await;
    db.batch_execute(
        "drop policy \"alerts: owner reads\" on public.alerts; \
         create policy \"alerts: owner reads\" on public.alerts for select to authenticated using (true); \
         notify pgrst, 'reload schema'",
    )
    .await
    .unwrap();
    let ctx = common::context();
    let out = fleetbench_probes::rls::run(&ctx).await.unwrap();
    let r = &out.report;
    let leaked: Vec<String> = r.tables[0]
        .rows
        .iter()
        .filter(|a| a[2].starts_with("LEAKED"))
        .map(|a| format!("{}: {}", a[0], a[1]))
        .collect();
    assert_eq!(
        leaked,
        [
            "Data API: read B's alerts",
            "SQL as the user: read B's alerts",
            "Realtime: B's alerts on a channel filtered to B",
            "Realtime: B's alerts on an unfiltered channel",
        ],
        "{:#?}",
        r.tables[0].rows
    );
    assert_eq!(r.verdict, "fail");
    assert!(r.findings.iter().any(|f| f.starts_with("SECURITY FAILURE")));
}
