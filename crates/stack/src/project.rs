//! The parts of `supabase/config.toml` (the Supabase CLI's project file) that the local API stand-ins
//! honour, so that the embedded stack and `supabase start` read the same settings: `[api]` (exposed
//! schemas, `max_rows`) and `[auth]` (token lifetime, refresh reuse interval, sign-up switches, the
//! `[auth.rate_limit]` buckets). Unknown sections and keys are the CLI's business and are ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Result, StackError, io_err};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProjectConfig {
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    pub schemas: Vec<String>,
    pub max_rows: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            schemas: vec!["public".into()],
            max_rows: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    pub jwt_expiry: i64,
    pub refresh_token_reuse_interval: i64,
    pub enable_signup: bool,
    pub enable_anonymous_sign_ins: bool,
    pub minimum_password_length: usize,
    pub rate_limit: AuthRateLimits,
    pub email: AuthEmail,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_expiry: 3600,
            refresh_token_reuse_interval: 10,
            enable_signup: true,
            enable_anonymous_sign_ins: false,
            minimum_password_length: 6,
            rate_limit: AuthRateLimits::default(),
            email: AuthEmail::default(),
        }
    }
}

/// `[auth.rate_limit]`, in the CLI's units: requests per 5 minutes per IP (anonymous sign-ins: per
/// hour). The defaults are GoTrue's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthRateLimits {
    pub token_refresh: u32,
    pub sign_in_sign_ups: u32,
    pub anonymous_users: u32,
    pub token_verifications: u32,
}

impl Default for AuthRateLimits {
    fn default() -> Self {
        AuthRateLimits {
            token_refresh: 150,
            sign_in_sign_ups: 30,
            anonymous_users: 30,
            token_verifications: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthEmail {
    pub enable_confirmations: bool,
}

impl ProjectConfig {
    /// Reads `<supabase_dir>/config.toml`; a missing file gives the CLI's defaults.
    pub fn load(supabase_dir: &Path) -> Result<ProjectConfig> {
        let path = supabase_dir.join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| StackError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProjectConfig::default()),
            Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }
}

/// Whether the local Auth stand-in applies GoTrue's per-IP rate limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// No rate limits: demos and functional tests.
    #[default]
    Unlimited,
    /// The `[auth.rate_limit]` buckets, as a hosted project applies them to one client IP.
    Hosted,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "unlimited" => Ok(Profile::Unlimited),
            "hosted" => Ok(Profile::Hosted),
            other => Err(format!(
                "unknown stack profile {other:?}: expected `hosted` or `unlimited`"
            )),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Unlimited => "unlimited",
            Profile::Hosted => "hosted",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projects_config_reads_and_defaults_fill_gaps() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ProjectConfig::load(dir.path()).unwrap().auth.jwt_expiry,
            3600
        );
        std::fs::write(
            dir.path().join("config.toml"),
            "project_id = \"x\"\n[api]\nmax_rows = 50\n[auth]\nenable_anonymous_sign_ins = true\n\
             [auth.rate_limit]\ntoken_refresh = 7\n[functions.f]\nverify_jwt = false\n",
        )
        .unwrap();
        let c = ProjectConfig::load(dir.path()).unwrap();
        assert_eq!(c.api.max_rows, 50);
        assert_eq!(c.api.schemas, vec!["public".to_string()]);
        assert!(c.auth.enable_anonymous_sign_ins);
        assert_eq!(c.auth.rate_limit.token_refresh, 7);
        assert_eq!(c.auth.rate_limit.anonymous_users, 30);
        std::fs::write(
            dir.path().join("config.toml"),
            "[auth]\njwt_expiry = \"soon\"\n",
        )
        .unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("config.toml") && err.contains("jwt_expiry"),
            "{err}"
        );
    }
}
