//! The `/auth/v1` endpoints a load test meets. Provisioning goes through `POST /admin/users` (no rate
//! limiter on hosted projects); agents use the password and refresh grants and `/user`.

use std::sync::Arc;

use axum::Json;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::tokens::{self, AccessClaims, USER_COLUMNS, UserRow};
use super::{AuthError, AuthState};
use crate::ratelimit::Group;

type Shared = State<Arc<AuthState>>;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn require_bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    bearer(headers).ok_or_else(|| {
        AuthError::new(
            StatusCode::UNAUTHORIZED,
            "no_authorization",
            "This endpoint requires a valid Bearer token",
        )
    })
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(body)
        .map_err(|e| AuthError::bad_json(format!("Could not parse request body as JSON: {e}")))
}

#[derive(Deserialize)]
pub struct AdminUserParams {
    email: Option<String>,
    password: Option<String>,
    #[serde(default)]
    email_confirm: bool,
    #[serde(default)]
    user_metadata: Option<serde_json::Value>,
    #[serde(default)]
    app_metadata: Option<serde_json::Value>,
}

/// `POST /admin/users`: service role only; 200 with the `User`.
pub async fn admin_create_user(
    State(s): Shared,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AuthError> {
    let token = require_bearer(&headers)?;
    let keys = &s.config.keys;
    let role = keys
        .opaque_role(token)
        .map(|r| r.name().to_string())
        .or_else(|| keys.jwt_role(token));
    match role.as_deref() {
        Some("service_role" | "supabase_admin") => {}
        Some(_) => {
            return Err(AuthError::new(
                StatusCode::FORBIDDEN,
                "not_admin",
                "User not allowed",
            ));
        }
        None => {
            return Err(AuthError::new(
                StatusCode::FORBIDDEN,
                "bad_jwt",
                "invalid JWT: unable to parse or verify signature",
            ));
        }
    }
    let p: AdminUserParams = parse_body(&body)?;
    let email = p
        .email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| e.contains('@'))
        .ok_or_else(|| {
            AuthError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "Unable to validate email address: invalid format",
            )
        })?;
    let hash = match p.password {
        Some(pw) if pw.len() < 6 => {
            return Err(AuthError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "weak_password",
                "Password should be at least 6 characters.",
            ));
        }
        Some(pw) => Some(hash_password(pw, s.auth().bcrypt_cost).await?),
        None => None,
    };
    let mut app = serde_json::json!({ "provider": "email", "providers": ["email"] });
    if let (Some(extra), Some(obj)) = (
        p.app_metadata.as_ref().and_then(|v| v.as_object()),
        app.as_object_mut(),
    ) {
        obj.extend(extra.clone());
    }
    let user_meta = p.user_metadata.unwrap_or_else(|| serde_json::json!({}));
    let db = s.pool.get().await?;
    let user = insert_email_user(
        &db,
        &email,
        hash.as_deref(),
        p.email_confirm,
        false,
        &app,
        &user_meta,
    )
    .await?
    .ok_or_else(|| {
        AuthError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "email_exists",
            "A user with this email address has already been registered",
        )
    })?;
    Ok(Json(user.to_json()).into_response())
}

/// A new email user, or `None` when the email is taken. `signed_in` also stamps `last_sign_in_at`
/// (sign-up starts a session at once; admin creation does not).
async fn insert_email_user(
    db: &tokio_postgres::Client,
    email: &str,
    hash: Option<&str>,
    confirmed: bool,
    signed_in: bool,
    app: &serde_json::Value,
    user_meta: &serde_json::Value,
) -> Result<Option<UserRow>, AuthError> {
    let rows = db
        .query_typed(
            &format!(
                "insert into auth.users (email, encrypted_password, email_confirmed_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data) \
                 values ($1, $2, case when $3 then now() end, case when $3 and $4 then now() end, $5, $6) \
                 on conflict (email) do nothing returning {USER_COLUMNS}"
            ),
            &[
                (&email, Type::TEXT),
                (&hash, Type::TEXT),
                (&confirmed, Type::BOOL),
                (&signed_in, Type::BOOL),
                (app, Type::JSONB),
                (user_meta, Type::JSONB),
            ],
        )
        .await?;
    Ok(rows.first().map(UserRow::from_row))
}

async fn hash_password(password: String, cost: u32) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(AuthError::internal)?
        .map_err(AuthError::internal)
}

#[derive(Deserialize)]
pub struct GrantQuery {
    grant_type: Option<String>,
}

#[derive(Deserialize)]
struct PasswordGrant {
    email: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct RefreshGrant {
    refresh_token: Option<String>,
}

/// The key GoTrue's limiters count a request under: with IP address forwarding on and the secret
/// key as `apikey`, the first address of `Sb-Forwarded-For` when it is one; the configured header if
/// the request has it (`GOTRUE_RATE_LIMIT_HEADER`); else the peer's IP address.
fn client_key(s: &AuthState, headers: &HeaderMap, ext: &Extensions) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret_key = header("apikey")
        .is_some_and(|k| s.config.keys.opaque_role(k) == Some(crate::keys::KeyRole::ServiceRole));
    if s.auth().sb_forwarded_for
        && secret_key
        && let Some(ip) = header("sb-forwarded-for")
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
    {
        return ip.to_string();
    }
    if let Some(name) = &s.auth().rate_limit_header
        && let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok())
    {
        return v.split(',').next().unwrap_or("").trim().to_string();
    }
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default()
}

fn limit(
    s: &AuthState,
    group: Group,
    headers: &HeaderMap,
    ext: &Extensions,
) -> Result<(), AuthError> {
    if s.limiter.allow(group, &client_key(s, headers, ext)) {
        Ok(())
    } else {
        Err(AuthError::rate_limited())
    }
}

#[derive(Deserialize)]
struct SignupParams {
    email: Option<String>,
    password: Option<String>,
    phone: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// `POST /signup`: with an email, a new confirmed user and a session (sign-ups are auto-confirmed
/// locally, as with `enable_confirmations = false`); without email or phone, an anonymous user.
pub async fn signup(
    State(s): Shared,
    headers: HeaderMap,
    ext: Extensions,
    body: axum::body::Bytes,
) -> Result<Response, AuthError> {
    let p: SignupParams = parse_body(&body)?;
    let user_meta = p.data.unwrap_or_else(|| serde_json::json!({}));
    let anonymous = p.email.is_none() && p.phone.is_none();
    if anonymous {
        if !s.auth().enable_anonymous_sign_ins {
            return Err(AuthError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "anonymous_provider_disabled",
                "Anonymous sign-ins are disabled",
            ));
        }
        limit(&s, Group::Anonymous, &headers, &ext)?;
        let db = s.pool.get().await?;
        let rows = db
            .query_typed(
                &format!(
                    "insert into auth.users (is_anonymous, raw_app_meta_data, raw_user_meta_data, last_sign_in_at) \
                     values (true, '{{}}', $1, now()) returning {USER_COLUMNS}"
                ),
                &[(&user_meta, Type::JSONB)],
            )
            .await?;
        let user = UserRow::from_row(&rows[0]);
        return Ok(
            Json(tokens::start_session(&**db, &s, &user, "anonymous").await?).into_response(),
        );
    }
    if !s.auth().enable_signup {
        return Err(AuthError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "signup_disabled",
            "Signups not allowed for this instance",
        ));
    }
    limit(&s, Group::Signup, &headers, &ext)?;
    let Some(email) = p
        .email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| e.contains('@'))
    else {
        return Err(AuthError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Unable to validate email address: invalid format",
        ));
    };
    let password = p.password.unwrap_or_default();
    if password.chars().count() < s.auth().minimum_password_length {
        return Err(AuthError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            format!(
                "Password should be at least {} characters.",
                s.auth().minimum_password_length
            ),
        ));
    }
    let hash = hash_password(password, s.auth().bcrypt_cost).await?;
    let app = serde_json::json!({ "provider": "email", "providers": ["email"] });
    let confirmed = s.auth().mailer_autoconfirm;
    let db = s.pool.get().await?;
    let user = insert_email_user(&db, &email, Some(&hash), confirmed, true, &app, &user_meta)
        .await?
        .ok_or_else(|| {
            AuthError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "user_already_exists",
                "User already registered",
            )
        })?;
    if !confirmed {
        return Ok(Json(user.to_json()).into_response());
    }
    Ok(Json(tokens::start_session(&**db, &s, &user, "password").await?).into_response())
}

/// `POST /token?grant_type=password|refresh_token`.
pub async fn token(
    State(s): Shared,
    Query(q): Query<GrantQuery>,
    headers: HeaderMap,
    ext: Extensions,
    body: axum::body::Bytes,
) -> Result<Response, AuthError> {
    limit(&s, Group::Token, &headers, &ext)?;
    match q.grant_type.as_deref() {
        Some("password") => password_grant(&s, parse_body(&body)?).await,
        Some("refresh_token") => {
            let g: RefreshGrant = parse_body(&body)?;
            let token = g.refresh_token.filter(|t| !t.is_empty()).ok_or_else(|| {
                AuthError::new(
                    StatusCode::BAD_REQUEST,
                    "validation_failed",
                    "refresh_token required",
                )
            })?;
            let mut db = s.pool.get().await?;
            Ok(Json(tokens::refresh(&mut db, &s, &token).await?).into_response())
        }
        other => Err(AuthError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            format!("unsupported_grant_type: {}", other.unwrap_or("")),
        )),
    }
}

async fn password_grant(s: &AuthState, g: PasswordGrant) -> Result<Response, AuthError> {
    let invalid = || {
        AuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_credentials",
            "Invalid login credentials",
        )
    };
    let (Some(email), Some(password)) = (g.email, g.password) else {
        return Err(invalid());
    };
    let db = s.pool.get().await?;
    let rows = db
        .query_typed(
            &format!("select {USER_COLUMNS}, encrypted_password from auth.users where email = $1 and deleted_at is null"),
            &[(&email.trim().to_lowercase(), Type::TEXT)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Err(invalid());
    };
    let user = UserRow::from_row(row);
    let Some(hash) = row.get::<_, Option<String>>(11) else {
        return Err(invalid());
    };
    let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .map_err(AuthError::internal)?;
    if !ok {
        return Err(invalid());
    }
    if user.email_confirmed_at.is_none() {
        return Err(AuthError::new(
            StatusCode::BAD_REQUEST,
            "email_not_confirmed",
            "Email not confirmed",
        ));
    }
    db.query_typed(
        "update auth.users set last_sign_in_at = now() where id = $1",
        &[(&user.id, Type::UUID)],
    )
    .await?;
    Ok(Json(tokens::start_session(&**db, s, &user, "password").await?).into_response())
}

/// The claims of a valid user access token whose session still exists.
async fn authenticated(s: &AuthState, headers: &HeaderMap) -> Result<AccessClaims, AuthError> {
    let token = require_bearer(headers)?;
    let claims = s
        .config
        .keys
        .decode::<AccessClaims>(token, true)
        .map_err(|e| {
            AuthError::new(
                StatusCode::FORBIDDEN,
                "bad_jwt",
                format!("invalid JWT: unable to parse or verify signature, {e}"),
            )
        })?;
    let db = s.pool.get().await?;
    let live = db
        .query_typed(
            "select 1 from auth.sessions where id = $1",
            &[(&claims.session_id, Type::UUID)],
        )
        .await?;
    if live.is_empty() {
        return Err(AuthError::new(
            StatusCode::FORBIDDEN,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        ));
    }
    Ok(claims)
}

/// `GET /user`.
pub async fn user(State(s): Shared, headers: HeaderMap) -> Result<Response, AuthError> {
    let claims = authenticated(&s, &headers).await?;
    let db = s.pool.get().await?;
    let user = tokens::load_user(&**db, claims.sub).await?.ok_or_else(|| {
        AuthError::new(
            StatusCode::NOT_FOUND,
            "user_not_found",
            "User from sub claim in JWT does not exist",
        )
    })?;
    Ok(Json(user.to_json()).into_response())
}

#[derive(Deserialize)]
pub struct LogoutQuery {
    scope: Option<String>,
}

/// `POST /logout?scope=global|local|others`: 204; the refresh tokens of the affected sessions stop working.
pub async fn logout(
    State(s): Shared,
    Query(q): Query<LogoutQuery>,
    headers: HeaderMap,
) -> Result<Response, AuthError> {
    let claims = authenticated(&s, &headers).await?;
    let db = s.pool.get().await?;
    let (sql, arg): (&str, Uuid) = match q.scope.as_deref().unwrap_or("global") {
        "global" => ("delete from auth.sessions where user_id = $1", claims.sub),
        "local" => ("delete from auth.sessions where id = $1", claims.session_id),
        "others" => (
            "delete from auth.sessions where user_id = (select user_id from auth.sessions where id = $1) and id <> $1",
            claims.session_id,
        ),
        other => {
            return Err(AuthError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                format!("Unsupported logout scope {other:?}"),
            ));
        }
    };
    db.query_typed(sql, &[(&arg, Type::UUID)]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /settings`.
pub async fn settings(State(s): Shared) -> Json<serde_json::Value> {
    let a = s.auth();
    Json(serde_json::json!({
        "external": { "anonymous_users": a.enable_anonymous_sign_ins, "email": true, "phone": false, "google": false },
        "disable_signup": !a.enable_signup,
        "mailer_autoconfirm": a.mailer_autoconfirm,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
    }))
}

/// `GET /.well-known/jwks.json`: the public keys user tokens verify with.
pub async fn jwks(State(s): Shared) -> Response {
    Json(s.config.keys.jwks()).into_response()
}
