//! Realtime and webhook delivery: the alerts a dashboard and the receiver must see are the
//! injected anomalies, counted independently in the database.

use std::time::Duration;

use fleetbench_scenario::probes::{RealtimePlan, WebhookPlan};

use crate::common::{context, figure, owned};

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
