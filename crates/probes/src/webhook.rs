//! The architecture's claim: "Edge Functions react to anomalies". A thermal anomaly is injected through the
//! Data API; the `alerts` trigger raises the alert, the database webhook (pg_net) posts it after
//! commit to `anomaly-webhook`, which forwards it to fleetbench's [`crate::receiver`]. Each alert
//! must arrive exactly once: latency from the agent's send (`functions.webhook_delivery`) and from
//! the alert's creation (its service time), loss and duplicates.

use std::collections::HashMap;
use std::time::Duration;

use fleetbench_metrics::Aggregate;
use fleetbench_metrics::summary::ProbeReport;
use fleetbench_scenario::probes::WebhookPlan;
use tokio::time::Instant;

use crate::inject::{self, Key};
use crate::receiver::{self, Receiver};
use crate::{Context, ProbeOutcome, figure, latency_figures, tally};

/// Where deliveries are read: (URL, key to present). The in-process receiver answers readers
/// with a token of this run's own; the project's service key is presented only to the project's
/// own host over https, or to this machine, never to any other host a scenario names.
async fn receiver_url(ctx: &Context, plan: &WebhookPlan) -> anyhow::Result<(String, String)> {
    if let Some(addr) = plan.listen {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let url = receiver::serve(addr, Receiver::new(vec![token.clone()])).await?;
        return Ok((url, token));
    }
    if let Some(url) = &plan.receiver {
        let key = if key_may_go_to(url, &ctx.target.config.api_url) {
            ctx.target.config.service_key.clone()
        } else {
            String::new()
        };
        return Ok((url.clone(), key));
    }
    anyhow::ensure!(
        ctx.target.config.kind == "local",
        "against a remote project the webhook's far end must be reachable from it: set probes.webhook.listen (and point the function secret ANOMALY_WEBHOOK_URL at that address) or probes.webhook.receiver"
    );
    Ok((
        ctx.api(receiver::PATH),
        ctx.target.config.service_key.clone(),
    ))
}

/// Whether the service key may be presented to the receiver at `receiver`: the target's own host
/// over https, or this machine's loopback.
fn key_may_go_to(receiver: &str, api_url: &str) -> bool {
    let (Ok(r), Ok(api)) = (url::Url::parse(receiver), url::Url::parse(api_url)) else {
        return false;
    };
    let loopback = match r.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    let own_host = r.host_str().is_some_and(|h| Some(h) == api.host_str());
    loopback || (r.scheme() == "https" && own_host)
}

/// `plan.alerts` thermal anomalies, one every `plan.interval`, round robin over `users`: when each
/// alert's key was sent (µs on the clock), and the injections that failed.
async fn inject_alerts(
    ctx: &Context,
    plan: &WebhookPlan,
    users: &[crate::users::User],
) -> (HashMap<Key, u64>, Vec<String>) {
    let start = Instant::now();
    let mut sent: HashMap<Key, u64> = HashMap::new();
    let mut failed = Vec::new();
    let mut inflight = tokio::task::JoinSet::new();
    for n in 0..plan.alerts {
        tokio::time::sleep_until(start + plan.interval * n).await;
        let user = users[n as usize % users.len()].clone();
        let (clock, http, target) = (ctx.clock, ctx.http.clone(), ctx.target.clone());
        inflight.spawn(async move {
            let at = clock.now_us();
            (at, inject::thermal(&http, &target.config, &user).await)
        });
    }
    while let Some(r) = inflight.join_next().await {
        match r {
            Ok((at, Ok(k))) => {
                sent.insert(k, at);
            }
            Ok((_, Err(e))) => failed.push(e),
            Err(e) => failed.push(e.to_string()),
        }
    }

    (sent, failed)
}

/// The receiver's deliveries after `seq` until every sent alert arrived or `plan.wait` passed:
/// per key, (receipt, the alert's creation) µs on the clock; and how many deliveries were of other
/// alerts.
async fn receipts(
    ctx: &Context,
    plan: &WebhookPlan,
    (url, key): (&str, &str),
    mut seq: u64,
    sent: &HashMap<Key, u64>,
) -> anyhow::Result<(HashMap<Key, Vec<tally::Arrival>>, u64)> {
    let mut got: HashMap<Key, Vec<tally::Arrival>> = HashMap::new();
    let mut others = 0u64;
    let deadline = Instant::now() + plan.wait;
    while sent.keys().any(|k| !got.contains_key(k)) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        for d in receiver::read(&ctx.http, url, key, seq, left.min(Duration::from_secs(5))).await? {
            seq = seq.max(d.seq);
            let alert = &d.body["alert"];
            match inject::key_of(alert).filter(|k| sent.contains_key(k)) {
                Some(k) => got.entry(k).or_default().push((
                    ctx.on_clock(d.received_at_us),
                    alert["created_at"]
                        .as_str()
                        .and_then(inject::parse_ts)
                        .map(|c| ctx.on_clock(c)),
                )),
                None => others += 1,
            }
        }
    }
    Ok((got, others))
}

pub async fn run(ctx: &Context, plan: &WebhookPlan) -> anyhow::Result<ProbeOutcome> {
    let (url, key) = receiver_url(ctx, plan).await?;
    // Deliveries already there belong to earlier runs.
    let seq = receiver::read(&ctx.http, &url, &key, 0, Duration::ZERO)
        .await?
        .iter()
        .map(|d| d.seq)
        .max()
        .unwrap_or(0);
    let users = crate::users::provision(ctx, "webhook", 2).await?;
    let mut agg = Aggregate::new(ctx.window_us);
    ctx.started().await;

    let (sent, failed) = inject_alerts(ctx, plan, &users).await;
    let (got, others) = receipts(ctx, plan, (&url, &key), seq, &sent).await?;
    let end_us = ctx.clock.now_us();

    let t = tally::score(
        ctx,
        &mut agg,
        "functions.webhook_delivery",
        sent.iter()
            .map(|(k, at)| (*at, got.get(k).map(Vec::as_slice))),
        end_us,
    );
    let (delivered, lost, duplicates) = (t.delivered, t.lost, t.duplicates);
    let (from_send, from_created) = (t.from_send, t.from_commit);
    let mut findings = vec![format!(
        "{delivered} of {} alerts reached the webhook receiver through anomaly-webhook ({lost} lost, {duplicates} duplicated)",
        sent.len()
    )];
    if !failed.is_empty() {
        findings.push(format!(
            "{} injections failed at the Data API (not counted as webhook loss): {}",
            failed.len(),
            failed
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if others > 0 {
        findings.push(format!(
            "{others} other deliveries reached the receiver meanwhile (alerts of the fleet's own anomalies)"
        ));
    }
    let mut figures = vec![
        figure("alerts injected", sent.len() as f64, "alerts", None),
        figure(
            "delivered once",
            (delivered - duplicates.min(delivered)) as f64,
            "alerts",
            None,
        ),
        figure("lost", lost as f64, "alerts", None),
        figure("duplicated", duplicates as f64, "alerts", None),
    ];
    figures.extend(latency_figures("agent send → receiver", &from_send, None));
    figures.extend(latency_figures(
        "alert created → receiver",
        &from_created,
        Some("pg_net sends after commit, asynchronously (no published latency)"),
    ));
    let pass = lost == 0 && duplicates == 0 && !sent.is_empty();
    Ok(ProbeOutcome {
        report: ProbeReport {
            claim: "Edge Functions fire webhooks on anomalies".into(),
            verdict: if pass { "pass" } else { "fail" }.into(),
            figures,
            findings,
            ..Default::default()
        },
        aggregate: agg,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_service_key_goes_to_the_projects_own_host_over_https_or_to_this_machine() {
        let api = "https://abc.supabase.co";
        let may = |r: &str| super::key_may_go_to(r, api);
        assert!(may("https://abc.supabase.co/functions/v1/receiver"));
        assert!(may("http://127.0.0.1:8787/fleetbench/v1/webhook-receiver"));
        assert!(may("http://[::1]:8787/x") && may("http://localhost:1/x"));
        assert!(
            !may("http://abc.supabase.co/functions/v1/receiver"),
            "plain http"
        );
        assert!(!may("https://collector.example/hook"), "another host");
        assert!(
            !may("https://collector.example#@abc.supabase.co/"),
            "another host, disguised"
        );
        assert!(!may("not a url"));
    }
}
