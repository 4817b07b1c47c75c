//! Who is listening: sockets (`Conn`) with their outbound queues, joined channels, and the
//! `postgres_changes` subscriptions by table. A queued message carries an acknowledgement the poller
//! waits on before advancing the slot, so a change leaves the slot only once it was written to every
//! socket it was meant for (or that socket was closed, which counts it as lost and says so).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use super::changes::Kind;
use super::filter::Filter;
use super::protocol::Vsn;

/// The identity a channel's changes are authorised with.
#[derive(Debug, Clone)]
pub struct Claims {
    pub role: String,
    pub sub: String,
    pub exp: i64,
    /// The claims as JSON, for `request.jwt.claims`.
    pub json: String,
}

/// Counts outstanding writes of one dispatched batch.
#[derive(Default)]
pub struct Ack {
    remaining: AtomicUsize,
    notify: Notify,
}

impl Ack {
    pub async fn wait(&self) {
        while self.remaining.load(Ordering::Acquire) != 0 {
            self.notify.notified().await;
        }
    }
}

/// A queued frame. Dropping it unwritten counts it as lost on its socket.
pub struct Outbound {
    pub text: String,
    guard: Option<Guard>,
}

struct Guard {
    ack: Arc<Ack>,
    conn: Arc<ConnCounters>,
    written: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.written {
            self.conn.lost.fetch_add(1, Ordering::Relaxed);
        }
        if self.ack.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ack.notify.notify_one();
        }
    }
}

impl Outbound {
    /// The frame's text, moved out for the socket (the acknowledgement stays until `written`).
    pub fn take_text(&mut self) -> String {
        std::mem::take(&mut self.text)
    }

    pub fn written(mut self) {
        if let Some(g) = &mut self.guard {
            g.written = true;
            g.conn.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
pub struct ConnCounters {
    pub delivered: AtomicU64,
    pub lost: AtomicU64,
}

/// One websocket.
pub struct Conn {
    pub id: u64,
    pub vsn: Vsn,
    tx: Option<mpsc::Sender<Outbound>>,
    /// Set with a reason when the server closes the socket (a slow reader, the server stopping).
    pub kill: watch::Sender<Option<String>>,
    pub counters: Arc<ConnCounters>,
    closed: AtomicBool,
}

impl Conn {
    pub fn new(id: u64, vsn: Vsn, queue: usize) -> (Arc<Conn>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let conn = Conn {
            id,
            vsn,
            tx: Some(tx),
            kill: watch::channel(None).0,
            counters: Arc::default(),
            closed: AtomicBool::new(false),
        };
        (Arc::new(conn), rx)
    }

    /// A stand-in for a subscriber that did not come back after a restart: everything sent to it
    /// is counted as lost.
    pub fn lost_sink(id: u64) -> Arc<Conn> {
        Arc::new(Conn {
            id,
            vsn: Vsn::V1,
            tx: None,
            kill: watch::channel(None).0,
            counters: Arc::default(),
            closed: AtomicBool::new(true),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn close(&self, reason: &str) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.kill.send_replace(Some(reason.to_string()));
        }
    }

    /// Queues a frame; a full queue means the client stopped reading, and it is disconnected.
    pub fn send(&self, text: String, ack: Option<&Arc<Ack>>) {
        let guard = ack.map(|a| {
            a.remaining.fetch_add(1, Ordering::AcqRel);
            Guard {
                ack: a.clone(),
                conn: self.counters.clone(),
                written: false,
            }
        });
        let out = Outbound { text, guard };
        let Some(tx) = &self.tx else {
            return; // a lost-sink: the guard's drop counts it
        };
        if self.is_closed() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(out) {
            self.close("the client is not reading: its outbound queue is full");
        }
    }
}

/// A joined channel on a socket.
pub struct Channel {
    pub conn: Arc<Conn>,
    pub topic: String,
    pub join_ref: Option<String>,
    pub claims: Mutex<Arc<Claims>>,
    pub broadcast_self: bool,
}

impl Channel {
    pub fn claims(&self) -> Arc<Claims> {
        self.claims.lock().unwrap().clone()
    }
}

/// One `postgres_changes` binding of a channel.
pub struct Sub {
    pub id: u32,
    pub channel: Arc<Channel>,
    pub schema: String,
    pub table: String,
    /// `None` is `*`.
    pub action: Option<Kind>,
    pub filters: Vec<Filter>,
    /// Only changes committed after the subscription went live (0 for a resumed one)…
    pub since_lsn: u64,
    /// …and up to here (the backlog, for a subscriber that did not return; else `u64::MAX`).
    pub until_lsn: u64,
    pub row_id: i64,
}

impl Sub {
    pub fn wants(&self, kind: Kind) -> bool {
        self.action.is_none_or(|a| a == kind)
    }
}

/// Subscriptions by `(schema, table)`.
pub type ByTable = HashMap<(String, String), Vec<Arc<Sub>>>;

#[derive(Default)]
pub struct Hub {
    subs: RwLock<ByTable>,
    topics: RwLock<HashMap<String, Vec<Arc<Channel>>>>,
}

impl Hub {
    pub fn add_sub(&self, sub: Arc<Sub>) {
        self.subs
            .write()
            .unwrap()
            .entry((sub.schema.clone(), sub.table.clone()))
            .or_default()
            .push(sub);
    }

    /// Removes a channel's subscriptions; returns their database rows.
    pub fn remove_channel(&self, channel: &Arc<Channel>) -> Vec<i64> {
        let mut rows = Vec::new();
        for subs in self.subs.write().unwrap().values_mut() {
            subs.retain(|s| {
                let mine = Arc::ptr_eq(&s.channel, channel);
                if mine {
                    rows.push(s.row_id);
                }
                !mine
            });
        }
        if let Some(chans) = self.topics.write().unwrap().get_mut(&channel.topic) {
            chans.retain(|c| !Arc::ptr_eq(c, channel));
        }
        rows
    }

    /// Removes the subscriptions whose socket is `conn` (the lost-sinks once they are accounted).
    pub fn remove_conn(&self, conn: &Arc<Conn>) -> Vec<Arc<Sub>> {
        let mut gone = Vec::new();
        for subs in self.subs.write().unwrap().values_mut() {
            subs.retain(|s| {
                let mine = Arc::ptr_eq(&s.channel.conn, conn);
                if mine {
                    gone.push(s.clone());
                }
                !mine
            });
        }
        gone
    }

    pub fn add_channel(&self, channel: Arc<Channel>) {
        self.topics
            .write()
            .unwrap()
            .entry(channel.topic.clone())
            .or_default()
            .push(channel);
    }

    pub fn channels(&self, topic: &str) -> Vec<Arc<Channel>> {
        self.topics
            .read()
            .unwrap()
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Runs `f` over the subscriptions under the read lock (no copy per batch).
    pub fn with_subs<R>(&self, f: impl FnOnce(&ByTable) -> R) -> R {
        f(&self.subs.read().unwrap())
    }
}

/// A fixed one-second window counter: Realtime's per-tenant joins and events per second.
pub struct PerSecond {
    limit: Option<u32>,
    window: Mutex<(Instant, u32)>,
}

impl PerSecond {
    pub fn new(limit: Option<u32>) -> PerSecond {
        PerSecond {
            limit,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    pub fn allow(&self) -> bool {
        let Some(limit) = self.limit else { return true };
        let mut w = self.window.lock().unwrap();
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        if w.1 >= limit {
            return false;
        }
        w.1 += 1;
        true
    }
}
