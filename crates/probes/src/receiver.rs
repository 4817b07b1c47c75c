//! fleetbench's webhook receiver: the far end of the alert webhook (`anomaly-webhook` forwards each
//! alert to `ANOMALY_WEBHOOK_URL`). Records every POST with its arrival time; lists them to readers
//! (`GET ?after=SEQ&wait_ms=N` long-polls until something newer arrives). The local stack's daemon
//! serves one at `/fleetbench/v1/webhook-receiver`; `probes.webhook.listen` runs one in-process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const PATH: &str = "/fleetbench/v1/webhook-receiver";

/// Deliveries kept; older ones are dropped (and counted) beyond it.
const KEEP: usize = 10_000;
/// The largest delivery taken (an alert is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub seq: u64,
    /// Arrival, Unix µs.
    pub received_at_us: i64,
    pub body: Value,
}

#[derive(Default)]
struct Log {
    next: u64,
    dropped: u64,
    items: std::collections::VecDeque<Delivery>,
}

pub struct Receiver {
    log: Mutex<Log>,
    arrived: tokio::sync::Notify,
    /// Readers must present one of these as `apikey` when there are any (the stack's service-role
    /// and secret keys).
    keys: Vec<String>,
}

impl Receiver {
    pub fn new(keys: Vec<String>) -> Arc<Receiver> {
        Arc::new(Receiver {
            log: Mutex::new(Log::default()),
            arrived: tokio::sync::Notify::new(),
            keys,
        })
    }

    fn after(&self, seq: u64) -> Vec<Delivery> {
        let log = self.log.lock().expect("receiver log");
        log.items.iter().filter(|d| d.seq > seq).cloned().collect()
    }
}

#[derive(Deserialize)]
struct Read {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

async fn receive(State(r): State<Arc<Receiver>>, body: axum::body::Bytes) -> StatusCode {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    {
        let mut log = r.log.lock().expect("receiver log");
        log.next += 1;
        let seq = log.next;
        log.items.push_back(Delivery {
            seq,
            received_at_us: chrono::Utc::now().timestamp_micros(),
            body,
        });
        if log.items.len() > KEEP {
            log.items.pop_front();
            log.dropped += 1;
        }
    }
    r.arrived.notify_waiters();
    StatusCode::NO_CONTENT
}

async fn list(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    Query(q): Query<Read>,
) -> Result<Json<Vec<Delivery>>, StatusCode> {
    let presented = headers.get("apikey").and_then(|v| v.to_str().ok());
    if !r.keys.is_empty() && !r.keys.iter().any(|k| Some(k.as_str()) == presented) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.min(30_000));
    loop {
        // Registered before reading, so an arrival between the read and the wait is not missed.
        let arrived = r.arrived.notified();
        let items = r.after(q.after);
        if !items.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(items));
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return Ok(Json(r.after(q.after)));
        }
    }
}

pub fn router(r: Arc<Receiver>) -> Router {
    Router::new()
        .route(PATH, post(receive).get(list))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(r)
}

/// Serves a receiver on `addr`; returns its URL (with [`PATH`]).
pub async fn serve(addr: std::net::SocketAddr, r: Arc<Receiver>) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}{PATH}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(r)).await;
    });
    Ok(url)
}

/// Reads deliveries after `seq` from a receiver's URL, waiting up to `wait` for a new one.
pub async fn read(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    after: u64,
    wait: Duration,
) -> anyhow::Result<Vec<Delivery>> {
    let res = http
        .get(format!("{url}?after={after}&wait_ms={}", wait.as_millis()))
        .header("apikey", key)
        .timeout(wait + Duration::from_secs(10))
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "the webhook receiver at {url} answered {}",
        res.status()
    );
    Ok(res.json().await?)
}
