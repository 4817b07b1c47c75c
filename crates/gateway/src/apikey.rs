//! The key check Kong does in front of a hosted project: every request carries `apikey` (header, or
//! `?apikey=` for websockets), a JWT signed with the project secret whose `role` is `anon` or
//! `service_role`. Without one: 401 `{"message":"No API key found in request"}`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::GatewayConfig;

/// The role an API key grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Anon,
    ServiceRole,
}

#[derive(Deserialize)]
struct KeyClaims {
    role: String,
}

/// The claims of an HS256 JWT signed with `secret`, as every stand-in checks one: no audience,
/// no claim required; `exp` checked when present and `check_exp` is set.
pub fn decode_claims<T: serde::de::DeserializeOwned>(
    token: &str,
    secret: &str,
    check_exp: bool,
) -> Result<T, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    v.validate_exp = check_exp;
    v.required_spec_claims.clear();
    decode::<T>(token, &DecodingKey::from_secret(secret.as_bytes()), &v).map(|d| d.claims)
}

/// Decodes an HS256 JWT signed with `secret` and returns its `role`, checking `exp`.
pub fn jwt_role(token: &str, secret: &str) -> Option<String> {
    decode_claims::<KeyClaims>(token, secret, true)
        .ok()
        .map(|c| c.role)
}

pub async fn require_apikey(
    State(config): State<Arc<GatewayConfig>>,
    mut req: Request,
    next: Next,
) -> Response {
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
    let role = match jwt_role(&key, &config.jwt_secret).as_deref() {
        Some("anon") => KeyRole::Anon,
        Some("service_role") => KeyRole::ServiceRole,
        _ => return message(StatusCode::UNAUTHORIZED, "Invalid API key"),
    };
    req.extensions_mut().insert(role);
    next.run(req).await
}

fn message(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "message": msg }))).into_response()
}
