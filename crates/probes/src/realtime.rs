//! The seed's claim: "Realtime pushes a Critical Thermal Warning to the dashboard instantly".
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
use std::time::Duration;

use fleetbench_metrics::Aggregate;
use fleetbench_metrics::aggregate::histogram;
use fleetbench_metrics::summary::ProbeReport;
use fleetbench_scenario::probes::RealtimePlan;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::inject::{self, Key};
use crate::users::{self, User};
use crate::ws::{self, Socket};
use crate::{Context, ProbeOutcome, Timing, figure, latency_figures, ms_at, tally};

/// How long a subscription may take to go live.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(20);

/// One change a socket received.
struct Receipt {
    /// The subscriber's index, or [`PARTITIONED`].
    sub: usize,
    at_us: u64,
    key: Option<Key>,
    user: Option<Uuid>,
    commit_unix_us: Option<i64>,
}

impl Receipt {
    /// The receipt of a `postgres_changes` frame that arrived at `at_us` on socket `sub`.
    fn of(sub: usize, at_us: u64, frame: &Value) -> Option<Receipt> {
        let (record, commit) = ws::change(frame)?;
        Some(Receipt {
            sub,
            at_us,
            key: inject::key_of(record),
            user: record["user_id"].as_str().and_then(|s| s.parse().ok()),
            commit_unix_us: commit,
        })
    }
}

const PARTITIONED: usize = usize::MAX;

enum Control {
    /// Close the socket and wait for a new one (a reconnect).
    Close(oneshot::Sender<()>),
    Reopen(Box<Socket>),
}

/// realtime-js's reconnect schedule after a socket closed: 1 s, 2 s, 5 s, then every 10 s.
const REJOIN_AFTER: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// A socket the server closed: when, and when it was live again (never, if the probe ended first).
struct Dropped {
    closed_us: u64,
    rejoined_us: Option<u64>,
}

/// What a reader needs to subscribe again on its own.
struct Rejoin {
    api_url: String,
    anon_key: String,
    user: User,
    table: &'static str,
    topic: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<Dropped>>>,
}

impl Rejoin {
    /// Subscribes again on the schedule until live (the new socket and its early frames) or the
    /// probe ends (`None`).
    async fn retry(
        &self,
        clock: fleetbench_fleet::Clock,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Option<(Socket, Vec<Value>)> {
        let closed_us = clock.now_us();
        for attempt in 0.. {
            let wait = REJOIN_AFTER[attempt.min(REJOIN_AFTER.len() - 1)];
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                c = control.recv() => if c.is_none() { break },
            }
            let joined = subscribe_at(
                &self.api_url,
                &self.anon_key,
                &self.user,
                self.table,
                &self.topic,
            )
            .await;
            if let Ok(Ok(live)) = joined {
                self.log.lock().expect("rejoin log").push(Dropped {
                    closed_us,
                    rejoined_us: Some(clock.now_us()),
                });
                return Some(live);
            }
        }
        self.log.lock().expect("rejoin log").push(Dropped {
            closed_us,
            rejoined_us: None,
        });
        None
    }
}

/// Reads a socket until told to stop, forwarding every change; heartbeats on realtime-js's cadence;
/// subscribes again when the server closes it.
async fn reader(
    sub: usize,
    mut socket: Socket,
    clock: fleetbench_fleet::Clock,
    tx: mpsc::UnboundedSender<Receipt>,
    mut control: mpsc::UnboundedReceiver<Control>,
    early: Vec<Value>,
    rejoin: Rejoin,
) {
    let forward = |frame: &Value| {
        if let Some(r) = Receipt::of(sub, clock.now_us(), frame) {
            let _ = tx.send(r);
        }
    };
    early.iter().for_each(forward);
    let mut beat = tokio::time::interval(ws::HEARTBEAT);
    beat.tick().await;
    loop {
        let closed = tokio::select! {
            frame = socket.next() => match frame {
                Some(f) => {
                    forward(&f);
                    false
                }
                None => true,
            },
            _ = beat.tick() => socket.heartbeat().await.is_err(),
            c = control.recv() => match c {
                Some(Control::Close(done)) => {
                    socket.close().await;
                    let _ = done.send(());
                    match control.recv().await {
                        Some(Control::Reopen(s)) => socket = *s,
                        _ => return,
                    }
                    false
                }
                Some(Control::Reopen(s)) => {
                    socket = *s;
                    false
                }
                None => break,
            }
        };
        if closed {
            match rejoin.retry(clock, &mut control).await {
                Some((s, early)) => {
                    socket = s;
                    early.iter().for_each(forward);
                }
                None => return,
            }
        }
    }
}

async fn subscribe(
    ctx: &Context,
    user: &User,
    table: &str,
    topic: &str,
) -> anyhow::Result<Result<(Socket, Vec<Value>), String>> {
    subscribe_at(
        &ctx.target.config.api_url,
        &ctx.target.config.anon_key,
        user,
        table,
        topic,
    )
    .await
}

async fn subscribe_at(
    api_url: &str,
    anon_key: &str,
    user: &User,
    table: &str,
    topic: &str,
) -> anyhow::Result<Result<(Socket, Vec<Value>), String>> {
    let mut socket = Socket::connect(api_url, anon_key).await?;
    let mut early = Vec::new();
    let filter = Some(format!("user_id=eq.{}", user.id));
    Ok(socket
        .subscribe(
            topic,
            &user.token,
            ws::inserts(table, filter),
            SUBSCRIBE_WITHIN,
            &mut early,
        )
        .await?
        .map(|()| (socket, early)))
}

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

pub async fn run(ctx: &Context, plan: &RealtimePlan) -> anyhow::Result<ProbeOutcome> {
    let users = users::provision(ctx, "realtime", plan.subscribers).await?;
    let mut agg = Aggregate::new(ctx.window_us);
    let (tx, mut rx) = mpsc::unbounded_channel();
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
                ctx.sample(&mut agg, "realtime.connect", timing, None);
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
                ctx.sample(&mut agg, "realtime.connect", timing, Some("refused"));
                refused.push(reason);
                controls.push(None);
            }
            Err(e) => {
                ctx.sample(&mut agg, "realtime.connect", timing, Some("transport"));
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

    ctx.started().await;
    let mut ledger = Ledger::default();
    let mut failed_injections = Vec::new();
    let mut user0_rows = 0u64;
    let mut reconnect: Option<(f64, bool)> = None;
    let mut gap_key = None;
    let start = Instant::now();
    let live: Vec<usize> = (0..users.len())
        .filter(|&i| controls[i].is_some())
        .collect();
    anyhow::ensure!(
        !live.is_empty(),
        "no dashboard could subscribe: {refused:?}"
    );
    let mut inflight = tokio::task::JoinSet::new();
    for n in 0..plan.alerts {
        let at = start + plan.interval * n;
        // Pace the injections while taking receipts (the schedule is an open model).
        pump(&mut rx, &mut ledger, &users, at, |_| false).await;
        let sub = live[n as usize % live.len()];
        if plan.reconnect && n == plan.alerts / 2 && sub == live[0] && reconnect.is_none() {
            // Let every earlier alert of this dashboard arrive, then drop its socket.
            while let Some(r) = inflight.join_next().await {
                settle(r, &mut ledger, &mut failed_injections);
            }
            pump(
                &mut rx,
                &mut ledger,
                &users,
                Instant::now() + plan.wait,
                |l| l.complete(Some(sub)),
            )
            .await;
            let ctl = controls[sub].as_ref().expect("live subscriber");
            let (closed_tx, closed) = oneshot::channel();
            let _ = ctl.send(Control::Close(closed_tx));
            let _ = closed.await;
            let t0 = ctx.clock.now_us();
            // Committed while the dashboard is away.
            if let Ok(k) = inject::thermal(&ctx.http, &ctx.target.config, &users[sub]).await {
                gap_key = Some(k);
                user0_rows += u64::from(sub == 0);
            }
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
            match again {
                Ok(Ok((socket, early))) => {
                    ctx.sample(&mut agg, "realtime.connect", timing, None);
                    for r in early.iter().filter_map(|f| Receipt::of(sub, t1, f)) {
                        ledger.take(r, &users);
                    }
                    let _ = ctl.send(Control::Reopen(Box::new(socket)));
                    reconnect = Some(((t1 - t0) as f64 / 1000.0, true));
                }
                _ => {
                    ctx.sample(&mut agg, "realtime.connect", timing, Some("refused"));
                    reconnect = Some(((t1 - t0) as f64 / 1000.0, false));
                }
            }
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
    // After the last injection, alerts have `wait` to arrive.
    let deadline = Instant::now() + plan.wait;
    pump(&mut rx, &mut ledger, &users, deadline, |l| l.complete(None)).await;
    // Anything else already queued (duplicates, foreign rows, the partitioned socket).
    while let Ok(r) = rx.try_recv() {
        ledger.take(r, &users);
    }
    let end_us = ctx.clock.now_us();
    for r in &readers {
        r.abort();
    }
    // Sockets the server closed, and how long each took to be live again.
    let dropped = std::mem::take(&mut *dropped.lock().expect("rejoin log"));
    let mut rejoin_ms = histogram();
    for d in &dropped {
        let timing = Timing {
            intended_us: d.closed_us,
            sent_us: d.closed_us,
            done_us: d.rejoined_us.unwrap_or(end_us),
        };
        let error = d.rejoined_us.is_none().then_some("gave_up");
        ctx.sample(&mut agg, "realtime.rejoin", timing, error);
        if let Some(at) = d.rejoined_us {
            rejoin_ms.saturating_record((at - d.closed_us).max(1));
        }
    }

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
    let (delivered, lost, duplicates) = (t.delivered, t.lost, t.duplicates);
    let (from_send, from_commit, negative_commit) = (t.from_send, t.from_commit, t.before_commit);
    let gap_replayed = gap_key.map(|k| ledger.got.contains_key(&(live[0], k)));

    let sent = ledger.sent.len() as u64;
    let mut findings = Vec::new();
    let pass =
        lost == 0 && duplicates == 0 && ledger.foreign == 0 && refused.is_empty() && sent > 0;
    findings.push(format!(
        "{delivered} of {sent} alerts reached their dashboard ({lost} lost, {duplicates} duplicated, {} delivered to another user's socket); p95 from the agent's send {:.1} ms",
        ledger.foreign,
        ms_at(&from_send, 0.95)
    ));
    if !refused.is_empty() {
        findings.push(format!(
            "{} of {} dashboards could not subscribe: {}",
            refused.len(),
            users.len(),
            refused.join("; ")
        ));
    }
    if !failed_injections.is_empty() {
        findings.push(format!(
            "{} injections failed at the Data API (not counted as Realtime loss): {}",
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
            ms_at(&rejoin_ms, 0.5)
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

    let mut figures = vec![
        figure(
            "dashboards subscribed",
            (users.len() - refused.len()) as f64,
            "sockets",
            None,
        ),
        figure("alerts injected", sent as f64, "alerts", None),
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
    figures.extend(latency_figures("agent send → dashboard", &from_send, None));
    figures.extend(latency_figures(
        "commit → dashboard",
        &from_commit,
        Some("Postgres Changes with RLS, Micro, 500 clients: p95 228 ms"),
    ));
    figures.push(figure(
        "subscription setup p50",
        ms_at(&setup, 0.5),
        "ms",
        None,
    ));
    figures.push(figure(
        "subscription setup p95",
        ms_at(&setup, 0.95),
        "ms",
        None,
    ));
    if let Some((ms, _)) = reconnect {
        figures.push(figure("reconnect to live again", ms, "ms", None));
    }
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
