//! The schema of the system under test, as the Supabase CLI keeps it: `migrations/<14 digits>_<name>.sql`
//! (also reachable as `supabase/migrations`, so `supabase db push` applies the same files to a real
//! project), and a migrator that records applied versions in `supabase_migrations.schema_migrations`
//! exactly where the CLI does, so either tool sees the other's work.
//!
//! # Layout
//! - [`migrations`]: finding and validating migration files.
//! - [`migrator`]: applying the pending ones, each in its own transaction, under an advisory lock.
//! - [`names`]: the table, function and operation names other crates rely on.

pub mod migrations;
pub mod migrator;
pub mod names;

pub use migrations::{Migration, load_dir};
pub use migrator::{MigrateReport, applied_versions, apply};

/// A database error as one line (message and SQLSTATE), as everywhere.
pub use fleetbench_tls::pg::error_text as db_error_text;

/// Connects to `db_url` and applies the migrations in `dir` without progress output: how tests and
/// benches bring a local stack to the project's schema.
pub async fn apply_dir(db_url: &str, dir: &std::path::Path) -> Result<MigrateReport, SchemaError> {
    let pg =
        fleetbench_tls::pg::PgConnect::parse(db_url).map_err(|e| SchemaError::Db(e.to_string()))?;
    let mut client = pg.connect().await?;
    apply(&mut client, &load_dir(dir)?, &mut |_| {}).await
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("migration {version} ({name}) failed: {message}")]
    Apply {
        version: String,
        name: String,
        message: String,
    },
    #[error("database: {0}")]
    Db(String),
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(e: tokio_postgres::Error) -> Self {
        SchemaError::Db(db_message(&e))
    }
}

pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; {detail}"));
            }
            if let Some(pos) = db.position() {
                s.push_str(&format!("; at {pos:?}"));
            }
            s
        }
        None => e.to_string(),
    }
}
