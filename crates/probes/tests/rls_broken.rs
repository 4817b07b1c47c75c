//! The rls probe catches a broken policy: in this binary's own stack (a test database no other
//! test shares), `alerts: owner reads` is replaced by one that lets everybody read every alert.
//! The probe must report exactly the attempts that policy opens, and fail.

use std::sync::Arc;

use fleetbench_fleet::{Clock, Target, TargetConfig};
use fleetbench_gateway::GatewayConfig;
use fleetbench_probes::Context;

#[tokio::test]
async fn a_policy_that_lets_everyone_read_alerts_is_reported_as_a_leak() {
    let state = fleetbench_stack::testing::shared(|_| {});
    let dir = fleetbench_stack::testing::workspace_root().join("migrations");
    fleetbench_schema::apply_dir(&state.direct_db_url(), &dir)
        .await
        .unwrap();
    let db = fleetbench_probes::connect(&state.direct_db_url())
        .await
        .unwrap();
    db.batch_execute(
        "drop policy \"alerts: owner reads\" on public.alerts; \
         create policy \"alerts: owner reads\" on public.alerts for select to authenticated using (true); \
         notify pgrst, 'reload schema'",
    )
    .await
    .unwrap();
    let project = fleetbench_stack::ProjectConfig::load(
        &fleetbench_stack::testing::workspace_root().join("supabase"),
    )
    .unwrap();
    let api_url =
        fleetbench_gateway::spawn(|url| GatewayConfig::for_stack(state, &project, url)).unwrap();
    let (_phase, rx) = tokio::sync::watch::channel(1u8);
    let ctx = Context {
        target: Arc::new(
            Target::new(
                TargetConfig {
                    kind: "local".into(),
                    api_url,
                    anon_key: state.secrets.anon_key.clone(),
                    service_key: state.secrets.service_role_key.clone(),
                    db_url: Some(state.pooler_db_url()),
                },
                2,
                4,
            )
            .unwrap(),
        ),
        http: reqwest::Client::new(),
        admin_db_url: Some(state.direct_db_url()),
        pooler_db_url: Some(state.pooler_db_url()),
        direct_db_url: Some(state.direct_db_url()),
        run_id: uuid::Uuid::new_v4().to_string(),
        clock: Clock::new(),
        window_us: 1_000_000,
        phase: rx,
    };
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
