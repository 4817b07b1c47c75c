//! The project's keys, as the hosted API gateway and services check them. Two kinds of API key:
//! the legacy `anon` / `service_role` JWTs signed with the project's JWT secret (HS256), and the
//! opaque `sb_publishable_…` / `sb_secret_…` keys, which are not JWTs. An opaque key sent as
//! `Authorization: Bearer` (as the SDKs forward it) counts as that key, never as a user token.
//! User access tokens are signed with the asymmetric signing key (ES256, its `kid` in the header,
//! the public half at `/auth/v1/.well-known/jwks.json`) when the project has one (the `hosted`
//! profile), else with the JWT secret; both verify, as on a project that has rotated to
//! asymmetric keys.

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The role an API key grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Anon,
    ServiceRole,
}

impl KeyRole {
    /// The Postgres role the key acts as.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Anon => "anon",
            KeyRole::ServiceRole => "service_role",
        }
    }
}

/// The asymmetric key user access tokens are signed with.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey {{ kid: {:?}, <private> }}", self.kid)
    }
}

impl SigningKey {
    /// An ES256 key from its PKCS#8 PEM, published under `kid`.
    pub fn from_pem(kid: &str, pem: &str) -> Result<SigningKey, jsonwebtoken::errors::Error> {
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes())?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)?;
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_operations = Some(vec![KeyOperations::Verify]);
        Ok(SigningKey {
            kid: kid.to_string(),
            decoding: DecodingKey::from_jwk(&jwk)?,
            encoding,
            jwk,
        })
    }
}

/// Every key of one project.
#[derive(Clone, Debug)]
pub struct ProjectKeys {
    /// The legacy JWT secret: the legacy API keys, and user tokens when there is no signing key.
    pub jwt_secret: String,
    pub publishable: Option<String>,
    pub secret: Option<String>,
    pub signing: Option<SigningKey>,
}

impl ProjectKeys {
    /// Legacy keys only: HS256 everything.
    pub fn legacy(jwt_secret: &str) -> ProjectKeys {
        ProjectKeys {
            jwt_secret: jwt_secret.to_string(),
            publishable: None,
            secret: None,
            signing: None,
        }
    }

    /// The role `token` grants as an opaque key, if it is one.
    pub fn opaque_role(&self, token: &str) -> Option<KeyRole> {
        if self.publishable.as_deref() == Some(token) {
            Some(KeyRole::Anon)
        } else if self.secret.as_deref() == Some(token) {
            Some(KeyRole::ServiceRole)
        } else {
            None
        }
    }

    /// The role an `apikey` grants: an opaque key's, or a legacy key JWT's.
    pub fn key_role(&self, key: &str) -> Option<KeyRole> {
        self.opaque_role(key)
            .or_else(|| match self.jwt_role(key).as_deref() {
                Some("anon") => Some(KeyRole::Anon),
                Some("service_role") => Some(KeyRole::ServiceRole),
                _ => None,
            })
    }

    /// The claims of a JWT signed by this project (HS256 with the secret, or ES256 with the
    /// signing key its `kid` names): no audience, no claim required; `exp` checked when present
    /// and `check_exp` is set.
    pub fn decode<T: DeserializeOwned>(
        &self,
        token: &str,
        check_exp: bool,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token)?;
        let secret;
        let key = match (header.alg, &self.signing) {
            (Algorithm::HS256, _) => {
                secret = DecodingKey::from_secret(self.jwt_secret.as_bytes());
                &secret
            }
            (Algorithm::ES256, Some(s)) if header.kid.as_deref() == Some(s.kid.as_str()) => {
                &s.decoding
            }
            _ => return Err(ErrorKind::InvalidSignature.into()),
        };
        let mut v = Validation::new(header.alg);
        v.validate_aud = false;
        v.validate_exp = check_exp;
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<T>(token, key, &v).map(|d| d.claims)
    }

    /// A valid JWT's `role` (`exp` checked).
    pub fn jwt_role(&self, token: &str) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Role {
            role: String,
        }
        self.decode::<Role>(token, true).ok().map(|c| c.role)
    }

    /// `claims` as a user access token: ES256 with the signing key's `kid` when there is one.
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, jsonwebtoken::errors::Error> {
        match &self.signing {
            Some(s) => {
                let mut header = Header::new(Algorithm::ES256);
                header.kid = Some(s.kid.clone());
                jsonwebtoken::encode(&header, claims, &s.encoding)
            }
            None => jsonwebtoken::encode(
                &Header::default(),
                claims,
                &EncodingKey::from_secret(self.jwt_secret.as_bytes()),
            ),
        }
    }

    /// The public keys user tokens verify with (GoTrue's JWKS: empty for a legacy-only project).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.signing.iter().map(|s| s.jwk.clone()).collect(),
        }
    }
}
