//! Edge Functions at `/functions/v1/<name>`: the request is passed to the Deno process serving
//! `supabase/functions/<name>` (path, query, method, headers, body) and its answer is passed back.
//! With `verify_jwt` (the default, per function in `supabase/config.toml`) the `Authorization`
//! bearer must be a JWT signed with the project secret before the function runs, as the hosted
//! functions gateway checks it; `apikey` is not required here (database webhooks send only the
//! bearer).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;

/// Where one function is served, and whether it wants a verified JWT.
#[derive(Debug, Clone)]
pub struct FunctionRoute {
    pub url: String,
    pub verify_jwt: bool,
}

pub struct FunctionsState {
    pub routes: BTreeMap<String, FunctionRoute>,
    pub keys: crate::keys::ProjectKeys,
    pub http: reqwest::Client,
}

pub fn routes(state: Arc<FunctionsState>) -> Router {
    Router::new()
        .route("/{name}", any(invoke))
        .route("/{name}/{*rest}", any(invoke))
        .with_state(state)
}

fn error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn invoke(
    State(s): State<Arc<FunctionsState>>,
    Path(params): Path<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let name = params.get("name").cloned().unwrap_or_default();
    let Some(route) = s.routes.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            json!({ "code": "NOT_FOUND", "message": "Requested function was not found" }),
        );
    };
    if route.verify_jwt {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match bearer {
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    json!({ "msg": "Error: Missing authorization header" }),
                );
            }
            // A valid JWT of the project; an opaque key is not one.
            Some(token) if s.keys.jwt_role(token.trim()).is_none() => {
                return error(StatusCode::UNAUTHORIZED, json!({ "msg": "Invalid JWT" }));
            }
            Some(_) => {}
        }
    }
    // The function sees the path from its own name on, as edge-runtime passes it.
    let suffix = uri
        .path()
        .find(&format!("/{name}"))
        .map(|i| &uri.path()[i..])
        .unwrap_or("/");
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut req = s
        .http
        .request(method, format!("{}{suffix}{query}", route.url))
        .body(body);
    for (k, v) in &headers {
        if !matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            req = req.header(k, v);
        }
    }
    match req.send().await {
        Ok(res) => {
            let status = res.status();
            let mut out = HeaderMap::new();
            for (k, v) in res.headers() {
                if !matches!(
                    k.as_str(),
                    "content-length" | "connection" | "transfer-encoding"
                ) {
                    out.append(k, v.clone());
                }
            }
            match res.bytes().await {
                Ok(bytes) => (status, out, bytes).into_response(),
                Err(e) => error(
                    StatusCode::BAD_GATEWAY,
                    json!({ "code": "BOOT_ERROR", "message": format!("reading the function's answer: {e}") }),
                ),
            }
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            json!({ "code": "BOOT_ERROR", "message": format!("Function failed to start (please check logs): {e}") }),
        ),
    }
}
