//! The Data API (PostgREST) at `/rest/v1`. Each request is one transaction run the way PostgREST
//! runs it: connected as `authenticator` (through the transaction-mode pooler), `set_config('role',
//! <jwt role>, true)`, the role's own settings (its `statement_timeout`), `request.jwt.claims`,
//! `request.headers`, `request.method` and `request.path` set transaction-locally, then one
//! statement. Row-level security and grants are therefore Postgres's own.
//!
//! Statements are sent unnamed (`query_typed`), and the transaction's four messages (begin, settings,
//! statement, commit) are pipelined in one round trip, so nothing outlives the transaction and a
//! transaction-mode pooler is safe.
//!
//! - [`query`]: the query-string grammar (select, filters, order, paging).
//! - [`schema`]: the schema cache (tables, functions, role settings).
//! - [`handlers`]: tables (`GET`/`POST`/`PATCH`/`DELETE`) and the response helpers.
//! - [`rpc`]: functions at `/rpc/<name>`.
//! - [`error`]: PostgREST's error JSON and status mapping.

pub mod error;
pub mod handlers;
pub mod query;
pub mod rpc;
pub mod schema;

use std::sync::{Arc, RwLock, Weak};
use std::time::Instant;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::GatewayConfig;
use error::RestError;
use schema::Schema;

pub struct RestState {
    pub config: GatewayConfig,
    pub pool: deadpool_postgres::Pool,
    schema: RwLock<Option<(Arc<Schema>, Instant)>>,
    reloading: tokio::sync::Mutex<()>,
}

impl RestState {
    /// The Data API's state; inside a tokio runtime it also starts listening for `NOTIFY pgrst`.
    pub fn new(config: GatewayConfig, pool: deadpool_postgres::Pool) -> Arc<RestState> {
        let state = Arc::new(RestState {
            config,
            pool,
            schema: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(schema::listen(state.config.db_url.clone(), tx));
            let weak: Weak<RestState> = Arc::downgrade(&state);
            tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    let Some(state) = weak.upgrade() else { return };
                    if let Err(e) = state.reload(Instant::now()).await {
                        tracing::warn!("schema cache reload: {}", e.message);
                    }
                }
            });
        }
        state
    }

    /// The cache, loading it on first use.
    pub async fn schema(&self) -> Result<Arc<Schema>, RestError> {
        if let Some((s, _)) = &*self.schema.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(s.clone());
        }
        self.reload(Instant::now()).await
    }

    /// Reloads unless a load finished after `seen` (someone else already refreshed it).
    pub async fn reload(&self, seen: Instant) -> Result<Arc<Schema>, RestError> {
        let _one = self.reloading.lock().await;
        if let Some((s, at)) = &*self.schema.read().unwrap_or_else(|p| p.into_inner())
            && *at > seen
        {
            return Ok(s.clone());
        }
        let loaded = Arc::new(
            Schema::load(&self.config.db_url, &self.config.rest.schema)
                .await
                .map_err(|e| {
                    RestError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "PGRST002",
                        format!(
                            "Could not query the database for the schema cache. Retrying. ({e})"
                        ),
                    )
                })?,
        );
        *self.schema.write().unwrap_or_else(|p| p.into_inner()) =
            Some((loaded.clone(), Instant::now()));
        Ok(loaded)
    }

    /// The cache, reloaded once if `present` says what the request needs is missing.
    pub async fn schema_with(
        &self,
        present: impl Fn(&Schema) -> bool,
    ) -> Result<Arc<Schema>, RestError> {
        let seen = Instant::now();
        let s = self.schema().await?;
        if present(&s) {
            return Ok(s);
        }
        self.reload(seen).await
    }
}

pub fn routes(state: Arc<RestState>) -> Router {
    Router::new()
        .route("/rpc/{function}", get(rpc::rpc_get).post(rpc::rpc_post))
        .route(
            "/{table}",
            get(handlers::read)
                .post(handlers::insert)
                .patch(handlers::update)
                .delete(handlers::delete),
        )
        .with_state(state)
}

/// Who is calling: the role and claims of the bearer token, or of the API key when there is none
/// (PostgREST runs token-less requests as `anon`; the gateway passes the key's JWT as the token).
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: String,
    pub claims: serde_json::Value,
}

impl Caller {
    pub fn from_headers(config: &GatewayConfig, headers: &HeaderMap) -> Result<Caller, RestError> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let token = bearer.or_else(|| headers.get("apikey").and_then(|v| v.to_str().ok()));
        // No token, or an opaque key (it counts as the key, never as a user token).
        let key_role = match token {
            None => Some(crate::keys::KeyRole::Anon),
            Some(t) => config.keys.opaque_role(t),
        };
        if let Some(role) = key_role {
            return Ok(Caller {
                role: role.name().into(),
                claims: serde_json::json!({ "role": role.name() }),
            });
        }
        let token = token.expect("checked above");
        let claims = config
            .keys
            .decode::<serde_json::Value>(token, true)
            .map_err(|e| {
                let unauthorized = axum::http::StatusCode::UNAUTHORIZED;
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        RestError::new(unauthorized, "PGRST303", "JWT expired")
                    }
                    _ => RestError::new(unauthorized, "PGRST301", format!("JWT invalid: {e}")),
                }
            })?;
        let role = claims
            .get("role")
            .and_then(|r| r.as_str())
            .unwrap_or("anon")
            .to_string();
        Ok(Caller { role, claims })
    }
}

/// What one request runs.
pub struct Statement {
    pub sql: String,
    /// The request body, bound as `$1` (text, cast in the SQL).
    pub body: Option<String>,
    pub read_only: bool,
    /// Whether the statement returns rows (else only its affected-row count is read).
    pub returns_rows: bool,
}

/// The rows (or affected count) of one statement, run as `caller` in its own transaction.
pub async fn run(
    state: &Arc<RestState>,
    schema: &Schema,
    caller: &Caller,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    stmt: Statement,
) -> Result<(Vec<Row>, u64), RestError> {
    let request_headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.into())))
        .collect();
    let mut settings: Vec<(String, String)> = vec![
        ("role".into(), caller.role.clone()),
        ("request.jwt.claims".into(), caller.claims.to_string()),
        (
            "request.headers".into(),
            serde_json::Value::Object(request_headers).to_string(),
        ),
        ("request.method".into(), method.into()),
        ("request.path".into(), path.into()),
    ];
    settings.extend(
        schema
            .role_settings
            .get(&caller.role)
            .cloned()
            .unwrap_or_default(),
    );
    let setup_sql = format!(
        "select {}",
        (0..settings.len())
            .map(|i| format!("set_config(${}, ${}, true)", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pool = state.pool.clone();
    let role = caller.role.clone();
    // Spawned: once begun, the transaction runs to its commit even if the client goes away.
    tokio::spawn(async move {
        let client = pool.get().await.map_err(|e| RestError::from_pool(&e))?;
        let setup_params: Vec<(&(dyn ToSql + Sync), Type)> = settings
            .iter()
            .flat_map(|(k, v)| {
                [
                    (k as &(dyn ToSql + Sync), Type::TEXT),
                    (v as &(dyn ToSql + Sync), Type::TEXT),
                ]
            })
            .collect();
        let body_params: Vec<(&(dyn ToSql + Sync), Type)> = match &stmt.body {
            Some(b) => vec![(b as &(dyn ToSql + Sync), Type::TEXT)],
            None => vec![],
        };
        let begin = if stmt.read_only {
            "begin isolation level read committed read only"
        } else {
            "begin isolation level read committed"
        };
        let main = async {
            if stmt.returns_rows {
                client
                    .query_typed(&stmt.sql, &body_params)
                    .await
                    .map(|rows| {
                        let n = rows.len() as u64;
                        (rows, n)
                    })
            } else {
                client
                    .execute_typed(&stmt.sql, &body_params)
                    .await
                    .map(|n| (Vec::new(), n))
            }
        };
        let (began, set, result, committed) = tokio::join!(
            client.batch_execute(begin),
            client.query_typed(&setup_sql, &setup_params),
            main,
            client.batch_execute("commit"),
        );
        let db = |e: tokio_postgres::Error| RestError::from_db(&e, &role);
        began.map_err(db)?;
        set.map_err(db)?;
        let out = result.map_err(db)?;
        committed.map_err(db)?;
        Ok(out)
    })
    .await
    .map_err(RestError::internal)?
}
