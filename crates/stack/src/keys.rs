//! The stack's keys, shaped like a hosted project's: the JWT secret and the two legacy API keys signed
//! with it (`anon` / `service_role`: HS256 JWTs carrying `{"iss":"supabase","ref","role","iat","exp"}`),
//! the opaque publishable and secret keys (`sb_publishable_…`, `sb_secret_…`, not JWTs), and the
//! asymmetric key (ES256) user access tokens are signed with under the `hosted` profile.

use jsonwebtoken::{EncodingKey, Header, encode};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

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

/// The new API keys: opaque strings, not JWTs.
#[derive(Clone, Serialize, Deserialize)]
pub struct OpaqueKeys {
    pub publishable: String,
    pub secret: String,
}

/// The key user access tokens are signed with: its id in the JWKS and its PKCS#8 PEM.
#[derive(Clone, Serialize, Deserialize)]
pub struct SigningKeyPem {
    pub kid: String,
    pub private_pem: String,
}

/// A project ref as hosted ones look: 20 lowercase letters.
pub fn project_ref() -> String {
    (0..20)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect()
}

/// A Management API personal access token as hosted ones look: `sbp_` and 40 hex digits.
pub fn access_token() -> String {
    let hex: String = (0..40)
        .map(|_| char::from_digit(rand::random_range(0..16u32), 16).expect("a hex digit"))
        .collect();
    format!("sbp_{hex}")
}

/// A fresh publishable and secret key.
pub fn opaque_keys() -> OpaqueKeys {
    OpaqueKeys {
        publishable: format!("sb_publishable_{}", random_secret(31)),
        secret: format!("sb_secret_{}", random_secret(31)),
    }
}

/// A fresh ES256 (P-256) signing key.
pub fn signing_key() -> Result<SigningKeyPem> {
    let key = rcgen::KeyPair::generate()
        .map_err(|e| StackError::Config(format!("making the signing key: {e}")))?;
    Ok(SigningKeyPem {
        kid: uuid_like(),
        private_pem: key.serialize_pem(),
    })
}

/// A key id in GoTrue's shape (a UUID's hex groups).
fn uuid_like() -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(rand::random_range(0..16), 16).unwrap())
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
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
