//! Applies pending migrations. Each one runs in its own transaction together with its row in
//! `supabase_migrations.schema_migrations` (the Supabase CLI's table: `version`, `statements`,
//! `name`), so a failure leaves the database as it was before that file. An advisory lock keeps two
//! migrators from applying the same file. Uses only the simple protocol and unnamed statements, so it
//! also works through a transaction-mode pooler.

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::{Migration, SchemaError, db_message};

/// `hashtext('supabase_migrations')`-independent constant, so any client can take the same lock.
const LOCK_KEY: i64 = 0x666c_6565_7462_6e63; // "fleetbnc"

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// `<version>_<name>` of each migration applied now.
    pub applied: Vec<String>,
    /// How many were already applied.
    pub already_applied: usize,
}

const TRACKING_SQL: &str = "
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (version text not null primary key);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text;
";

pub async fn applied_versions(client: &Client) -> Result<Vec<String>, SchemaError> {
    let exists = client
        .query_typed(
            "select to_regclass('supabase_migrations.schema_migrations') is not null",
            &[],
        )
        .await?;
    if !exists[0].get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let rows = client
        .query_typed(
            "select version from supabase_migrations.schema_migrations order by version",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn apply(
    client: &mut Client,
    migrations: &[Migration],
    progress: &mut dyn FnMut(&str),
) -> Result<MigrateReport, SchemaError> {
    client.batch_execute(TRACKING_SQL).await?;
    let mut report = MigrateReport::default();
    for m in migrations {
        let tx = client.transaction().await?;
        tx.query_typed(
            "select pg_advisory_xact_lock($1)",
            &[(&LOCK_KEY, Type::INT8)],
        )
        .await?;
        let done = tx
            .query_typed(
                "select 1 from supabase_migrations.schema_migrations where version = $1",
                &[(&m.version, Type::TEXT)],
            )
            .await?;
        if !done.is_empty() {
            report.already_applied += 1;
            continue;
        }
        progress(&format!("applying {}_{}", m.version, m.name));
        tx.batch_execute(&m.sql)
            .await
            .map_err(|e| SchemaError::Apply {
                version: m.version.clone(),
                name: m.name.clone(),
                message: db_message(&e),
            })?;
        tx.query_typed(
            "insert into supabase_migrations.schema_migrations (version, statements, name) values ($1, $2, $3)",
            &[(&m.version, Type::TEXT), (&vec![m.sql.clone()], Type::TEXT_ARRAY), (&m.name, Type::TEXT)],
        )
        .await?;
        tx.commit().await?;
        report.applied.push(format!("{}_{}", m.version, m.name));
    }
    Ok(report)
}
