//! Supabase Auth (GoTrue) at `/auth/v1`, storing users, sessions and refresh tokens in the real
//! `auth` schema. Errors are GoTrue's JSON: `{"code", "error_code", "msg"}`.
//!
//! - [`tokens`]: access-token claims, sessions, refresh-token rotation and reuse detection.
//! - [`handlers`]: the endpoints.

pub mod handlers;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::GatewayConfig;

pub struct AuthState {
    /// The gateway's configuration as started; its `auth` is only the starting point of [`Self::auth`].
    pub config: GatewayConfig,
    pub pool: deadpool_postgres::Pool,
    pub limiter: crate::ratelimit::Limiter,
    /// GoTrue's settings now: the Management API changes them while the gateway runs.
    live: std::sync::RwLock<crate::AuthSettings>,
    /// Responses by HTTP status (the Metrics API's `http_status_codes_total`).
    pub statuses: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl AuthState {
    pub fn new(config: GatewayConfig, pool: deadpool_postgres::Pool) -> AuthState {
        AuthState {
            limiter: crate::ratelimit::Limiter::new(config.auth.rate_limits.clone()),
            live: std::sync::RwLock::new(config.auth.clone()),
            statuses: Default::default(),
            pool,
            config,
        }
    }

    /// GoTrue's settings as they are now.
    pub fn auth(&self) -> crate::AuthSettings {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the settings (the rate limits included) from now on.
    pub fn set_auth(&self, settings: crate::AuthSettings) {
        self.limiter.set_limits(settings.rate_limits.clone());
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = settings;
    }
}

pub fn routes(state: Arc<AuthState>) -> Router {
    Router::new()
        .route("/admin/users", post(handlers::admin_create_user))
        .route("/signup", post(handlers::signup))
        .route("/token", post(handlers::token))
        .route("/user", get(handlers::user))
        .route("/logout", post(handlers::logout))
        .route("/settings", get(handlers::settings))
        .route("/.well-known/jwks.json", get(handlers::jwks))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_status,
        ))
        .with_state(state)
}

/// Counts each response by its status.
async fn count_status(
    axum::extract::State(s): axum::extract::State<Arc<AuthState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let mut statuses = s.statuses.lock().unwrap_or_else(|p| p.into_inner());
    *statuses.entry(response.status().as_u16()).or_default() += 1;
    response
}

/// An error as GoTrue answers it.
#[derive(Debug)]
pub struct AuthError {
    pub status: StatusCode,
    pub error_code: &'static str,
    pub msg: String,
}

impl AuthError {
    pub fn new(status: StatusCode, error_code: &'static str, msg: impl Into<String>) -> AuthError {
        AuthError {
            status,
            error_code,
            msg: msg.into(),
        }
    }
    pub fn rate_limited() -> AuthError {
        AuthError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over_request_rate_limit",
            "Request rate limit reached",
        )
    }
    pub fn bad_json(msg: impl Into<String>) -> AuthError {
        AuthError::new(StatusCode::BAD_REQUEST, "bad_json", msg)
    }
    pub fn internal(e: impl std::fmt::Display) -> AuthError {
        tracing::error!("auth: {e}");
        AuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected_failure",
            "Unexpected failure, please check server logs for more information",
        )
    }
}

impl From<tokio_postgres::Error> for AuthError {
    fn from(e: tokio_postgres::Error) -> Self {
        AuthError::internal(e)
    }
}

impl From<deadpool_postgres::PoolError> for AuthError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AuthError::internal(e)
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "error_code": self.error_code, "msg": self.msg });
        (self.status, axum::Json(body)).into_response()
    }
}
