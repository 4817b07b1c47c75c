//! The architecture's claim: "Realtime pushes a Critical Thermal Warning to the dashboard instantly".
//!
//! `subscribers` dashboard users each subscribe to INSERTs on `alerts` filtered to their own
//! `user_id`. From the fleet's load phase on, a thermal anomaly is injected every `interval`
//! (round robin over the users) through the Data API as the device's owner; each must reach its
//! owner's socket exactly once and nobody else's. Per alert: latency from the agent's send
//! (`realtime.alert_delivery` latency) and from the commit (its service time), loss and
//! duplicates. Subscription setup is `realtime.connect`. Halfway, one dashboard drops its socket
//! and subscribes again (a reconnect), and an alert committed while it was away shows whether
//! Realtime replays missed changes. One more socket subscribes to the partitioned
//! `system_metrics` itself, to report the known caveat as measured. A socket the server closes
//! (a restart, a crash) subscribes again on realtime-js's schedule (1 s, 2 s, 5 s, then every
//! 10 s), measured as `realtime.rejoin` from the close to live again.

use std::collections::HashMap;

use fleetbench_metrics::Aggregate;
use fleetbench_metrics::aggregate::histogram;
use fleetbench_metrics::summary::{Figure, ProbeReport};
use fleetbench_scenario::probes::RealtimePlan;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::inject::{self, Key};
use crate::users::{self, User};
use crate::{Context, ProbeOutcome, Timing, figure, latency_figures, ms_at, tally};

mod sockets;
use sockets::{Control, Dropped, PARTITIONED, Receipt, Rejoin, reader, subscribe};

/// When a change arrived (µs on the clock) and its commit timestamp (Unix µs) when given.
type Arrival = (u64, Option<i64>);

/// Who should see what, and what arrived.
#[derive(Default)]
struct Ledger {
    /// Key → (subscriber, agent's send µs).
    sent: HashMap<Key, (usize, u64)>,
    /// (subscriber, key) → receipts.
    got: HashMap<(usize, Key), Vec<Arrival>>,
    foreign: u64,
    partitioned: u64,
}

impl Ledger {
    fn take(&mut self, r: Receipt, users: &[User]) {
        if r.sub == PARTITIONED {
            self.partitioned += 1;
            return;
        }
        if r.user.is_some_and(|u| u != users[r.sub].id) {
            self.foreign += 1;
        }
        if let Some(k) = r.key {
            self.got
                .entry((r.sub, k))
                .or_default()
                .push((r.at_us, r.commit_unix_us));
        }
    }

    /// Every sent alert of `sub` (all subscribers when `None`) has arrived.
    fn complete(&self, sub: Option<usize>) -> bool {
        self.sent
            .iter()
            .filter(|(_, (s, _))| sub.is_none_or(|x| x == *s))
            .all(|(k, (s, _))| self.got.contains_key(&(*s, *k)))
    }
}

/// Takes receipts until `done` holds or `deadline` passes.
async fn pump(
    rx: &mut mpsc::UnboundedReceiver<Receipt>,
    ledger: &mut Ledger,
    users: &[User],
    deadline: Instant,
    done: impl Fn(&Ledger) -> bool,
) {
    while !done(ledger) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => ledger.take(r, users),
            _ => return,
        }
    }
}

/// The dashboards' sockets: each user subscribed to its own alerts, and user 0 to the partitioned
/// table itself, each read by a task of its own.
struct Dashboards {
    /// Per user: what controls its reader, or none when it could not subscribe.
    controls: Vec<Option<mpsc::UnboundedSender<Control>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// Why each dashboard that could not subscribe was refused.
    refused: Vec<String>,
    /// Subscription setup times (µs).
    setup: Histogram<u64>,
    /// The partitioned table's reader's control (kept so the reader lives), or why it was refused.
    partitioned: Result<mpsc::UnboundedSender<Control>, String>,
    /// The sockets the server closed and their rejoins, as the readers log them.
    dropped: std::sync::Arc<std::sync::Mutex<Vec<Dropped>>>,
}

/// The probe users' token refreshes: how many, and why any failed.
#[derive(Default)]
struct Refreshes {
    made: u64,
    failed: Vec<String>,
}

/// Once a second, refreshes each user's token when it is due (as the official clients do) and
/// pushes the new one to the user's channels; runs until aborted.
async fn refresh_tokens(
    target: std::sync::Arc<fleetbench_fleet::Target>,
    users: Vec<User>,
    routes: Vec<(usize, mpsc::UnboundedSender<Control>)>,
    tally: std::sync::Arc<std::sync::Mutex<Refreshes>>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (i, user) in users.iter().enumerate() {
            let refreshed = user.refresh_if_due(&target).await;
            let mut t = tally.lock().expect("refresh tally");
            match refreshed {
                Ok(None) => {}
                Ok(Some(token)) => {
                    t.made += 1;
                    for (_, c) in routes.iter().filter(|(u, _)| *u == i) {
                        let _ = c.send(Control::AccessToken(token.clone()));
                    }
                }
                Err(e) => t.failed.push(e.to_string()),
            }
        }
    }
}

/// Each dashboard's control by user (and the partitioned table's, as user 0), for pushing a
/// refreshed token to its channel.
impl Dashboards {
    fn token_routes(&self) -> Vec<(usize, mpsc::UnboundedSender<Control>)> {
        let mut routes: Vec<(usize, mpsc::UnboundedSender<Control>)> = self
            .controls
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.clone().map(|c| (i, c)))
            .collect();
        if let Ok(c) = &self.partitioned {
            routes.push((0, c.clone()));
        }
        routes
    }
}

/// Subscribes every user's dashboard (a `realtime.connect` sample each) and the partitioned table.
async fn connect(
    ctx: &Context,
    users: &[User],
    tx: &mpsc::UnboundedSender<Receipt>,
    agg: &mut Aggregate,
) -> Dashboards {
    let mut setup = histogram();
    let mut refused = Vec::new();
    let mut controls = Vec::new();
    let mut readers = Vec::new();
    let dropped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rejoin = |user: &User, table: &'static str, topic: String| Rejoin {
        api_url: ctx.target.config.api_url.clone(),
        anon_key: ctx.target.config.anon_key.clone(),
        user: user.clone(),
        table,
        topic,
        log: dropped.clone(),
    };

    let joins = futures_util::future::join_all(users.iter().enumerate().map(|(i, u)| async move {
        let t0 = ctx.clock.now_us();
        let r = subscribe(ctx, u, "alerts", &format!("alerts:{}", u.id)).await;
        (i, t0, ctx.clock.now_us(), r)
    }))
    .await;
    for (i, t0, t1, r) in joins {
        let timing = Timing {
            intended_us: t0,
            sent_us: t0,
            done_us: t1,
        };
        match r {
            Ok(Ok((socket, early))) => {
                ctx.sample(agg, "realtime.connect", timing, None);
                setup.saturating_record((t1 - t0).max(1));
                let (ctl, ctl_rx) = mpsc::unbounded_channel();
                controls.push(Some(ctl));
                readers.push(tokio::spawn(reader(
                    i,
                    socket,
                    ctx.clock,
                    tx.clone(),
                    ctl_rx,
                    early,
                    rejoin(&users[i], "alerts", format!("alerts:{}", users[i].id)),
                )));
            }
            Ok(Err(reason)) => {
                ctx.sample(agg, "realtime.connect", timing, Some("refused"));
                refused.push(reason);
                controls.push(None);
            }
            Err(e) => {
                ctx.sample(agg, "realtime.connect", timing, Some("transport"));
                refused.push(e.to_string());
                controls.push(None);
            }
        }
    }
    // The partitioned table itself, as user 0.
    let partitioned = match subscribe(ctx, &users[0], "system_metrics", "metrics:partitioned").await
    {
        Ok(Ok((socket, early))) => {
            let (keep, ctl_rx) = mpsc::unbounded_channel();
            readers.push(tokio::spawn(reader(
                PARTITIONED,
                socket,
                ctx.clock,
                tx.clone(),
                ctl_rx,
                early,
                rejoin(&users[0], "system_metrics", "metrics:partitioned".into()),
            )));
            Ok(keep)
        }
        Ok(Err(reason)) => Err(reason),
        Err(e) => Err(e.to_string()),
    };
    Dashboards {
        controls,
        readers,
        refused,
        setup,
        partitioned,
        dropped,
    }
}

/// Drops dashboard `sub`'s socket, commits an alert for it while it is away, and subscribes it
/// again: that alert's key (when its injection succeeded), and how long the dashboard took to be
/// live again (ms) and whether it was.
async fn reconnect_one(
    ctx: &Context,
    users: &[User],
    sub: usize,
    ctl: &mpsc::UnboundedSender<Control>,
    agg: &mut Aggregate,
    ledger: &mut Ledger,
) -> (Option<Key>, (f64, bool)) {
    let (closed_tx, closed) = oneshot::channel();
    let _ = ctl.send(Control::Close(closed_tx));
    let _ = closed.await;
    let t0 = ctx.clock.now_us();
    // Committed while the dashboard is away.
    let gap = inject::thermal(&ctx.http, &ctx.target.config, &users[sub])
        .await
        .ok();
    let again = subscribe(
        ctx,
        &users[sub],
        "alerts",
        &format!("alerts:{}", users[sub].id),
    )
    .await;
    let t1 = ctx.clock.now_us();
    let timing = Timing {
        intended_us: t0,
        sent_us: t0,
        done_us: t1,
    };
    let ms = (t1 - t0) as f64 / 1000.0;
    match again {
        Ok(Ok((socket, early))) => {
            ctx.sample(agg, "realtime.connect", timing, None);
            for r in early.iter().filter_map(|f| Receipt::of(sub, t1, f)) {
                ledger.take(r, users);
            }
            let _ = ctl.send(Control::Reopen(Box::new(socket)));
            (gap, (ms, true))
        }
        _ => {
            ctx.sample(agg, "realtime.connect", timing, Some("refused"));
            (gap, (ms, false))
        }
    }
}

/// Sockets the server closed and how long each took to be live again: a `realtime.rejoin` sample
/// each (`gave_up` if it never was), and the times of those that were.
fn rejoins(
    ctx: &Context,
    agg: &mut Aggregate,
    log: &std::sync::Mutex<Vec<Dropped>>,
    end_us: u64,
) -> (Vec<Dropped>, Histogram<u64>) {
    let dropped = std::mem::take(&mut *log.lock().expect("rejoin log"));
    let mut rejoin_ms = histogram();
    for d in &dropped {
        let timing = Timing {
            intended_us: d.closed_us,
            sent_us: d.closed_us,
            done_us: d.rejoined_us.unwrap_or(end_us),
        };
        let error = d.rejoined_us.is_none().then_some("gave_up");
        ctx.sample(agg, "realtime.rejoin", timing, error);
        if let Some(at) = d.rejoined_us {
            rejoin_ms.saturating_record((at - d.closed_us).max(1));
        }
    }
    (dropped, rejoin_ms)
}

/// What the probe saw, for its findings and figures.
struct Seen<'a> {
    users: &'a [User],
    dash: &'a Dashboards,
    ledger: &'a Ledger,
    tally: &'a tally::Tally,
    failed_injections: &'a [String],
    /// The reconnect: ms to be live again, and whether it was.
    reconnect: Option<(f64, bool)>,
    /// Whether the alert committed during the reconnect arrived.
    gap_replayed: Option<bool>,
    dropped: &'a [Dropped],
    rejoin_ms: &'a Histogram<u64>,
    /// Rows user 0 inserted (what the partitioned table's subscription could deliver).
    user0_rows: u64,
    refreshes: &'a Refreshes,
}

/// What the probe saw, in words.
fn findings(s: &Seen) -> Vec<String> {
    let (users, ledger, refused, failed_injections) =
        (s.users, s.ledger, &s.dash.refused, s.failed_injections);
    let (partitioned, dropped, rejoin_ms) = (&s.dash.partitioned, s.dropped, s.rejoin_ms);
    let (reconnect, gap_replayed, user0_rows) = (s.reconnect, s.gap_replayed, s.user0_rows);
    let t = s.tally;
    let (delivered, lost, duplicates) = (t.delivered, t.lost, t.duplicates);
    let (from_send, negative_commit) = (&t.from_send, t.before_commit);
    let sent = ledger.sent.len() as u64;
    let mut findings = Vec::new();
    findings.push(format!(
        "{delivered} of {sent} alerts reached their dashboard ({lost} lost, {duplicates} duplicated, {} delivered to another user's socket); p95 from the agent's send {:.1} ms",
        ledger.foreign,
        ms_at(from_send, 0.95)
    ));
    if !refused.is_empty() {
        findings.push(format!(
            "{} of {} dashboards could not subscribe: {}",
            refused.len(),
            users.len(),
            refused.join("; ")
        ));
    }
    if !s.refreshes.failed.is_empty() {
        findings.push(format!(
            "{} token refreshes failed: {}",
            s.refreshes.failed.len(),
            s.refreshes
                .failed
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if !failed_injections.is_empty() {
        findings.push(format!(
            "{} injections failed at the Data API (not counted as Realtime loss; the probe fails, having sent fewer alerts than asked): {}",
            failed_injections.len(),
            failed_injections
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if negative_commit > 0 {
        findings.push(format!(
            "{negative_commit} alerts arrived before their commit timestamp on this machine's clock: the target's clock runs ahead, so commit-to-receipt times exclude them"
        ));
    }
    if let Some((ms, ok)) = reconnect {
        findings.push(match (ok, gap_replayed) {
            (true, Some(false)) => format!(
                "a dashboard that reconnected ({ms:.0} ms to subscribe again) kept receiving its alerts, but the alert committed while it was away was not replayed: after a reconnect the dashboard must re-read its alerts"
            ),
            (true, Some(true)) => format!(
                "a dashboard that reconnected ({ms:.0} ms to subscribe again) also received the alert committed while it was away"
            ),
            (true, None) => format!("a dashboard reconnected in {ms:.0} ms"),
            (false, _) => "a dashboard that dropped its socket could not subscribe again".into(),
        });
    }
    if !dropped.is_empty() {
        let back = dropped.iter().filter(|d| d.rejoined_us.is_some()).count();
        findings.push(format!(
            "the server closed {} dashboard sockets; {back} subscribed again on realtime-js's schedule (1 s, 2 s, 5 s, 10 s), p50 {:.0} ms from the close to live again; alerts committed meanwhile arrive only if the server replays them",
            dropped.len(),
            ms_at(rejoin_ms, 0.5)
        ));
    }
    findings.push(match &partitioned {
        Ok(_) => format!(
            "a subscription on the partitioned system_metrics went live and delivered {} of the {user0_rows} rows its user inserted",
            ledger.partitioned
        ),
        Err(reason) => format!(
            "a subscription on the partitioned system_metrics is refused (\"{reason}\"): dashboards must subscribe to alerts, as this schema does"
        ),
    });

    findings
}

/// What the probe saw, in figures beside the published ones.
fn figures(s: &Seen) -> Vec<Figure> {
    let (users, ledger, refused) = (s.users, s.ledger, &s.dash.refused);
    let setup = &s.dash.setup;
    let reconnect = s.reconnect;
    let t = s.tally;
    let (delivered, lost, duplicates) = (t.delivered, t.lost, t.duplicates);
    let (from_send, from_commit) = (&t.from_send, &t.from_commit);
    let sent = ledger.sent.len() as u64;
    let mut figures = vec![
        figure(
            "dashboards subscribed",
            (users.len() - refused.len()) as f64,
            "sockets",
            None,
        ),
        figure("alerts injected", sent as f64, "alerts", None),
        figure(
            "injections failed",
            s.failed_injections.len() as f64,
            "alerts",
            None,
        ),
        figure("tokens refreshed", s.refreshes.made as f64, "tokens", None),
        figure(
            "alerts delivered once",
            (delivered - duplicates.min(delivered)) as f64,
            "alerts",
            None,
        ),
        figure("alerts lost", lost as f64, "alerts", None),
        figure("alerts duplicated", duplicates as f64, "alerts", None),
        figure(
            "alerts to another user's socket",
            ledger.foreign as f64,
            "alerts",
            None,
        ),
    ];
    figures.extend(latency_figures("agent send → dashboard", from_send, None));
    figures.extend(latency_figures(
        "commit → dashboard",
        from_commit,
        Some("Postgres Changes with RLS, Micro, 500 clients: p95 228 ms"),
    ));
    figures.push(figure(
        "subscription setup p50",
        ms_at(setup, 0.5),
        "ms",
        None,
    ));
    figures.push(figure(
        "subscription setup p95",
        ms_at(setup, 0.95),
        "ms",
        None,
    ));
    if let Some((ms, _)) = reconnect {
        figures.push(figure("reconnect to live again", ms, "ms", None));
    }
    figures
}

/// What the injections left: the ledger of alerts sent and received, the injections that failed,
/// the rows user 0 inserted, the reconnect and the key of the alert committed during it.
struct Injected {
    ledger: Ledger,
    failed_injections: Vec<String>,
    user0_rows: u64,
    reconnect: Option<(f64, bool)>,
    gap_key: Option<Key>,
}

/// A thermal anomaly every `plan.interval`, round robin over the `live` dashboards' users, taking
/// receipts as they come; halfway, one dashboard reconnects. Returns once every injection settled.
async fn inject_alerts(
    ctx: &Context,
    plan: &RealtimePlan,
    users: &[User],
    dash: &Dashboards,
    live: &[usize],
    rx: &mut mpsc::UnboundedReceiver<Receipt>,
    agg: &mut Aggregate,
) -> Injected {
    let mut ledger = Ledger::default();
    let mut failed_injections = Vec::new();
    let mut user0_rows = 0u64;
    let mut reconnect: Option<(f64, bool)> = None;
    let mut gap_key = None;
    let start = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for n in 0..plan.alerts {
        let at = start + plan.interval * n;
        // Pace the injections while taking receipts (the schedule is an open model).
        pump(rx, &mut ledger, users, at, |_| false).await;
        let sub = live[n as usize % live.len()];
        if plan.reconnect && n == plan.alerts / 2 && sub == live[0] && reconnect.is_none() {
            // Let every earlier alert of this dashboard arrive, then drop its socket.
            while let Some(r) = inflight.join_next().await {
                settle(r, &mut ledger, &mut failed_injections);
            }
            pump(rx, &mut ledger, users, Instant::now() + plan.wait, |l| {
                l.complete(Some(sub))
            })
            .await;
            let ctl = dash.controls[sub].as_ref().expect("live subscriber");
            let (gap, again) = reconnect_one(ctx, users, sub, ctl, agg, &mut ledger).await;
            user0_rows += u64::from(gap.is_some() && sub == 0);
            gap_key = gap;
            reconnect = Some(again);
        }
        let user = users[sub].clone();
        if sub == 0 {
            user0_rows += 1;
        }
        let (clock, http, target) = (ctx.clock, ctx.http.clone(), ctx.target.clone());
        inflight.spawn(async move {
            let sent = clock.now_us();
            let r = inject::thermal(&http, &target.config, &user).await;
            (sub, sent, r)
        });
        // Keep the ledger current so the reconnect knows what was sent.
        while let Some(r) = inflight.try_join_next() {
            settle(r, &mut ledger, &mut failed_injections);
        }
    }
    while let Some(r) = inflight.join_next().await {
        settle(r, &mut ledger, &mut failed_injections);
    }
    Injected {
        ledger,
        failed_injections,
        user0_rows,
        reconnect,
        gap_key,
    }
}

pub async fn run(ctx: &Context, plan: &RealtimePlan) -> anyhow::Result<ProbeOutcome> {
    let users = users::provision(ctx, "realtime", plan.subscribers).await?;
    let mut agg = Aggregate::new(ctx.window_us);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let dash = connect(ctx, &users, &tx, &mut agg).await;

    let live: Vec<usize> = (0..users.len())
        .filter(|&i| dash.controls[i].is_some())
        .collect();
    anyhow::ensure!(
        !live.is_empty(),
        "no dashboard could subscribe: {:?}",
        dash.refused
    );
    // Tokens are kept fresh from the moment the channels are open: the fleet's provisioning (the
    // wait for the load phase) can outlast a short token, and the server closes a channel whose
    // token has expired.
    let tally = std::sync::Arc::new(std::sync::Mutex::new(Refreshes::default()));
    let refresher = tokio::spawn(refresh_tokens(
        ctx.target.clone(),
        users.clone(),
        dash.token_routes(),
        tally.clone(),
    ));
    ctx.started().await;
    let Injected {
        mut ledger,
        failed_injections,
        user0_rows,
        reconnect,
        gap_key,
    } = inject_alerts(ctx, plan, &users, &dash, &live, &mut rx, &mut agg).await;
    // After the last injection, alerts have `wait` to arrive.
    let deadline = Instant::now() + plan.wait;
    pump(&mut rx, &mut ledger, &users, deadline, |l| l.complete(None)).await;
    // Anything else already queued (duplicates, foreign rows, the partitioned socket).
    while let Ok(r) = rx.try_recv() {
        ledger.take(r, &users);
    }
    let end_us = ctx.clock.now_us();
    for r in &dash.readers {
        r.abort();
    }
    refresher.abort();
    let refreshes = std::mem::take(&mut *tally.lock().expect("refresh tally"));
    let (dropped, rejoin_ms) = rejoins(ctx, &mut agg, &dash.dropped, end_us);

    let arrivals: HashMap<Key, Vec<tally::Arrival>> = ledger
        .sent
        .iter()
        .filter_map(|(key, (sub, _))| {
            let got = ledger.got.get(&(*sub, *key))?;
            Some((
                *key,
                got.iter()
                    .map(|(at, c)| (*at, c.map(|c| ctx.on_clock(c))))
                    .collect(),
            ))
        })
        .collect();
    let t = tally::score(
        ctx,
        &mut agg,
        "realtime.alert_delivery",
        ledger
            .sent
            .iter()
            .map(|(k, (_, sent))| (*sent, arrivals.get(k).map(Vec::as_slice))),
        end_us,
    );
    let gap_replayed = gap_key.map(|k| ledger.got.contains_key(&(live[0], k)));

    // An injection that failed is an alert the probe did not get to send: the run did less than
    // asked, so the probe fails (the failures are listed, not counted as Realtime loss).
    let pass = t.lost == 0
        && t.duplicates == 0
        && ledger.foreign == 0
        && dash.refused.is_empty()
        && failed_injections.is_empty()
        && !ledger.sent.is_empty();
    let seen = Seen {
        users: &users,
        dash: &dash,
        ledger: &ledger,
        tally: &t,
        failed_injections: &failed_injections,
        reconnect,
        gap_replayed,
        dropped: &dropped,
        rejoin_ms: &rejoin_ms,
        user0_rows,
        refreshes: &refreshes,
    };
    let (findings, figures) = (findings(&seen), figures(&seen));
    Ok(ProbeOutcome {
        report: ProbeReport {
            claim: "Realtime pushes a \"Critical Thermal Warning\" to the dashboard instantly"
                .into(),
            verdict: if pass { "pass" } else { "fail" }.into(),
            figures,
            findings,
            ..Default::default()
        },
        aggregate: agg,
    })
}

fn settle(
    r: Result<(usize, u64, Result<Key, String>), tokio::task::JoinError>,
    ledger: &mut Ledger,
    failed: &mut Vec<String>,
) {
    match r {
        Ok((sub, sent, Ok(key))) => {
            ledger.sent.insert(key, (sub, sent));
        }
        Ok((_, _, Err(e))) => failed.push(e),
        Err(e) => failed.push(e.to_string()),
    }
}
