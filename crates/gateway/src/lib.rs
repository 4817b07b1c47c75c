//! The local stack's HTTP gateway, the `SUPABASE_URL` of the embedded stack. Like Kong in front of a
//! hosted project it requires an `apikey` on every request, then routes by path prefix to stand-ins
//! that reproduce the hosted wire behaviour (status codes, JSON bodies, headers) closely enough that
//! the official clients work unmodified.
//!
//! # Layout
//! - [`apikey`]: the gateway's key check (anon / service-role HS256 JWTs) and role selection.
//! - [`auth`]: Supabase Auth (GoTrue) at `/auth/v1`: admin user creation, password and refresh
//!   grants with rotation and reuse detection, `/user`, `/logout`, `/settings`.
//!
//! The Data API (`/rest/v1`) and Realtime (`/realtime/v1`) stand-ins are the next pieces to attach.

pub mod apikey;
pub mod auth;

use std::sync::Arc;

use axum::Router;

/// What the gateway needs from the stack.
#[derive(Clone)]
pub struct GatewayConfig {
    /// A direct superuser connection (GoTrue owns the `auth` schema and connects directly too).
    pub db_url: String,
    pub jwt_secret: String,
    /// The externally visible base URL, for the `iss` claim (`<url>/auth/v1`).
    pub public_url: String,
    /// Access-token lifetime (`GOTRUE_JWT_EXP`, default 3600).
    pub jwt_expiry_s: i64,
    /// How long a rotated refresh token may still be used (`REFRESH_TOKEN_REUSE_INTERVAL`, CLI default 10).
    pub refresh_reuse_interval_s: i64,
    /// bcrypt cost of stored passwords (GoTrue uses bcrypt's default, 10).
    pub bcrypt_cost: u32,
}

impl GatewayConfig {
    pub fn new(db_url: String, jwt_secret: String, public_url: String) -> GatewayConfig {
        GatewayConfig {
            db_url,
            jwt_secret,
            public_url,
            jwt_expiry_s: 3600,
            refresh_reuse_interval_s: 10,
            bcrypt_cost: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("database pool: {0}")]
    Pool(String),
}

/// The whole gateway.
pub fn router(config: GatewayConfig) -> Result<Router, GatewayError> {
    let pool = pool(&config.db_url)?;
    let state = Arc::new(auth::AuthState {
        config: config.clone(),
        pool,
    });
    Ok(Router::new().nest("/auth/v1", auth::routes(state)).layer(
        axum::middleware::from_fn_with_state(Arc::new(config), apikey::require_apikey),
    ))
}

fn pool(db_url: &str) -> Result<deadpool_postgres::Pool, GatewayError> {
    let pg: tokio_postgres::Config = db_url
        .parse()
        .map_err(|e| GatewayError::Pool(format!("{e}")))?;
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(16)
        .build()
        .map_err(|e| GatewayError::Pool(e.to_string()))
}
