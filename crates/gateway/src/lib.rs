//! The local stack's HTTP gateway, the `SUPABASE_URL` of the embedded stack. Like Kong in front of a
//! hosted project it requires an `apikey` on every request, then routes by path prefix to stand-ins
//! that reproduce the hosted wire behaviour (status codes, JSON bodies, headers) closely enough that
//! the official clients work unmodified.
//!
//! # Layout
//! - [`apikey`]: the gateway's key check (anon / service-role HS256 JWTs) and role selection.
//! - [`daemon`]: the stack daemon (`stack serve`): the gateway plus the scheduler and pg_net
//!   stand-ins, on the stack's port until told to stop.
//! - [`keys`]: the project's keys: legacy JWT keys, publishable and secret keys, the asymmetric
//!   signing key of user tokens and its JWKS.
//! - [`auth`]: Supabase Auth (GoTrue) at `/auth/v1`: admin user creation, sign-up (also anonymous),
//!   password and refresh grants with rotation and reuse detection, `/user`, `/logout`, `/settings`.
//! - [`functions`]: Edge Functions at `/functions/v1/<name>`, proxied to their Deno processes with
//!   `verify_jwt` enforced per function.
//! - [`management`]: the Management API's project Auth configuration (`/v1/projects/{ref}/config/auth`),
//!   read and changed with a personal access token (the `hosted` profile).
//! - [`metrics`]: the project's Prometheus-format Metrics API (`/customer/v1/privileged/metrics`),
//!   Postgres, its processes and the poolers under hosted series names (every profile).
//! - [`listen`]: serving the router over HTTP or HTTPS until told to stop.
//! - [`ratelimit`]: GoTrue's per-client-IP token buckets (the `hosted` stack profile).
//! - [`realtime`]: Realtime at `/realtime/v1/websocket`: Phoenix channels, `postgres_changes` from a
//!   logical replication slot filtered by row-level security, broadcast, limits.
//! - [`rest`]: the Data API (PostgREST) at `/rest/v1`: tables, filters, bulk inserts, RPC, each
//!   request one transaction under the caller's role so row-level security is Postgres's own.

pub mod apikey;
pub mod auth;
pub mod daemon;
pub mod functions;
pub mod keys;
pub mod listen;
pub mod management;
pub mod metrics;
pub mod ratelimit;
pub mod realtime;
pub mod rest;

use std::sync::Arc;

use axum::Router;

/// What the gateway needs from the stack.
#[derive(Clone)]
pub struct GatewayConfig {
    /// A direct superuser connection: GoTrue owns the `auth` schema and connects directly, and the
    /// Data API's schema cache listens for `NOTIFY pgrst` on it.
    pub db_url: String,
    /// The Data API's connection: `authenticator` through the transaction-mode pooler, as PostgREST
    /// reaches a hosted database.
    pub rest_db_url: String,
    pub keys: keys::ProjectKeys,
    /// The externally visible base URL, for the `iss` claim (`<url>/auth/v1`).
    pub public_url: String,
    pub auth: AuthSettings,
    pub rest: RestSettings,
    /// The edge functions the stack runs, by name.
    pub functions: std::collections::BTreeMap<String, functions::FunctionRoute>,
    pub realtime: realtime::RealtimeSettings,
    /// The Management API's access (the `hosted` profile); none: not served.
    pub management: Option<management::Access>,
    /// The Metrics API's sources (the `hosted` profile); none: not served.
    pub metrics: Option<metrics::Sources>,
}

/// GoTrue's settings (`[auth]` of `supabase/config.toml`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Access-token lifetime (`GOTRUE_JWT_EXP`, default 3600).
    pub jwt_expiry_s: i64,
    /// How long a rotated refresh token may still be used (`REFRESH_TOKEN_REUSE_INTERVAL`, CLI default 10).
    pub refresh_reuse_interval_s: i64,
    /// bcrypt cost of stored passwords (GoTrue uses bcrypt's default, 10).
    pub bcrypt_cost: u32,
    pub enable_signup: bool,
    pub enable_anonymous_sign_ins: bool,
    pub minimum_password_length: usize,
    /// Sign-ups are confirmed at once (`[auth.email] enable_confirmations = false`).
    pub mailer_autoconfirm: bool,
    /// Per-IP token buckets; `None` is the `unlimited` profile.
    pub rate_limits: Option<ratelimit::Limits>,
    /// Take the client IP from this header instead of the peer address (`GOTRUE_RATE_LIMIT_HEADER`).
    pub rate_limit_header: Option<String>,
    /// IP address forwarding: a request carrying the secret key is limited by the first address
    /// of its `Sb-Forwarded-For` (the hosted gateway passes the header on with that key only).
    pub sb_forwarded_for: bool,
}

/// PostgREST's settings.
#[derive(Debug, Clone)]
pub struct RestSettings {
    /// The exposed schema (`[api] schemas`; the first one is the default, as in PostgREST).
    pub schema: String,
    /// `[api] max_rows`: the most rows a read returns.
    pub max_rows: u32,
    /// `db-pool` (PostgREST's default is 10).
    pub pool_size: usize,
    /// `db-pool-acquisition-timeout` (default 10 s); exceeding it answers 504 `PGRST003`.
    pub pool_timeout: std::time::Duration,
}

/// The stack's keys: both kinds of API key always; user tokens signed with the asymmetric key under
/// the `hosted` profile (HS256 with the JWT secret under `unlimited`).
fn project_keys(state: &fleetbench_stack::StackState) -> keys::ProjectKeys {
    let secrets = &state.secrets;
    let signing = match (state.profile, &secrets.signing) {
        (fleetbench_stack::Profile::Hosted, Some(k)) => Some(
            keys::SigningKey::from_pem(&k.kid, &k.private_pem).expect("the stack's signing key"),
        ),
        _ => None,
    };
    keys::ProjectKeys {
        jwt_secret: secrets.jwt_secret.clone(),
        publishable: secrets.opaque.as_ref().map(|o| o.publishable.clone()),
        secret: secrets.opaque.as_ref().map(|o| o.secret.clone()),
        signing,
    }
}

/// The Management API's token and project, under the `hosted` profile.
fn platform_access(state: &fleetbench_stack::StackState) -> Option<management::Access> {
    match (
        state.profile,
        &state.secrets.access_token,
        &state.project_ref,
    ) {
        (fleetbench_stack::Profile::Hosted, Some(token), Some(r)) => Some(management::Access {
            token: token.clone(),
            project_ref: r.clone(),
            compute: state.compute.as_ref().map(|c| c.name.clone()),
        }),
        _ => None,
    }
}

/// What the Metrics API reads (served under every profile, as every hosted project has one):
/// Postgres's processes and both poolers' consoles.
fn platform_metrics(state: &fleetbench_stack::StackState) -> Option<metrics::Sources> {
    let project_ref = state.project_ref.clone()?;
    let console = |url: String| url.replacen("/postgres?", "/pgbouncer?", 1);
    Some(metrics::Sources {
        project_ref,
        postmaster_pid: state.postgres.pid,
        pooler_consoles: vec![
            ("transaction".into(), console(state.pooler_db_url())),
            ("session".into(), console(state.session_db_url())),
        ],
    })
}

impl GatewayConfig {
    /// The gateway of a local stack, with the project's `supabase/config.toml` settings.
    pub fn for_stack(
        state: &fleetbench_stack::StackState,
        project: &fleetbench_stack::ProjectConfig,
        public_url: String,
    ) -> GatewayConfig {
        let auth = &project.auth;
        GatewayConfig {
            db_url: state.direct_db_url(),
            rest_db_url: state.authenticator_db_url(),
            keys: project_keys(state),
            public_url,
            auth: AuthSettings {
                jwt_expiry_s: auth.jwt_expiry,
                refresh_reuse_interval_s: auth.refresh_token_reuse_interval,
                bcrypt_cost: 10,
                enable_signup: auth.enable_signup,
                enable_anonymous_sign_ins: auth.enable_anonymous_sign_ins,
                minimum_password_length: auth.minimum_password_length,
                mailer_autoconfirm: !auth.email.enable_confirmations,
                rate_limits: match state.profile {
                    fleetbench_stack::Profile::Hosted => {
                        Some(ratelimit::Limits::from_config(&auth.rate_limit))
                    }
                    fleetbench_stack::Profile::Unlimited => None,
                },
                rate_limit_header: None,
                sb_forwarded_for: state.ip_forwarding,
            },
            rest: RestSettings {
                schema: project
                    .api
                    .schemas
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "public".into()),
                max_rows: project.api.max_rows,
                pool_size: 10,
                pool_timeout: std::time::Duration::from_secs(10),
            },
            functions: state
                .functions
                .iter()
                .map(|(name, f)| {
                    (
                        name.clone(),
                        functions::FunctionRoute {
                            url: format!("http://127.0.0.1:{}", f.port),
                            verify_jwt: f.verify_jwt,
                        },
                    )
                })
                .collect(),
            realtime: realtime::RealtimeSettings {
                limits: match state.profile {
                    fleetbench_stack::Profile::Hosted => {
                        Some(state.plan.map_or_else(
                            realtime::Limits::local_defaults,
                            realtime::Limits::of_plan,
                        ))
                    }
                    fleetbench_stack::Profile::Unlimited => None,
                },
                idle_backoff: state.profile == fleetbench_stack::Profile::Hosted,
                temporary_slot: state.profile == fleetbench_stack::Profile::Hosted,
                ..Default::default()
            },
            management: platform_access(state),
            metrics: platform_metrics(state),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("database pool: {0}")]
    Pool(String),
}

/// The whole gateway: Auth at `/auth/v1` and the Data API at `/rest/v1` behind the key check, Edge
/// Functions at `/functions/v1` (which check the bearer themselves) and Realtime at `/realtime/v1`
/// (which checks its own key). Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// so rate limits see the client's IP. Must be called on a tokio runtime: Realtime's poller starts
/// here; the handle stops it.
pub fn build(config: GatewayConfig) -> Result<(Router, Option<realtime::Handle>), GatewayError> {
    // The direct superuser pool: GoTrue's, and Realtime's subscription bookkeeping.
    let direct = pool(&config.db_url, 16, std::time::Duration::from_secs(10))?;
    let auth = Arc::new(auth::AuthState::new(config.clone(), direct.clone()));
    let rest = rest::RestState::new(
        config.clone(),
        pool(
            &config.rest_db_url,
            config.rest.pool_size,
            config.rest.pool_timeout,
        )?,
    );
    let functions = Arc::new(functions::FunctionsState {
        routes: config.functions.clone(),
        keys: config.keys.clone(),
        http: reqwest::Client::new(),
    });
    let (config_rt, secret, db_url) = (
        config.realtime.clone(),
        config.keys.clone(),
        config.db_url.clone(),
    );
    let platform = platform_routes(&config, &auth, &direct);
    let keyed = Router::new()
        .nest("/auth/v1", auth::routes(auth))
        .nest("/rest/v1", rest::routes(rest))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(config),
            apikey::require_apikey,
        ));
    let mut app = keyed
        .nest("/functions/v1", functions::routes(functions))
        .merge(platform);
    let mut handle = None;
    if config_rt.enabled {
        let (routes, h) = realtime::start(config_rt, secret, direct, db_url.clone());
        app = app.nest("/realtime/v1", routes);
        handle = Some(h);
    }
    Ok((app, handle))
}

/// The Management and Metrics APIs, where the configuration serves them (each checks its own
/// credentials, not an `apikey`).
fn platform_routes(
    config: &GatewayConfig,
    auth: &Arc<auth::AuthState>,
    direct: &deadpool_postgres::Pool,
) -> Router {
    let mut routes = Router::new();
    if let Some(access) = &config.management {
        routes = routes.merge(management::routes(access.clone(), auth.clone()));
    }
    if let Some(sources) = &config.metrics {
        routes = routes.merge(metrics::routes(
            sources.clone(),
            config.keys.clone(),
            direct.clone(),
            auth.clone(),
        ));
    }
    routes
}

/// [`build`] without the Realtime handle.
pub fn router(config: GatewayConfig) -> Result<Router, GatewayError> {
    build(config).map(|(router, _)| router)
}

/// Serves a gateway on a free 127.0.0.1 port from a thread and runtime of its own (tests, benches,
/// embedding); returns its base URL. The listener is bound before this returns, so requests made
/// right away wait in the backlog instead of being refused.
pub fn spawn(config: impl FnOnce(String) -> GatewayConfig) -> std::io::Result<String> {
    start(config).map(|running| running.url.clone())
}

/// A gateway served by [`start`]. Dropping it leaves the gateway running.
pub struct Running {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops the way SIGTERM stops the stack daemon: Realtime's poller finishes its batch, sockets
    /// flush and close, subscriptions are kept for the clients to resume.
    pub fn stop(mut self) {
        self.end(true);
    }

    /// Stops at once, as a crash would: tasks are dropped wherever they are.
    pub fn kill(mut self) {
        self.end(false);
    }

    fn end(&mut self, graceful: bool) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(graceful);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Like [`spawn`], with a handle to stop the gateway.
pub fn start(config: impl FnOnce(String) -> GatewayConfig) -> std::io::Result<Running> {
    start_with_tls(config, None)
}

/// [`start`], served over HTTPS with `tls`'s certificate when given.
pub fn start_with_tls(
    config: impl FnOnce(String) -> GatewayConfig,
    tls: Option<fleetbench_stack::tls::TlsFiles>,
) -> std::io::Result<Running> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    let config = config(url.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<bool>();
    let thread = std::thread::Builder::new()
        .name("fleetbench-gateway".into())
        .spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime for the gateway");
            let graceful = runtime.block_on(async move {
                let (app, realtime) = build(config).expect("the gateway's pools");
                let (quit_tx, quit_rx) = tokio::sync::watch::channel(false);
                let server = listen::serve(listener, tls.as_ref(), app, quit_rx)
                    .await
                    .expect("serving the gateway");
                // A dropped `Running` (no stop ever sent) keeps serving until the process ends.
                let graceful = match stop_rx.await {
                    Ok(g) => g,
                    Err(_) => std::future::pending().await,
                };
                if graceful {
                    if let Some(rt) = &realtime {
                        rt.shutdown();
                    }
                    let _ = quit_tx.send(true);
                    let _ = server.await;
                    if let Some(rt) = &realtime {
                        rt.closed().await;
                    }
                }
                graceful
            });
            if !graceful {
                runtime.shutdown_background();
            }
        })?;
    Ok(Running {
        url,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn pool(
    db_url: &str,
    size: usize,
    wait: std::time::Duration,
) -> Result<deadpool_postgres::Pool, GatewayError> {
    // The URL's own TLS settings: the hosted profile's poolers require TLS, even from the gateway.
    let pg = fleetbench_tls::pg::PgConnect::parse(db_url)
        .map_err(|e| GatewayError::Pool(format!("{e}")))?;
    let manager = deadpool_postgres::Manager::from_config(
        pg.config,
        pg.tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(wait))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| GatewayError::Pool(e.to_string()))
}
