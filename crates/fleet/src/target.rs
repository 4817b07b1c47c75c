//! The system under test as the agents reach it: Supabase Auth and the Data API over HTTP (one
//! shared `reqwest` client and its connection pool for the whole fleet), and SQL through the
//! transaction-mode pooler (`SUPABASE_DB_URL`; unnamed statements only). Every call returns either
//! its value or a [`Failure`] whose `kind` is what the run counts errors by.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use tokio_postgres::types::Type;

pub use crate::failure::Failure;

/// Where the fleet points. Secrets live here and nowhere in the run's outputs.
#[derive(Clone)]
pub struct TargetConfig {
    /// `local` or `remote`.
    pub kind: String,
    pub api_url: String,
    pub anon_key: String,
    pub service_key: String,
    /// The transaction-mode pooler, for the `pooler` ingestion path.
    pub db_url: Option<String>,
    /// The project forwards client addresses (IP address forwarding): sign-ins and refreshes that
    /// name an agent's address go with the secret key (`service_key`) and `Sb-Forwarded-For`, so
    /// that each agent has its own Auth bucket, as real desktops do.
    pub forward_ip: bool,
    /// The project's `/token` limit per client address, when known: calls not forwarded wait for
    /// a client-side bucket of the same shape, so that a fleet from one address paces its
    /// sign-ins and refreshes instead of meeting 429s.
    pub auth_limit: Option<AuthLimit>,
}

/// A project's `/token` limit per client address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuthLimit {
    /// Calls per five minutes (`[auth.rate_limit] token_refresh`; hosted default 150).
    pub per_5min: u32,
    /// The bucket's size (GoTrue's 30).
    pub burst: u32,
}

impl AuthLimit {
    /// The hosted default: 150 per 5 minutes, burst 30.
    pub const HOSTED: AuthLimit = AuthLimit {
        per_5min: 150,
        burst: 30,
    };

    pub fn per_second(self) -> f64 {
        f64::from(self.per_5min) / 300.0
    }
}

/// The client side of GoTrue's `/token` bucket: each call reserves a token (the bucket may go
/// below zero: the caller then waits until its token has refilled), and a 429 empties it.
/// Hand-written: a reservation over one number, which `governor` would need its own clock for.
struct Budget {
    per_second: f64,
    burst: f64,
    /// Tokens left (negative: reserved ahead) and when that was counted.
    state: std::sync::Mutex<(f64, tokio::time::Instant)>,
}

/// The client's bucket is this share of the server's (size and rate): concurrent calls reach the
/// server's limiter in an order of their own, and the margin absorbs it.
const BUDGET_SHARE: f64 = 0.9;

impl Budget {
    fn new(l: AuthLimit) -> Budget {
        let burst = (f64::from(l.burst) * BUDGET_SHARE).floor().max(1.0);
        Budget {
            per_second: (l.per_second() * BUDGET_SHARE).max(1e-9),
            burst,
            state: std::sync::Mutex::new((burst, tokio::time::Instant::now())),
        }
    }

    /// Waits for this call's token.
    async fn take(&self) {
        let wait = {
            let mut s = self.state.lock().expect("budget lock");
            let now = tokio::time::Instant::now();
            s.0 = (s.0 + (now - s.1).as_secs_f64() * self.per_second).min(self.burst);
            s.1 = now;
            s.0 -= 1.0;
            (-s.0 / self.per_second).max(0.0)
        };
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }

    /// The server said 429: whatever was left is not there.
    fn empty(&self) {
        let mut s = self.state.lock().expect("budget lock");
        s.0 = s.0.min(0.0);
    }
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TargetConfig {{ kind: {}, api_url: {}, <keys redacted> }}",
            self.kind, self.api_url
        )
    }
}

fn transport(e: &reqwest::Error) -> Failure {
    Failure::Transport(if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    })
}

/// A signed-in agent's tokens. The access token is kept as the ready `Authorization` header
/// value (`Bearer <jwt>`): no bigger than the bare token, and every upload shares it instead of
/// formatting and validating a new header. `Debug` shows neither token.
#[derive(Clone, PartialEq)]
pub struct Session {
    bearer: HeaderValue,
    pub refresh_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// How long the access token had to live when it arrived (seconds).
    pub lifetime_s: i64,
    /// The user's id, when the answer carried it (GoTrue's `user.id`).
    pub user_id: Option<uuid::Uuid>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Session {{ expires_at: {}, <tokens redacted> }}",
            self.expires_at
        )
    }
}

impl Session {
    pub fn new(
        access_token: &str,
        refresh_token: String,
        expires_at: i64,
    ) -> Result<Session, Failure> {
        let bearer = HeaderValue::from_str(&format!("Bearer {access_token}")).map_err(|_| {
            Failure::Protocol("the access token is not a valid header value".into())
        })?;
        Ok(Session {
            bearer,
            refresh_token,
            expires_at,
            lifetime_s: expires_at - chrono::Utc::now().timestamp(),
            user_id: None,
        })
    }

    pub fn access_token(&self) -> &str {
        // Built from a `&str` in `new`, so visible ASCII after the 7-byte prefix.
        &self.bearer.to_str().expect("built from a str")[7..]
    }

    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }
}

pub struct Target {
    pub config: TargetConfig,
    /// Auth and provisioning calls.
    http: reqwest::Client,
    /// Uploads: the fleet's fixed set of keep-alive connections.
    uploads: crate::http::Pool,
    upload_headers: [(HeaderName, HeaderValue); 3],
    pooler: Option<deadpool_postgres::Pool>,
    timeout: Duration,
    /// The client side of the project's `/token` bucket (`config.auth_limit`).
    budget: Option<Budget>,
}

/// How long a call may take when nothing says otherwise (`workload.request_timeout`'s default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The pooler path's statement: the batch as one JSON array, one unnamed INSERT.
static POOLER_INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let cols = crate::telemetry::COLUMNS.join(", ");
    format!(
        "insert into public.system_metrics ({cols}) select {cols} from json_populate_recordset(null::public.system_metrics, $1::json)"
    )
});

impl Target {
    /// `pooler_connections` SQL connections for the pooler path and `http_connections` for uploads
    /// through the Data API; every call gives up after `timeout` (connecting included).
    pub fn new(
        config: TargetConfig,
        pooler_connections: usize,
        http_connections: usize,
        timeout: Duration,
    ) -> Result<Target, String> {
        let uploads = crate::http::Pool::new(&config.api_url, http_connections, timeout)?;
        let upload_headers = [
            (
                HeaderName::from_static("apikey"),
                HeaderValue::from_str(&config.anon_key)
                    .map_err(|_| "the anon key is not a valid header value".to_string())?,
            ),
            (
                HeaderName::from_static("prefer"),
                HeaderValue::from_static("return=minimal"),
            ),
            (
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ];
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .pool_max_idle_per_host(1024)
            .user_agent(concat!("fleetbench/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(fleetbench_tls::reqwest_roots().map_err(|e| e.to_string())?)
            .build()
            .map_err(|e| e.to_string())?;
        let pooler = match &config.db_url {
            Some(url) => {
                let pg = fleetbench_tls::pg::PgConnect::parse(url)
                    .map_err(|e| format!("SUPABASE_DB_URL: {e}"))?;
                let manager = deadpool_postgres::Manager::from_config(
                    pg.config,
                    pg.tls,
                    deadpool_postgres::ManagerConfig {
                        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                    },
                );
                Some(
                    deadpool_postgres::Pool::builder(manager)
                        .max_size(pooler_connections.max(1))
                        .wait_timeout(Some(timeout))
                        .create_timeout(Some(Duration::from_secs(10).min(timeout)))
                        .runtime(deadpool_postgres::Runtime::Tokio1)
                        .build()
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
        Ok(Target {
            budget: config.auth_limit.map(Budget::new),
            config,
            http,
            uploads,
            upload_headers,
            pooler,
            timeout,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_url)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), Failure> {
        let res = req.send().await.map_err(|e| transport(&e))?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = res.text().await.map_err(|e| transport(&e))?;
        if status >= 400 {
            return Err(Failure::Status {
                status,
                retry_after,
                body,
            });
        }
        Ok((status, body))
    }

    /// `POST /auth/v1/admin/users` (service role; no rate limiter on hosted Auth): the user's id.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        run_id: &str,
    ) -> Result<uuid::Uuid, Failure> {
        let (_, body) = self
            .send(
                self.http
                    .post(self.url("/auth/v1/admin/users"))
                    .header("apikey", &self.config.service_key)
                    .bearer_auth(&self.config.service_key)
                    .json(&wire::admin_user(email, password, run_id)),
            )
            .await?;
        wire::id(&body, "admin user")
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Session, Failure> {
        self.sign_in_from(email, password, None).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, Failure> {
        self.refresh_from(refresh_token, None).await
    }

    /// The password grant, as the client at `from` when the project forwards addresses.
    pub async fn sign_in_from(
        &self,
        email: &str,
        password: &str,
        from: Option<std::net::IpAddr>,
    ) -> Result<Session, Failure> {
        let req = self
            .token_call("password", from)
            .await
            .json(&wire::password(email, password));
        let (_, body) = self.paced(self.send(req).await)?;
        wire::session(&body)
    }

    /// The refresh grant, as the client at `from` when the project forwards addresses.
    pub async fn refresh_from(
        &self,
        refresh_token: &str,
        from: Option<std::net::IpAddr>,
    ) -> Result<Session, Failure> {
        let req = self
            .token_call("refresh_token", from)
            .await
            .json(&wire::refresh(refresh_token));
        let (_, body) = self.paced(self.send(req).await)?;
        wire::session(&body)
    }

    /// `POST /auth/v1/token?grant_type=GRANT`: with the publishable (anon) key, or, when the
    /// project forwards addresses and `from` is given, with the secret key and `Sb-Forwarded-For`
    /// (the hosted gateway passes the header on with that key only).
    /// A call from this machine's own address first waits for its token of the budget.
    async fn token_call(
        &self,
        grant: &str,
        from: Option<std::net::IpAddr>,
    ) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(self.url(&format!("/auth/v1/token?grant_type={grant}")));
        match from.filter(|_| self.config.forward_ip) {
            Some(ip) => req
                .header("apikey", &self.config.service_key)
                .header("Sb-Forwarded-For", ip.to_string()),
            None => {
                if let Some(b) = &self.budget {
                    b.take().await;
                }
                req.header("apikey", &self.config.anon_key)
            }
        }
    }

    /// A `/token` answer; a 429 empties the budget (the server's bucket is empty).
    fn paced<T>(&self, r: Result<T, Failure>) -> Result<T, Failure> {
        if let (Err(Failure::Status { status: 429, .. }), Some(b)) = (&r, &self.budget) {
            b.empty();
        }
        r
    }

    /// `POST /rest/v1/devices` as the user: the new device's id.
    pub async fn create_device(
        &self,
        token: &str,
        device: &crate::telemetry::Device,
        hostname: &str,
    ) -> Result<uuid::Uuid, Failure> {
        let (_, body) = self
            .send(
                self.http
                    .post(self.url("/rest/v1/devices"))
                    .header("apikey", &self.config.anon_key)
                    .bearer_auth(token)
                    .header("Prefer", "return=representation")
                    .header("Accept", "application/vnd.pgrst.object+json")
                    .json(&wire::device(device, hostname)),
            )
            .await?;
        wire::id(&body, "device")
    }

    /// A batch through the Data API (`Prefer: return=minimal`, 201 expected), on one of the
    /// fleet's upload connections.
    pub async fn insert_rest(&self, bearer: &HeaderValue, body: Bytes) -> Result<(), Failure> {
        let [apikey, prefer, content_type] = &self.upload_headers;
        let headers = [
            apikey.clone(),
            prefer.clone(),
            content_type.clone(),
            (hyper::header::AUTHORIZATION, bearer.clone()),
        ];
        let reply = self
            .uploads
            .post("/rest/v1/system_metrics", &headers, body)
            .await?;
        if reply.status >= 400 {
            return Err(Failure::Status {
                status: reply.status,
                retry_after: reply.retry_after,
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            });
        }
        if reply.status != 201 {
            return Err(Failure::Protocol(format!(
                "insert answered {}, not 201",
                reply.status
            )));
        }
        Ok(())
    }

    /// Upload connections opened so far.
    pub fn upload_connections_opened(&self) -> u64 {
        self.uploads
            .opened
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A batch through the transaction pooler: rows written.
    pub async fn insert_pooler(&self, body: Bytes) -> Result<u64, Failure> {
        let body = std::str::from_utf8(&body)
            .map_err(|_| Failure::Protocol("the batch is not UTF-8".into()))?;
        let pool = self
            .pooler
            .as_ref()
            .ok_or_else(|| Failure::Protocol("the pooler path needs SUPABASE_DB_URL".into()))?;
        let insert = async {
            let client = pool.get().await.map_err(|_| Failure::Db("pool".into()))?;
            client
                .execute_typed(POOLER_INSERT.as_str(), &[(&body, Type::TEXT)])
                .await
                .map_err(|e| {
                    Failure::Db(
                        e.as_db_error()
                            .map_or_else(|| "connection".into(), |d| d.code().code().to_string()),
                    )
                })
        };
        // A statement the pooler never answers is dropped (its connection with it) at the timeout.
        tokio::time::timeout(self.timeout, insert)
            .await
            .unwrap_or(Err(Failure::Transport("timeout")))
    }
}

/// The bodies fleetbench sends and the answers it reads, shared by the engine and the goose front
/// end so both speak exactly the same wire.
pub mod wire {
    use serde_json::{Value, json};

    use super::{Failure, Session};

    /// `POST /auth/v1/admin/users`: a confirmed user tagged with the run.
    pub fn admin_user(email: &str, password: &str, run_id: &str) -> Value {
        json!({ "email": email, "password": password, "email_confirm": true,
                "app_metadata": { "fleetbench_run_id": run_id } })
    }

    /// `POST /rest/v1/devices`: the agent's machine.
    pub fn device(device: &crate::telemetry::Device, hostname: &str) -> Value {
        json!({
            "hostname": hostname, "os": "linux", "cpu_cores": device.cores,
            "ram_bytes": device.ram_bytes, "disk_bytes": device.disk_bytes,
            "form_factor": device.form_factor, "has_gpu": device.has_gpu,
            "agent_version": concat!("fleetbench/", env!("CARGO_PKG_VERSION")),
        })
    }

    /// `POST /auth/v1/token?grant_type=password`.
    pub fn password(email: &str, password: &str) -> Value {
        json!({ "email": email, "password": password })
    }

    /// `POST /auth/v1/token?grant_type=refresh_token`.
    pub fn refresh(refresh_token: &str) -> Value {
        json!({ "refresh_token": refresh_token })
    }

    fn parse(body: &str) -> Result<Value, Failure> {
        serde_json::from_str(body).map_err(|e| Failure::Protocol(format!("not JSON: {e}")))
    }

    /// The `id` of a created user or row.
    pub fn id(body: &str, what: &str) -> Result<uuid::Uuid, Failure> {
        parse(body)?["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failure::Protocol(format!("{what} without a uuid id")))
    }

    /// A token grant's answer.
    pub fn session(body: &str) -> Result<Session, Failure> {
        let v = parse(body)?;
        match (
            v["access_token"].as_str(),
            v["refresh_token"].as_str(),
            v["expires_at"].as_i64(),
        ) {
            (Some(a), Some(r), Some(e)) => Session::new(a, r.into(), e).map(|mut s| {
                s.user_id = v["user"]["id"].as_str().and_then(|id| id.parse().ok());
                s
            }),
            _ => Err(Failure::Protocol(
                "token response without access_token/refresh_token/expires_at".into(),
            )),
        }
    }
}
