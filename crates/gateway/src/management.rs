//! The Management API's project Auth configuration, as staging tooling reaches it on
//! `api.supabase.com`: `GET` and `PATCH /v1/projects/{ref}/config/auth` with a personal access token
//! (`Authorization: Bearer sbp_…`). The fields are the hosted API's names for what this GoTrue
//! stand-in has: the `/token` bucket (`rate_limit_token_refresh`, per 5 minutes per address),
//! sign-ups (`rate_limit_otp`, GoTrue's limiter for them), anonymous sign-ins
//! (`rate_limit_anonymous_users`, per hour), the access-token lifetime (`jwt_exp`), the refresh-token
//! reuse interval and IP address forwarding. A change applies to the next request and lasts until
//! the stack restarts (then `supabase/config.toml` rules again).
//!
//! A `PATCH` naming a field the stand-in does not model is refused (400, naming it) rather than
//! accepted and ignored: a test that thinks it changed a setting must not pass on a setting that
//! never changed.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::auth::AuthState;
use crate::ratelimit::{Limits, Rate};

/// Who may call it, and for which project.
#[derive(Debug, Clone)]
pub struct Access {
    /// The personal access token (`sbp_…`).
    pub token: String,
    pub project_ref: String,
    /// The compute size the stack applies (`Micro`, `XL`, …); none: Nano, hosted's size without
    /// a compute add-on.
    pub compute: Option<String>,
}

struct ManagementState {
    access: Access,
    auth: Arc<AuthState>,
}

/// `/v1/projects/{ref}/config/auth` and `/v1/projects/{ref}/billing/addons`.
pub fn routes(access: Access, auth: Arc<AuthState>) -> Router {
    Router::new()
        .route(
            "/v1/projects/{project_ref}/config/auth",
            get(read).patch(update),
        )
        .route("/v1/projects/{project_ref}/billing/addons", get(addons))
        .with_state(Arc::new(ManagementState { access, auth }))
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

/// The token and the project, as the hosted API checks them.
fn authorised(s: &ManagementState, headers: &HeaderMap, project_ref: &str) -> Option<Response> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(s.access.token.as_str()) {
        return Some(refuse(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    (project_ref != s.access.project_ref).then(|| {
        refuse(
            StatusCode::NOT_FOUND,
            format!("Project {project_ref} not found"),
        )
    })
}

/// The project's add-ons as hosted lists them: the compute size as the `compute_instance` add-on
/// (variant `ci_<size>`: `ci_micro`, `ci_2xlarge`, …); none selected on Nano.
async fn addons(
    State(s): State<Arc<ManagementState>>,
    Path(project_ref): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = authorised(&s, &headers, &project_ref) {
        return refused;
    }
    let selected: Vec<Value> = s
        .access
        .compute
        .iter()
        .filter(|c| !c.eq_ignore_ascii_case("nano"))
        .map(|c| {
            let id = format!("ci_{}", c.to_ascii_lowercase().replace("xl", "xlarge"));
            json!({ "type": "compute_instance", "variant": { "id": id, "name": c } })
        })
        .collect();
    Json(json!({ "selected_addons": selected, "available_addons": [] })).into_response()
}

/// Calls per `period_s` of a bucket refilling at `rate` (the config's whole numbers).
fn per(rate: Rate, period_s: f64) -> u64 {
    (rate.per_second * period_s).round() as u64
}

/// The configuration's JSON, hosted field names.
fn config_json(s: &AuthState) -> Value {
    let a = s.auth();
    let limits = s.limiter.limits();
    let rate = |pick: fn(&Limits) -> Rate, period| limits.as_ref().map(|l| per(pick(l), period));
    json!({
        "jwt_exp": a.jwt_expiry_s,
        "refresh_token_rotation_enabled": true,
        "security_refresh_token_reuse_interval": a.refresh_reuse_interval_s,
        "security_sb_forwarded_for_enabled": a.sb_forwarded_for,
        "rate_limit_token_refresh": rate(|l| l.token, 300.0),
        "rate_limit_otp": rate(|l| l.signup, 300.0),
        "rate_limit_anonymous_users": rate(|l| l.anonymous, 3600.0),
        "disable_signup": !a.enable_signup,
        "external_anonymous_users_enabled": a.enable_anonymous_sign_ins,
        "external_email_enabled": true,
        "mailer_autoconfirm": a.mailer_autoconfirm,
        "password_min_length": a.minimum_password_length,
    })
}

async fn read(
    State(s): State<Arc<ManagementState>>,
    Path(project_ref): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = authorised(&s, &headers, &project_ref) {
        return refused;
    }
    Json(config_json(&s.auth)).into_response()
}

async fn update(
    State(s): State<Arc<ManagementState>>,
    Path(project_ref): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = authorised(&s, &headers, &project_ref) {
        return refused;
    }
    let fields = match serde_json::from_slice::<Map<String, Value>>(&body) {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}")),
    };
    match apply(&s.auth, &fields) {
        Ok(()) => Json(config_json(&s.auth)).into_response(),
        Err(message) => refuse(StatusCode::BAD_REQUEST, message),
    }
}

/// The PATCH's fields onto the live settings, all or none.
fn apply(auth: &AuthState, fields: &Map<String, Value>) -> Result<(), String> {
    let mut a = auth.auth();
    let mut limits = auth.limiter.limits();
    for (name, value) in fields {
        let count = || {
            value
                .as_u64()
                .filter(|n| *n >= 1 && *n <= u64::from(u32::MAX))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    format!("{name}: expected a whole number of at least 1, got {value}")
                })
        };
        let flag = || {
            value
                .as_bool()
                .ok_or_else(|| format!("{name}: expected true or false, got {value}"))
        };
        let unlimited =
            || format!("{name}: this stack applies no Auth rate limits (the `unlimited` profile)");
        let five_min = std::time::Duration::from_secs(300);
        match name.as_str() {
            "jwt_exp" => a.jwt_expiry_s = i64::from(count()?),
            "security_refresh_token_reuse_interval" => {
                a.refresh_reuse_interval_s = value
                    .as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("{name}: expected seconds, got {value}"))?
            }
            "security_sb_forwarded_for_enabled" => a.sb_forwarded_for = flag()?,
            "rate_limit_token_refresh" => {
                limits.as_mut().ok_or_else(unlimited)?.token = Rate::per(count()?, five_min)
            }
            "rate_limit_otp" => {
                limits.as_mut().ok_or_else(unlimited)?.signup = Rate::per(count()?, five_min)
            }
            "rate_limit_anonymous_users" => {
                let hour = std::time::Duration::from_secs(3600);
                limits.as_mut().ok_or_else(unlimited)?.anonymous = Rate::per(count()?, hour)
            }
            other => {
                return Err(format!(
                    "{other}: not a setting the local hosted double models (it models jwt_exp, \
                     rate_limit_token_refresh, rate_limit_otp, rate_limit_anonymous_users, \
                     security_refresh_token_reuse_interval, security_sb_forwarded_for_enabled)"
                ));
            }
        }
    }
    a.rate_limits = limits;
    auth.set_auth(a);
    Ok(())
}
