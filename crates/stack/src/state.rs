//! The state file of a running stack (`<instance>/state.json`, mode 0600: it holds secrets): which
//! ports and pids each service has, the secrets, and the connection settings users and the
//! fleet engine derive from it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Result, StackError, io_err};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceState {
    pub port: u16,
    pub pid: Option<u32>,
}

/// A hosted compute size's connection limits, as the stack applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compute {
    /// The size's name (`Micro`, `Small`, …).
    pub name: String,
    /// PostgreSQL's `max_connections` ("direct connections").
    pub max_connections: u32,
    /// Each pooler's most clients ("pooler clients").
    pub pooler_clients: u32,
    /// Server connections per pool: the size's published default pool size (15 up to Medium,
    /// 20, 20, 25, 32, 64, 96, 128 from Large to 16XL). A state file from before it was kept
    /// reads as 0: a quarter of `max_connections` then, as before.
    #[serde(default)]
    pub pool_size: u32,
}

impl Compute {
    /// Server connections per pooler pool.
    pub fn pool_size(&self) -> u32 {
        if self.pool_size > 0 {
            self.pool_size
        } else {
            (self.max_connections / 4).max(1)
        }
    }
}

/// The poolers' database entry for the Data API's `authenticator` under tenant users (the
/// `postgres` entry logs in as `postgres` whoever the client is, as Supavisor does).
pub const AUTHENTICATOR_DB: &str = "postgres_authenticator";

/// A hosted plan: Realtime's limits are the plan's, not the compute size's (Supabase's Realtime
/// limits page: concurrent connections, messages and channel joins per second; 100 channels per
/// connection on every plan). A Pro project without its spend cap has Team's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Free,
    Pro,
    Team,
}

impl Plan {
    /// Realtime's (concurrent connections, messages per second, channel joins per second).
    pub fn realtime_limits(self) -> (u32, u32, u32) {
        match self {
            Plan::Free => (200, 100, 100),
            Plan::Pro => (500, 500, 500),
            Plan::Team => (10_000, 2_500, 2_500),
        }
    }
}

impl std::str::FromStr for Plan {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "free" => Ok(Plan::Free),
            "pro" => Ok(Plan::Pro),
            "team" => Ok(Plan::Team),
            other => Err(format!("{other:?} is not a plan: free, pro or team")),
        }
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Team => "team",
        })
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub postgres_password: String,
    pub authenticator_password: String,
    pub jwt_secret: String,
    pub anon_key: String,
    pub service_role_key: String,
    /// The publishable and secret keys (made on the first `up` that lacks them).
    #[serde(default)]
    pub opaque: Option<crate::keys::OpaqueKeys>,
    /// The user tokens' signing key (used under the `hosted` profile).
    #[serde(default)]
    pub signing: Option<crate::keys::SigningKeyPem>,
    /// The Management API's personal access token (`sbp_…`, made on the first `up` that lacks it).
    #[serde(default)]
    pub access_token: Option<String>,
}

/// Never printed: `{:?}` of a state shows that secrets exist, not what they are.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { <redacted> }")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionState {
    pub port: u16,
    pub pid: Option<u32>,
    pub verify_jwt: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackState {
    pub instance: std::path::PathBuf,
    /// `bin/` of the PostgreSQL the cluster was created with (for `pg_ctl stop` without reinstalling).
    pub pg_bin: std::path::PathBuf,
    pub postgres: ServiceState,
    /// PgBouncer in transaction mode: the stand-in for Supavisor's port 6543.
    pub pooler_transaction: ServiceState,
    /// PgBouncer in session mode: the stand-in for Supavisor's port 5432.
    pub pooler_session: ServiceState,
    /// The stack daemon (scheduler today; the HTTP gateway attaches here).
    pub daemon: Option<ServiceState>,
    pub functions: BTreeMap<String, FunctionState>,
    pub secrets: Secrets,
    pub started_at: String,
    /// The project's `supabase/` folder the stack serves (config.toml, functions/).
    #[serde(default)]
    pub supabase_dir: Option<std::path::PathBuf>,
    /// The certificates the gateway and the poolers serve TLS with (the `hosted` profile); none
    /// for plain HTTP and plaintext Postgres.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsFiles>,
    /// Whether the Auth stand-in applies hosted rate limits.
    #[serde(default)]
    pub profile: crate::project::Profile,
    /// The project ref (20 lowercase letters, as hosted): under the `hosted` profile the poolers'
    /// user is Supavisor's tenant form, `postgres.<ref>`.
    #[serde(default)]
    pub project_ref: Option<String>,
    /// GoTrue honours `Sb-Forwarded-For` on requests with the secret key.
    #[serde(default)]
    pub ip_forwarding: bool,
    /// The compute size whose connection limits the stack applies; none: generous local limits.
    #[serde(default)]
    pub compute: Option<Compute>,
    /// The plan whose Realtime limits the stack applies (the `hosted` profile).
    #[serde(default)]
    pub plan: Option<Plan>,
}

impl StackState {
    pub fn load(path: &Path) -> Result<StackState> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StackError::NotRunning(path.display().to_string()));
            }
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            StackError::Config(format!("{} is not a stack state file: {e}", path.display()))
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        let text = serde_json::to_string_pretty(self).expect("state serialises");
        f.write_all(text.as_bytes())
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io_err(format!("writing {}", path.display())))
    }

    /// Direct superuser connection (migrations, maintenance, probes that need the real server).
    /// Plaintext even with TLS on: PostgreSQL's build has no TLS, so this port is the stack's own
    /// (`stack env` hands out only the poolers).
    pub fn direct_db_url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres?sslmode=disable",
            self.secrets.postgres_password, self.postgres.port
        )
    }
    /// The poolers' user for the `postgres` role: Supavisor's tenant form `postgres.<ref>` under the
    /// `hosted` profile (a bare `postgres` is refused there), `postgres` otherwise.
    pub fn pooler_user(&self) -> String {
        match (&self.project_ref, self.profile) {
            (Some(r), crate::project::Profile::Hosted) => format!("postgres.{r}"),
            _ => "postgres".into(),
        }
    }
    /// `SUPABASE_DB_URL`: the transaction-mode pooler.
    pub fn pooler_db_url(&self) -> String {
        let user = self.pooler_user();
        let port = self.pooler_transaction.port;
        self.url(&user, &self.secrets.postgres_password, port, "postgres")
    }
    /// `SUPABASE_DB_SESSION_URL`: the session-mode pooler.
    pub fn session_db_url(&self) -> String {
        let user = self.pooler_user();
        let port = self.pooler_session.port;
        self.url(&user, &self.secrets.postgres_password, port, "postgres")
    }
    /// The role the Data API stand-in logs in as, through the transaction pooler (under tenant
    /// users, through the pooler's own database entry for it, [`AUTHENTICATOR_DB`]).
    pub fn authenticator_db_url(&self) -> String {
        let db = if self.pooler_user() == "postgres" {
            "postgres"
        } else {
            AUTHENTICATOR_DB
        };
        let (password, port) = (
            &self.secrets.authenticator_password,
            self.pooler_transaction.port,
        );
        self.url("authenticator", password, port, db)
    }
    /// `SUPABASE_URL`: the daemon's HTTP gateway, when the daemon runs.
    pub fn api_url(&self) -> Option<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.daemon
            .as_ref()
            .map(|d| format!("{scheme}://127.0.0.1:{}", d.port))
    }
    pub fn function_url(&self, name: &str) -> Option<String> {
        self.functions
            .get(name)
            .map(|f| format!("http://127.0.0.1:{}", f.port))
    }

    /// A pooler's URL: TLS verified against the stack's CA when the stack serves TLS.
    fn url(&self, user: &str, password: &str, port: u16, db: &str) -> String {
        let tls = match &self.tls {
            Some(t) => format!(
                "sslmode=verify-full&sslrootcert={}",
                url::form_urlencoded::byte_serialize(t.ca.display().to_string().as_bytes())
                    .collect::<String>()
            ),
            None => "sslmode=disable".into(),
        };
        format!("postgres://{user}:{password}@127.0.0.1:{port}/{db}?{tls}")
    }

    /// The `export …` lines of `fleetbench stack env`, in INTERFACE.md's order.
    pub fn env_exports(&self) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        if let Some(url) = self.api_url() {
            vars.push(("SUPABASE_URL", url));
        }
        vars.extend([
            ("SUPABASE_ANON_KEY", self.secrets.anon_key.clone()),
            (
                "SUPABASE_SERVICE_ROLE_KEY",
                self.secrets.service_role_key.clone(),
            ),
            ("SUPABASE_DB_URL", self.pooler_db_url()),
            ("SUPABASE_DB_SESSION_URL", self.session_db_url()),
            ("SUPABASE_JWT_SECRET", self.secrets.jwt_secret.clone()),
        ]);
        if let Some(k) = &self.secrets.opaque {
            vars.push(("SUPABASE_PUBLISHABLE_KEY", k.publishable.clone()));
            vars.push(("SUPABASE_SECRET_KEY", k.secret.clone()));
        }
        if let Some(t) = &self.tls {
            vars.push(("FLEETBENCH_CA_FILE", t.ca.display().to_string()));
        }
        if let Some(r) = &self.project_ref {
            vars.push(("SUPABASE_PROJECT_REF", r.clone()));
        }
        // The Management API, served by the gateway under the `hosted` profile.
        if let (Some(token), Some(url), crate::project::Profile::Hosted) =
            (&self.secrets.access_token, self.api_url(), self.profile)
        {
            vars.push(("SUPABASE_ACCESS_TOKEN", token.clone()));
            vars.push(("FLEETBENCH_MANAGEMENT_API", url));
        }
        vars
    }

    /// Every pid the state knows of.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = [
            &self.postgres,
            &self.pooler_transaction,
            &self.pooler_session,
        ]
        .into_iter()
        .chain(self.daemon.as_ref())
        .filter_map(|s| s.pid)
        .collect();
        pids.extend(self.functions.values().filter_map(|f| f.pid));
        pids
    }
}
