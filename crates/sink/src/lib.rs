//! `fleetbench sink`: a minimal HTTP target with a known latency model, for calibrating the
//! generator. It answers just enough of Supabase for a fleet to run against it (admin users,
//! password and refresh grants, devices, metric inserts; `GET /_sink/insert` shows one recent
//! insert as it arrived; anything else is `200 ok`), and every
//! answer waits for the model: a fixed or uniform service time, plus periodic stalls during which
//! every request waits until the stall ends. With a known model the true latency distribution can
//! be computed, and the generator's numbers checked against it. [`Fault`]s make it misbehave over
//! windows of its life (error statuses, 429 with or without `Retry-After`, answers past a
//! client's timeout, answers broken off, refused refresh grants): the fault-survival tests.
//!
//! # Layout
//! One file, in the order a request meets it: the latency model ([`Latency`], [`Stall`],
//! [`Model`] with its capacity), the [`Fault`] schedule, the [`Sink`] and its counters (the truth
//! tests check against), the request handler, and [`router`] / [`serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng;

/// Service time of every request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    Uniform(Duration, Duration),
}

/// Every `period` (from the sink's start), the first `length` of it is a stall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    pub length: Duration,
    pub period: Duration,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 5ms, 1s, 250us ({e})"))
}

impl std::str::FromStr for Latency {
    type Err = String;
    /// `5ms` (fixed) or `uniform:1ms..9ms`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("uniform:") {
            Some(range) => {
                let (a, b) = range
                    .split_once("..")
                    .ok_or_else(|| format!("{s:?}: expected uniform:MIN..MAX"))?;
                let (a, b) = (duration(a)?, duration(b)?);
                if a > b {
                    return Err(format!("{s:?}: the minimum is above the maximum"));
                }
                Ok(Latency::Uniform(a, b))
            }
            None => Ok(Latency::Fixed(duration(s)?)),
        }
    }
}

impl std::str::FromStr for Stall {
    type Err = String;
    /// `200ms/1s`: a 200 ms stall at the start of every second.
    fn from_str(s: &str) -> Result<Self, String> {
        let (l, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected LENGTH/PERIOD, e.g. 200ms/1s"))?;
        let (length, period) = (duration(l)?, duration(p)?);
        if period.is_zero() || length >= period {
            return Err(format!("{s:?}: the stall must be shorter than its period"));
        }
        Ok(Stall { length, period })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub latency: Latency,
    pub stall: Option<Stall>,
    /// Inserts served per second at most, one after another (a single-server queue): below it an
    /// insert waits for nothing but the model, above it the queue and the latency grow without
    /// bound. The knee a capacity search must find.
    pub capacity: Option<f64>,
}

impl Model {
    /// How long a request arriving `since_start` into the sink's life waits before its answer.
    pub fn delay(&self, since_start: Duration, draw: f64) -> Duration {
        let stall = self.stall.map_or(Duration::ZERO, |s| {
            let into = Duration::from_nanos((since_start.as_nanos() % s.period.as_nanos()) as u64);
            s.length.saturating_sub(into)
        });
        let service = match self.latency {
            Latency::Fixed(d) => d,
            Latency::Uniform(a, b) => a + (b - a).mul_f64(draw),
        };
        stall + service
    }
}

/// What the sink does wrong while a [`Fault`] is on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Inserts answered with this status (a burst of 5xx).
    Status(u16),
    /// Inserts answered 429, with `Retry-After` (whole seconds) when given.
    Throttle(Option<Duration>),
    /// Inserts answered 503 this much later (past a client's timeout), and not counted.
    Slow(Duration),
    /// Insert answers broken off: the status line and headers, then the connection closes.
    Reset,
    /// Refresh grants refused as GoTrue refuses a reused refresh token (400
    /// `refresh_token_already_used`).
    RefreshReuse,
    /// Password grants refused (400 `invalid_credentials`) for every agent whose index (from its
    /// email, `agent-NNNNNN-…`) is a multiple of this: accounts that can never sign in.
    SignInRefused(u32),
}

/// A fault over `[from, to)` of the sink's life: `KIND[:ARG]@FROM..TO`, e.g. `status:503@2s..4s`,
/// `throttle:1s@2s..3s`, `throttle@2s..3s`, `slow:5s@1s..2s`, `reset@2s..3s`, `refresh_reuse@0s..1m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub from: Duration,
    pub to: Duration,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (what, when) = s.split_once('@').ok_or_else(|| {
            format!("{s:?}: expected KIND[:ARG]@FROM..TO, e.g. status:503@2s..4s")
        })?;
        let (from, to) = when
            .split_once("..")
            .ok_or_else(|| format!("{s:?}: the window is FROM..TO, e.g. 2s..4s"))?;
        let (from, to) = (duration(from)?, duration(to)?);
        if from >= to {
            return Err(format!("{s:?}: the window ends before it starts"));
        }
        let (name, arg) = what
            .split_once(':')
            .map_or((what, None), |(n, a)| (n, Some(a)));
        let kind = match (name, arg) {
            ("status", Some(code)) => match code.parse::<u16>() {
                Ok(c) if (400..600).contains(&c) => FaultKind::Status(c),
                _ => {
                    return Err(format!(
                        "{s:?}: status:CODE takes an HTTP error status, 400–599"
                    ));
                }
            },
            ("throttle", after) => FaultKind::Throttle(after.map(duration).transpose()?),
            ("slow", Some(d)) => FaultKind::Slow(duration(d)?),
            ("reset", None) => FaultKind::Reset,
            ("refresh_reuse", None) => FaultKind::RefreshReuse,
            ("signin_refused", Some(n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => FaultKind::SignInRefused(n),
                _ => {
                    return Err(format!(
                        "{s:?}: signin_refused:N takes a whole number from 1"
                    ));
                }
            },
            _ => {
                return Err(format!(
                    "{s:?}: the kinds are status:CODE, throttle[:RETRY_AFTER], slow:DURATION, reset, refresh_reuse, signin_refused:N"
                ));
            }
        };
        Ok(Fault { kind, from, to })
    }
}

pub struct Sink {
    model: Model,
    faults: Vec<Fault>,
    start: Instant,
    /// When the queue's server is next free (with `capacity`).
    free_at: std::sync::Mutex<Instant>,
    pub requests: AtomicU64,
    pub inserts: AtomicU64,
    pub rows: AtomicU64,
    /// When the latest counted insert arrived, in microseconds of the sink's life.
    pub last_insert_us: AtomicU64,
    /// Requests answered with a fault instead (an insert so answered is not counted in `inserts`).
    pub faulted: AtomicU64,
    /// How long the access tokens it issues live (seconds; an hour unless set).
    token_lifetime_s: AtomicU64,
    /// One recent insert as it arrived (headers and body), served at `GET /_sink/insert` so that
    /// a peer tool can be made to send byte-identical requests.
    sampled: std::sync::Mutex<Option<serde_json::Value>>,
}

impl Sink {
    pub fn new(model: Model) -> Arc<Sink> {
        Sink::faulty(model, Vec::new())
    }

    /// A sink that also misbehaves as `faults` say, on its own clock.
    pub fn faulty(model: Model, faults: Vec<Fault>) -> Arc<Sink> {
        Arc::new(Sink {
            model,
            faults,
            faulted: AtomicU64::new(0),
            last_insert_us: AtomicU64::new(0),
            start: Instant::now(),
            free_at: std::sync::Mutex::new(Instant::now()),
            requests: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            sampled: std::sync::Mutex::new(None),
            token_lifetime_s: AtomicU64::new(3600),
        })
    }

    /// Issue access tokens that live `lifetime` (whole seconds, at least one) from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.token_lifetime_s
            .store(lifetime.as_secs().max(1), Relaxed);
    }

    /// When the sink's clock started (its stall schedule is relative to it).
    pub fn started(&self) -> Instant {
        self.start
    }
}

/// A token of the size GoTrue issues (HS256, GoTrue's claims), so that agents hold what they would
/// hold against a real project (memory benchmarks depend on it).
fn access_token(exp: i64) -> String {
    let claims = serde_json::json!({
        "iss": "http://127.0.0.1/auth/v1", "sub": uuid::Uuid::new_v4(), "aud": "authenticated",
        "exp": exp, "iat": exp - 3600, "email": "agent-000000-00000000@fleetbench.load.test", "phone": "",
        "app_metadata": { "provider": "email", "providers": ["email"], "fleetbench_run_id": uuid::Uuid::new_v4() },
        "user_metadata": {}, "role": "authenticated", "aal": "aal1",
        "amr": [{ "method": "password", "timestamp": exp - 3600 }],
        "session_id": uuid::Uuid::new_v4(), "is_anonymous": false,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"fleetbench-sink"),
    )
    .expect("HS256 encoding")
}

/// The agent index in a password grant's email (`agent-000042-…` is 42).
fn agent_index(body: &[u8]) -> Option<u32> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let email = v["email"].as_str()?.to_string();
            email.strip_prefix("agent-")?.get(..6)?.parse().ok()
        })
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(sink): State<Arc<Sink>>,
    method: axum::http::Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let arrived = sink.start.elapsed();
    sink.requests.fetch_add(1, Relaxed);
    let draw: f64 = rand::rng().random();
    let delay = sink.model.delay(arrived, draw);
    // A zero delay skips the timer (whose granularity is a millisecond) altogether.
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = uri.path();
    let fault = sink
        .faults
        .iter()
        .find(|f| (f.from..f.to).contains(&arrived))
        .map(|f| f.kind);
    let refresh = path == "/auth/v1/token" && uri.query() == Some("grant_type=refresh_token");
    let password = path == "/auth/v1/token" && uri.query() == Some("grant_type=password");
    match (fault, path) {
        (Some(FaultKind::SignInRefused(n)), _)
            if password && agent_index(&body).is_some_and(|i| i % n == 0) =>
        {
            sink.faulted.fetch_add(1, Relaxed);
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "code": 400, "error_code": "invalid_credentials",
                                    "msg": "Invalid login credentials" }),
            );
        }
        (Some(FaultKind::RefreshReuse), _) if refresh => {
            sink.faulted.fetch_add(1, Relaxed);
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "code": 400, "error_code": "refresh_token_already_used",
                                    "msg": "Invalid Refresh Token: Already Used" }),
            );
        }
        (
            Some(
                kind @ (FaultKind::Status(_)
                | FaultKind::Throttle(_)
                | FaultKind::Slow(_)
                | FaultKind::Reset),
            ),
            "/rest/v1/system_metrics",
        ) => {
            sink.faulted.fetch_add(1, Relaxed);
            return faulty_answer(kind).await;
        }
        _ => {}
    }
    if let (Some(per_s), "/rest/v1/system_metrics") = (sink.model.capacity, path) {
        // Take the next turn of the server: it serves one insert every 1/capacity seconds.
        let turn = {
            let mut free = sink.free_at.lock().expect("queue lock");
            let start = (*free).max(Instant::now());
            *free = start + Duration::from_secs_f64(1.0 / per_s);
            *free
        };
        tokio::time::sleep_until(turn.into()).await;
    }
    let id = || uuid::Uuid::new_v4().to_string();
    match path {
        "/auth/v1/admin/users" => json(StatusCode::OK, serde_json::json!({ "id": id() })),
        "/auth/v1/token" => {
            let lifetime = sink.token_lifetime_s.load(Relaxed);
            let exp = chrono::Utc::now().timestamp() + lifetime as i64;
            json(
                StatusCode::OK,
                serde_json::json!({
                    "access_token": access_token(exp), "token_type": "bearer", "expires_in": lifetime,
                    "expires_at": exp, "refresh_token": &id()[..22],
                }),
            )
        }
        "/rest/v1/devices" => json(StatusCode::CREATED, serde_json::json!({ "id": id() })),
        "/_sink/insert" if method == axum::http::Method::GET => {
            let sampled = sink.sampled.lock().expect("sample lock").clone();
            match sampled {
                Some(v) => json(StatusCode::OK, v),
                None => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({ "message": "no insert yet" }),
                ),
            }
        }
        "/rest/v1/system_metrics" => {
            let n = sink.inserts.fetch_add(1, Relaxed);
            sink.last_insert_us
                .fetch_max(arrived.as_micros() as u64, Relaxed);
            if n % 1024 == 0 {
                let headers: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .filter(|(k, _)| {
                        *k != axum::http::header::HOST && *k != axum::http::header::CONTENT_LENGTH
                    })
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect();
                *sink.sampled.lock().expect("sample lock") = Some(serde_json::json!({
                    "method": method.as_str(), "path": path, "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                }));
            }
            let rows = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body)
                .map_or(1, |v| v.len() as u64);
            sink.rows.fetch_add(rows, Relaxed);
            StatusCode::CREATED.into_response()
        }
        _ => (StatusCode::OK, "ok").into_response(),
    }
}

/// An insert's answer under a fault (the insert is not counted).
async fn faulty_answer(kind: FaultKind) -> Response {
    match kind {
        FaultKind::Status(code) => json(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            serde_json::json!({ "message": "fault injected by fleetbench sink" }),
        ),
        FaultKind::Throttle(after) => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({ "message": "rate limited by fleetbench sink" }),
            );
            if let Some(after) = after {
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(after.as_secs().max(1)),
                );
            }
            r
        }
        FaultKind::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        // The body fails after the head is written: hyper closes the connection mid-answer.
        FaultKind::Reset | FaultKind::RefreshReuse | FaultKind::SignInRefused(_) => {
            let broken = futures_util::stream::once(async {
                Err::<axum::body::Bytes, std::io::Error>(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                ))
            });
            (StatusCode::CREATED, axum::body::Body::from_stream(broken)).into_response()
        }
    }
}

pub fn router(sink: Arc<Sink>) -> Router {
    Router::new().fallback(handle).with_state(sink)
}

/// Serves `sink` on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, sink: Arc<Sink>) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(sink).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_the_model_is_what_it_says() {
        let m = Model {
            latency: "5ms".parse().unwrap(),
            stall: Some("200ms/1s".parse().unwrap()),
            capacity: None,
        };
        assert_eq!(
            m.delay(Duration::from_millis(50), 0.5),
            Duration::from_millis(155)
        );
        assert_eq!(
            m.delay(Duration::from_millis(1_199), 0.5),
            Duration::from_millis(6)
        );
        assert_eq!(
            m.delay(Duration::from_millis(700), 0.5),
            Duration::from_millis(5)
        );
        let u: Latency = "uniform:1ms..9ms".parse().unwrap();
        assert_eq!(
            Model {
                latency: u,
                stall: None,
                capacity: None,
            }
            .delay(Duration::ZERO, 0.25),
            Duration::from_millis(3)
        );
        for bad in ["5", "fast", "uniform:9ms..1ms", "uniform:1ms"] {
            assert!(bad.parse::<Latency>().is_err(), "{bad}");
        }
        for bad in ["1s/1s", "200ms", "1s/0s"] {
            assert!(bad.parse::<Stall>().is_err(), "{bad}");
        }
        assert_eq!(
            "250us".parse::<Latency>().unwrap(),
            Latency::Fixed(Duration::from_micros(250))
        );
    }

    #[test]
    fn fault_specs_parse_or_say_what_is_wrong() {
        let f: Fault = "status:503@2s..4s".parse().unwrap();
        assert_eq!(
            f,
            Fault {
                kind: FaultKind::Status(503),
                from: Duration::from_secs(2),
                to: Duration::from_secs(4)
            }
        );
        assert_eq!(
            "throttle:1s@0s..1s".parse::<Fault>().unwrap().kind,
            FaultKind::Throttle(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            "throttle@0s..1s".parse::<Fault>().unwrap().kind,
            FaultKind::Throttle(None)
        );
        assert_eq!(
            "slow:3s@0s..1s".parse::<Fault>().unwrap().kind,
            FaultKind::Slow(Duration::from_secs(3))
        );
        assert_eq!(
            "reset@1s..2s".parse::<Fault>().unwrap().kind,
            FaultKind::Reset
        );
        for (bad, says) in [
            ("status:503", "KIND[:ARG]@FROM..TO"),
            ("status:200@1s..2s", "400–599"),
            ("reset@2s..1s", "ends before it starts"),
            ("explode@1s..2s", "the kinds are"),
            ("slow@1s..2s", "the kinds are"),
            ("reset@1s", "FROM..TO"),
        ] {
            let e = bad.parse::<Fault>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
