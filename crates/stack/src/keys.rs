//! The stack's JWT secret and the two API keys signed with it, shaped like a project's legacy
//! `anon` / `service_role` keys: HS256 JWTs carrying `{"iss":"supabase","ref","role","iat","exp"}`.

use jsonwebtoken::{EncodingKey, Header, encode};
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;

use crate::{Result, StackError};

/// The `ref` claim of the local project.
pub const LOCAL_REF: &str = "local";
/// Ten years, as the CLI's demo keys.
const KEY_LIFETIME_S: i64 = 10 * 365 * 24 * 3600;

#[derive(Serialize)]
struct ApiKeyClaims<'a> {
    iss: &'a str,
    #[serde(rename = "ref")]
    project_ref: &'a str,
    role: &'a str,
    iat: i64,
    exp: i64,
}

/// A random alphanumeric string, used for passwords and the JWT secret.
pub fn random_secret(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// An API key for `role` (`anon` or `service_role`).
pub fn api_key(jwt_secret: &str, role: &str, now_unix: i64) -> Result<String> {
    let claims = ApiKeyClaims {
        iss: "supabase",
        project_ref: LOCAL_REF,
        role,
        iat: now_unix,
        exp: now_unix + KEY_LIFETIME_S,
    };
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(jwt_secret.as_bytes()),
    )
    .map_err(|e| StackError::Config(format!("signing the {role} key: {e}")))
}
