//! Realtime and webhook delivery: the alerts a dashboard and the receiver must see are the
//! injected anomalies, counted independently in the database.

use std::time::Duration;

use fleetbench_scenario::probes::{RealtimePlan, WebhookPlan};

use crate::common::{context, context_at, figure, owned, stack};

#[tokio::test]
async fn every_injected_alert_reaches_its_dashboard_once() {
    let _slots = crate::common::SLOTS.read().await;
    let ctx = context();
    let plan = RealtimePlan {
        subscribers: 4,
        alerts: 24,
        interval: Duration::from_millis(40),
        wait: Duration::from_secs(15),
        reconnect: true,
    };
    let out = fleetbench_probes::realtime::run(&ctx, &plan).await.unwrap();
    let r = &out.report;
    // The truth: alerts the trigger raised for the probe's users, read from the database. One
    // more than the deliveries owed: the alert committed while a dashboard was reconnecting.
    let alerts = owned(&ctx.run_id, "alerts").await;
    assert_eq!(alerts, i64::from(plan.alerts) + 1, "{r:?}");
    let delivery = &out.aggregate.operations["realtime.alert_delivery"].total;
    assert_eq!(delivery.count, u64::from(plan.alerts), "{r:?}");
    assert_eq!(delivery.errors, 0, "{r:?}");
    assert_eq!(figure(r, "alerts lost"), 0.0);
    assert_eq!(figure(r, "alerts duplicated"), 0.0);
    assert_eq!(figure(r, "alerts to another user's socket"), 0.0);
    assert_eq!(r.verdict, "pass", "{r:?}");
    // Subscriptions: one per dashboard and the reconnect.
    let connect = &out.aggregate.operations["realtime.connect"].total;
    assert_eq!((connect.count, connect.errors), (5, 0));
    // Latency from the send is at least latency from the commit.
    assert!(figure(r, "agent send → dashboard p50") >= figure(r, "commit → dashboard p50"));
    assert!(
        r.findings
            .iter()
            .any(|f| f.contains("partitioned system_metrics")),
        "{:?}",
        r.findings
    );
}

/// Tokens that live 4 s, over a probe three times as long: the users refresh at half a lifetime and
/// push each new token to their channels, as realtime-js does, so no injection is refused and no
/// channel is closed for an expired token; every alert arrives.
#[tokio::test]
async fn dashboards_outlive_their_first_tokens() {
    let _slots = crate::common::SLOTS.read().await;
    let project = fleetbench_stack::ProjectConfig::load(
        &fleetbench_stack::testing::workspace_root().join("supabase"),
    )
    .unwrap();
    let url = fleetbench_gateway::spawn(|url| {
        let mut c = fleetbench_gateway::GatewayConfig::for_stack(stack(), &project, url);
        c.auth.jwt_expiry_s = 4;
        c.realtime.slot = "rt_short_tokens".into();
        c
    })
    .unwrap();
    let ctx = context_at(&url);
    let plan = RealtimePlan {
        subscribers: 2,
        alerts: 30,
        interval: Duration::from_millis(400),
        wait: Duration::from_secs(10),
        reconnect: false,
    };
    let out = fleetbench_probes::realtime::run(&ctx, &plan).await.unwrap();
    let r = &out.report;
    assert_eq!(
        owned(&ctx.run_id, "alerts").await,
        i64::from(plan.alerts),
        "{r:?}"
    );
    assert_eq!(figure(r, "injections failed"), 0.0, "{r:?}");
    assert_eq!(figure(r, "alerts lost"), 0.0, "{r:?}");
    // 12 s of injections with 4 s tokens: each user refreshed at least five times.
    assert!(figure(r, "tokens refreshed") >= 10.0, "{r:?}");
    assert_eq!(r.verdict, "pass", "{r:?}");
}

#[tokio::test]
async fn every_injected_alert_reaches_the_webhook_receiver_once() {
    let _slots = crate::common::SLOTS.read().await;
    let ctx = context();
    let plan = WebhookPlan {
        alerts: 10,
        interval: Duration::from_millis(50),
        wait: Duration::from_secs(30),
        receiver: Some(crate::common::receiver().to_string()),
        listen: None,
    };
    let out = fleetbench_probes::webhook::run(&ctx, &plan).await.unwrap();
    let r = &out.report;
    assert_eq!(owned(&ctx.run_id, "alerts").await, 10);
    let d = &out.aggregate.operations["functions.webhook_delivery"].total;
    assert_eq!((d.count, d.errors), (10, 0), "{r:?}");
    assert_eq!(figure(r, "delivered once"), 10.0);
    assert_eq!(r.verdict, "pass", "{r:?}");
}
