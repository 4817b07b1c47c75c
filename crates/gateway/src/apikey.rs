//! The key check the API gateway does in front of a hosted project: every request carries `apikey`
//! (header, or `?apikey=` for websockets): a publishable or secret key, or a legacy JWT key whose
//! `role` is `anon` or `service_role` ([`crate::keys`]). Without one: 401
//! `{"message":"No API key found in request"}`. The one exception is Auth's JWKS
//! (`/auth/v1/.well-known/jwks.json`), which hosted publishes to anyone: verifiers (Supabase's
//! server libraries, any JWKS client) fetch it without a header.

use std::sync::Arc;

use crate::GatewayConfig;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Served without a key, as hosted serves them.
const OPEN: [&str; 1] = ["/auth/v1/.well-known/jwks.json"];

pub async fn require_apikey(
    State(config): State<Arc<GatewayConfig>>,
    mut req: Request,
    next: Next,
) -> Response {
    if OPEN.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("apikey="))
            .map(str::to_string)
    });
    let Some(key) = header.or(query) else {
        return message(StatusCode::UNAUTHORIZED, "No API key found in request");
    };
    let Some(role) = config.keys.key_role(&key) else {
        return message(StatusCode::UNAUTHORIZED, "Invalid API key");
    };
    req.extensions_mut().insert(role);
    next.run(req).await
}

fn message(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "message": msg }))).into_response()
}
