//! Sessions and tokens the way GoTrue issues them: an access token with GoTrue's claims (signed as
//! [`crate::keys::ProjectKeys::sign`] says), and an
//! opaque refresh token per session that rotates on every use. A rotated (revoked) token is honoured
//! as GoTrue's token service does: the parent of the session's active token, at any time, gets that
//! active token back (the client never stored the answer of its refresh); any other within the
//! reuse interval gets a new token swapped in for it; used after that, it revokes the whole family
//! and fails with `refresh_token_already_used`.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::AuthError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Amr {
    pub method: String,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: Uuid,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub email: String,
    pub phone: String,
    pub app_metadata: serde_json::Value,
    pub user_metadata: serde_json::Value,
    pub role: String,
    pub aal: String,
    pub amr: Vec<Amr>,
    pub session_id: Uuid,
    pub is_anonymous: bool,
}

/// The user columns every response needs.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub aud: String,
    pub role: String,
    pub email: Option<String>,
    pub email_confirmed_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub app_metadata: serde_json::Value,
    pub user_metadata: serde_json::Value,
    pub is_anonymous: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const USER_COLUMNS: &str = "id, aud, role, email, email_confirmed_at, last_sign_in_at, raw_app_meta_data, \
     raw_user_meta_data, is_anonymous, created_at, updated_at";

impl UserRow {
    pub fn from_row(r: &tokio_postgres::Row) -> UserRow {
        UserRow {
            id: r.get(0),
            aud: r.get(1),
            role: r.get(2),
            email: r.get(3),
            email_confirmed_at: r.get(4),
            last_sign_in_at: r.get(5),
            app_metadata: r.get(6),
            user_metadata: r.get(7),
            is_anonymous: r.get(8),
            created_at: r.get(9),
            updated_at: r.get(10),
        }
    }

    /// GoTrue's `User` object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "aud": self.aud, "role": self.role,
            "email": self.email.clone().unwrap_or_default(), "phone": "",
            "email_confirmed_at": self.email_confirmed_at, "confirmed_at": self.email_confirmed_at,
            "last_sign_in_at": self.last_sign_in_at,
            "app_metadata": self.app_metadata, "user_metadata": self.user_metadata,
            "identities": [], "is_anonymous": self.is_anonymous,
            "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }
}

fn new_refresh_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 22)
}

/// Starts a session for `user` and returns the token response.
pub async fn start_session(
    db: &impl GenericClient,
    s: &super::AuthState,
    user: &UserRow,
    method: &str,
) -> Result<serde_json::Value, AuthError> {
    let session: Uuid = db
        .query_typed(
            "insert into auth.sessions (user_id) values ($1) returning id",
            &[(&user.id, Type::UUID)],
        )
        .await?[0]
        .get(0);
    let token = new_refresh_token();
    insert_refresh_token(db, &token, user.id, session, None).await?;
    token_response(s, user, session, &token, method)
}

async fn insert_refresh_token(
    db: &impl GenericClient,
    token: &str,
    user: Uuid,
    session: Uuid,
    parent: Option<&str>,
) -> Result<(), AuthError> {
    db.query_typed(
        "insert into auth.refresh_tokens (token, user_id, session_id, parent) values ($1, $2, $3, $4)",
        &[(&token, Type::TEXT), (&user, Type::UUID), (&session, Type::UUID), (&parent, Type::TEXT)],
    )
    .await?;
    Ok(())
}

pub fn access_token(
    s: &super::AuthState,
    user: &UserRow,
    session: Uuid,
    method: &str,
) -> Result<(String, i64), AuthError> {
    let now = Utc::now().timestamp();
    let claims = AccessClaims {
        iss: format!("{}/auth/v1", s.config.public_url),
        sub: user.id,
        aud: user.aud.clone(),
        exp: now + s.auth().jwt_expiry_s,
        iat: now,
        email: user.email.clone().unwrap_or_default(),
        phone: String::new(),
        app_metadata: user.app_metadata.clone(),
        user_metadata: user.user_metadata.clone(),
        role: user.role.clone(),
        aal: "aal1".into(),
        amr: vec![Amr {
            method: method.into(),
            timestamp: now,
        }],
        session_id: session,
        is_anonymous: user.is_anonymous,
    };
    let jwt = s.config.keys.sign(&claims).map_err(AuthError::internal)?;
    Ok((jwt, claims.exp))
}

fn token_response(
    s: &super::AuthState,
    user: &UserRow,
    session: Uuid,
    refresh_token: &str,
    method: &str,
) -> Result<serde_json::Value, AuthError> {
    let (jwt, exp) = access_token(s, user, session, method)?;
    Ok(serde_json::json!({
        "access_token": jwt, "token_type": "bearer", "expires_in": s.auth().jwt_expiry_s, "expires_at": exp,
        "refresh_token": refresh_token, "user": user.to_json(),
    }))
}

fn not_found() -> AuthError {
    AuthError::new(
        StatusCode::BAD_REQUEST,
        "refresh_token_not_found",
        "Invalid Refresh Token: Refresh Token Not Found",
    )
}

/// The refresh grant, in one transaction with the token row locked.
pub async fn refresh(
    client: &mut deadpool_postgres::Object,
    s: &super::AuthState,
    token: &str,
) -> Result<serde_json::Value, AuthError> {
    let tx = client.transaction().await?;
    let rows = tx
        .query_typed(
            "select user_id, session_id, revoked, now() - updated_at <= make_interval(secs => $2) \
             from auth.refresh_tokens where token = $1 for update",
            &[
                (&token, Type::TEXT),
                (&(s.auth().refresh_reuse_interval_s as f64), Type::FLOAT8),
            ],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Err(not_found());
    };
    let (user_id, session, revoked, within_reuse): (Uuid, Uuid, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let user = load_user(&*tx, user_id).await?.ok_or_else(not_found)?;

    if revoked {
        let active = tx
            .query_typed(
                "select token, parent from auth.refresh_tokens where session_id = $1 and not revoked order by id desc limit 1",
                &[(&session, Type::UUID)],
            )
            .await?;
        if let Some(active) = active.first()
            && active.get::<_, Option<String>>(1).as_deref() == Some(token)
        {
            let current: String = active.get(0);
            tx.commit().await?;
            return token_response(s, &user, session, &current, "token_refresh");
        }
        if within_reuse {
            return swap(tx, s, &user, session, token).await;
        }
        // Reuse outside the interval: the family is compromised, every token of the session is revoked
        // (GoTrue's RevokeTokenFamily; the session row itself stays).
        tx.query_typed(
            "update auth.refresh_tokens set revoked = true, updated_at = now() where session_id = $1 and not revoked",
            &[(&session, Type::UUID)],
        )
        .await?;
        tx.commit().await?;
        return Err(AuthError::new(
            StatusCode::BAD_REQUEST,
            "refresh_token_already_used",
            "Invalid Refresh Token: Already Used",
        ));
    }

    swap(tx, s, &user, session, token).await
}

/// Rotation (GoTrue's `GrantRefreshTokenSwap`): `token` revoked, a new one issued as its child.
async fn swap(
    tx: deadpool_postgres::Transaction<'_>,
    s: &super::AuthState,
    user: &UserRow,
    session: Uuid,
    token: &str,
) -> Result<serde_json::Value, AuthError> {
    tx.query_typed(
        "update auth.refresh_tokens set revoked = true, updated_at = now() where token = $1 and not revoked",
        &[(&token, Type::TEXT)],
    )
    .await?;
    let next = new_refresh_token();
    insert_refresh_token(&*tx, &next, user.id, session, Some(token)).await?;
    tx.query_typed(
        "update auth.sessions set refreshed_at = now(), updated_at = now() where id = $1",
        &[(&session, Type::UUID)],
    )
    .await?;
    tx.commit().await?;
    token_response(s, user, session, &next, "token_refresh")
}

pub async fn load_user(db: &impl GenericClient, id: Uuid) -> Result<Option<UserRow>, AuthError> {
    let rows = db
        .query_typed(
            &format!("select {USER_COLUMNS} from auth.users where id = $1"),
            &[(&id, Type::UUID)],
        )
        .await?;
    Ok(rows.first().map(UserRow::from_row))
}
