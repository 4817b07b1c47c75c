//! A dashboard's socket: subscribing as realtime-js does (the join, then `Subscribed to
//! PostgreSQL`), reading it and forwarding every change, heartbeats on realtime-js's cadence, and
//! subscribing again on its schedule when the server closes it.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::Context;
use crate::inject::{self, Key};
use crate::users::User;
use crate::ws::{self, Socket};

/// How long a subscription may take to go live.
pub(super) const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(20);

/// One change a socket received.
pub(super) struct Receipt {
    /// The subscriber's index, or [`PARTITIONED`].
    pub(super) sub: usize,
    pub(super) at_us: u64,
    pub(super) key: Option<Key>,
    pub(super) user: Option<Uuid>,
    pub(super) commit_unix_us: Option<i64>,
}

impl Receipt {
    /// The receipt of a `postgres_changes` frame that arrived at `at_us` on socket `sub`.
    pub(super) fn of(sub: usize, at_us: u64, frame: &Value) -> Option<Receipt> {
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

pub(super) const PARTITIONED: usize = usize::MAX;

pub(super) enum Control {
    /// Close the socket and wait for a new one (a reconnect).
    Close(oneshot::Sender<()>),
    Reopen(Box<Socket>),
    /// The user's token was refreshed: push it to the channel, as realtime-js's `setAuth` does.
    AccessToken(String),
}

/// realtime-js's reconnect schedule after a socket closed: 1 s, 2 s, 5 s, then every 10 s.
pub(super) const REJOIN_AFTER: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// A socket the server closed: when, and when it was live again (never, if the probe ended first).
pub(super) struct Dropped {
    pub(super) closed_us: u64,
    pub(super) rejoined_us: Option<u64>,
}

/// What a reader needs to subscribe again on its own.
pub(super) struct Rejoin {
    pub(super) api_url: String,
    pub(super) anon_key: String,
    pub(super) user: User,
    pub(super) table: &'static str,
    pub(super) topic: String,
    pub(super) log: std::sync::Arc<std::sync::Mutex<Vec<Dropped>>>,
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
pub(super) async fn reader(
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
                Some(Control::AccessToken(t)) => {
                    socket.set_access_token(&rejoin.topic, &t).await.is_err()
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

pub(super) async fn subscribe(
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

pub(super) async fn subscribe_at(
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
            &user.token(),
            ws::inserts(table, filter),
            SUBSCRIBE_WITHIN,
            &mut early,
        )
        .await?
        .map(|()| (socket, early)))
}
