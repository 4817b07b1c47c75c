//! Supabase Realtime at `/realtime/v1/websocket`: Phoenix channels over a websocket (`vsn` 1.0.0
//! objects or 2.0.0 arrays), `postgres_changes` read from a logical replication slot of publication
//! `supabase_realtime` and filtered per subscriber by Postgres's own row-level security, broadcast
//! between clients, heartbeats, token refresh and expiry, and Realtime's per-tenant limits.
//!
//! # Layout
//! - [`protocol`]: frames in both serializers.
//! - [`socket`]: the handshake and one socket's loop (join, leave, heartbeat, `access_token`,
//!   broadcast, expiry).
//! - [`hub`]: sockets, channels and subscriptions; outbound queues with write acknowledgements.
//! - [`poller`]: the slot poller and dispatch (filters, visibility, ordering, resume after restart).
//! - [`changes`], [`pgoutput`]: decoding the slot into Realtime's change records.
//! - [`filter`]: `column=op.value` filters.
//! - [`store`]: the slot, `realtime.subscription` rows and the visibility function in Postgres.

pub mod changes;
pub mod filter;
pub mod hub;
pub mod pgoutput;
pub mod poller;
pub mod protocol;
pub mod socket;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::Serialize;
use uuid::Uuid;

/// The publication Realtime reads.
pub const PUBLICATION: &str = "supabase_realtime";

/// Realtime's tenant limits (`TENANT_MAX_*`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_joins_per_second: u32,
    pub max_events_per_second: u32,
    pub max_channels_per_client: usize,
}

impl Limits {
    /// The self-hosted tenant's defaults, which the Supabase CLI's local stack keeps.
    pub fn local_defaults() -> Limits {
        Limits {
            max_connections: 200,
            max_joins_per_second: 100,
            max_events_per_second: 100,
            max_channels_per_client: 100,
        }
    }

    /// A hosted plan's limits (channels per connection are 100 on every plan).
    pub fn of_plan(plan: fleetbench_stack::state::Plan) -> Limits {
        let (connections, messages, joins) = plan.realtime_limits();
        Limits {
            max_connections: connections as usize,
            max_joins_per_second: joins,
            max_events_per_second: messages,
            max_channels_per_client: 100,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    pub enabled: bool,
    /// The replication slot this instance polls (one poller per slot).
    pub slot: String,
    /// `poll_interval_ms` (Realtime's default 100 ms).
    pub poll_interval: Duration,
    /// As hosted Realtime's `ReplicationPoller`: poll again at once after consuming changes, and
    /// back off to five intervals when idle (the `hosted` profile); otherwise one interval between
    /// polls whatever happened.
    pub idle_backoff: bool,
    /// As hosted Realtime's temporary slot: changes committed while Realtime was down are not
    /// delivered after a restart (they are counted in `skipped`), and earlier subscriptions are not
    /// resumed (the `hosted` profile). Otherwise the slot is kept and missed changes are replayed.
    pub temporary_slot: bool,
    /// `poll_max_changes` (default 100).
    pub poll_max_changes: i32,
    /// A socket that sends nothing for this long is closed (Phoenix's 60 s).
    pub heartbeat_timeout: Duration,
    /// How long a restarted instance waits for the clients of its earlier subscriptions.
    pub resume_window: Duration,
    /// Frames a socket may have queued before it is dropped as not reading.
    pub max_queue: usize,
    /// How long one frame may take to write.
    pub write_timeout: Duration,
    /// `None`: unlimited.
    pub limits: Option<Limits>,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        RealtimeSettings {
            enabled: true,
            slot: "fleetbench_realtime".into(),
            poll_interval: Duration::from_millis(100),
            idle_backoff: false,
            temporary_slot: false,
            poll_max_changes: 100,
            heartbeat_timeout: Duration::from_secs(60),
            resume_window: Duration::from_secs(15),
            max_queue: 10_000,
            write_timeout: Duration::from_secs(5),
            limits: None,
        }
    }
}

/// Counters served at `/realtime/v1/stats` (service-role key).
#[derive(Default, Serialize)]
pub struct Stats {
    pub connections: AtomicU64,
    /// `postgres_changes` frames queued.
    pub events: AtomicU64,
    /// Changes that could not be delivered and were reported (slow readers, absent resumers).
    pub lost: AtomicU64,
    /// Row changes committed while Realtime was down, never delivered (`temporary_slot`).
    pub skipped: AtomicU64,
    /// Polls of the replication slot that found nothing (the idle cadence is measurable from
    /// outside: each is followed by the idle wait).
    pub idle_polls: AtomicU64,
}

pub struct Realtime {
    pub settings: RealtimeSettings,
    pub keys: crate::keys::ProjectKeys,
    pub instance: Uuid,
    pub hub: hub::Hub,
    pub stats: Stats,
    pub joins: hub::PerSecond,
    pub events: hub::PerSecond,
    pub next_conn: AtomicU64,
    pub stop: tokio::sync::watch::Sender<bool>,
    /// True once earlier subscriptions are loaded, so joins can be matched against them.
    orphans_loaded: tokio::sync::watch::Sender<bool>,
    /// The poller and the sockets still running.
    pub live: tokio::sync::watch::Sender<usize>,
    orphans: std::sync::Mutex<Vec<store::Stored>>,
    orphan_claimed: tokio::sync::Notify,
    pool: deadpool_postgres::Pool,
}

/// Stops the poller and closes every socket, keeping their subscriptions for a restart.
#[derive(Clone)]
pub struct Handle(Arc<Realtime>);

impl Handle {
    pub fn shutdown(&self) {
        self.0.stop.send_replace(true);
    }

    /// Resolves once the poller and every socket have finished after [`Handle::shutdown`].
    pub async fn closed(&self) {
        let mut rx = self.0.live.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Routes at `/realtime/v1` and the poller, started on the current runtime.
pub fn start(
    settings: RealtimeSettings,
    keys: crate::keys::ProjectKeys,
    pool: deadpool_postgres::Pool,
    db_url: String,
) -> (Router, Handle) {
    let limits = settings.limits.clone();
    let rt = Arc::new(Realtime {
        keys,
        instance: Uuid::new_v4(),
        hub: hub::Hub::default(),
        stats: Stats::default(),
        joins: hub::PerSecond::new(limits.as_ref().map(|l| l.max_joins_per_second)),
        events: hub::PerSecond::new(limits.as_ref().map(|l| l.max_events_per_second)),
        next_conn: AtomicU64::new(1),
        stop: tokio::sync::watch::channel(false).0,
        orphans_loaded: tokio::sync::watch::channel(false).0,
        live: tokio::sync::watch::channel(1).0,
        orphans: Default::default(),
        orphan_claimed: Default::default(),
        pool,
        settings,
    });
    let poller_rt = rt.clone();
    tokio::spawn(async move {
        let db = match connect(&db_url, &poller_rt.settings.slot).await {
            Ok(db) => db,
            Err(e) => {
                poller_rt.live.send_modify(|n| *n -= 1);
                poller_rt.orphans_loaded.send_replace(true);
                return tracing::error!(
                    "realtime: cannot start the replication poller on slot {}: {e}",
                    poller_rt.settings.slot
                );
            }
        };
        poller::run(poller_rt.clone(), db).await;
        poller_rt.live.send_modify(|n| *n -= 1);
    });
    let router = Router::new()
        .route("/websocket", get(socket::upgrade))
        .route("/stats", get(stats))
        .with_state(rt.clone());
    (router, Handle(rt))
}

async fn connect(
    db_url: &str,
    slot: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    store::setup(&client, slot).await?;
    Ok(client)
}

async fn stats(State(rt): State<Arc<Realtime>>, headers: HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let key = headers
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if rt.keys.key_role(key) != Some(crate::keys::KeyRole::ServiceRole) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": "service_role key required" })),
        )
            .into_response();
    }
    axum::Json(&rt.stats).into_response()
}

impl Realtime {
    async fn db(&self) -> Result<deadpool_postgres::Object, String> {
        self.pool
            .get()
            .await
            .map_err(|e| format!("DatabaseLackOfConnections: {e}"))
    }

    /// Deletes subscription rows of channels that are gone.
    async fn forget(&self, rows: Vec<i64>) {
        if rows.is_empty() {
            return;
        }
        match self.db().await {
            Ok(db) => {
                if let Err(e) = store::delete(&db, &rows).await {
                    tracing::warn!("realtime: removing subscriptions: {e}");
                }
            }
            Err(e) => tracing::warn!("realtime: removing subscriptions: {e}"),
        }
    }

    /// If a subscription from before the restart has this key, the new one takes its place (and
    /// its backlog). Returns whether one did.
    async fn claim_orphan(&self, db: &tokio_postgres::Client, key: &str) -> bool {
        let mut loaded = self.orphans_loaded.subscribe();
        let _ = loaded.wait_for(|l| *l).await;
        let claimed = {
            let mut orphans = self.orphans.lock().unwrap();
            orphans
                .iter()
                .position(|o| o.resume_key() == key)
                .map(|i| orphans.remove(i))
        };
        let Some(o) = claimed else { return false };
        if let Err(e) = store::delete(db, &[o.row_id]).await {
            tracing::warn!("realtime: removing a resumed subscription's old row: {e}");
        }
        self.orphan_claimed.notify_one();
        true
    }
}
