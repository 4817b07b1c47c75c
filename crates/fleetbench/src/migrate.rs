//! `fleetbench migrate`: apply `migrations/` to the chosen database (the local stack by default).

use std::path::Path;

use anyhow::Context;
use fleetbench_schema::{apply, load_dir};

use crate::{CommandError, local, target};

/// The database `migrate` targets, and where the project's API is with its service-role key when
/// known (the alerts' database webhook posts to `<api>/functions/v1/anomaly-webhook` with it).
/// The database is the flag's, then SUPABASE_DB_SESSION_URL / SUPABASE_DB_URL when a remote
/// project is selected, else the local stack's (started on demand) over a direct connection.
fn database(flag: Option<String>) -> Result<(String, Option<(String, String)>), CommandError> {
    let remote_api = std::env::var("SUPABASE_URL").ok().and_then(|url| {
        let key = std::env::var("SUPABASE_SERVICE_ROLE_KEY")
            .or_else(|_| std::env::var("SUPABASE_SECRET_KEY"))
            .ok()?;
        Some((url, key))
    });
    if let Some((url, _)) = &remote_api {
        target::check_allowed("SUPABASE_URL", url, &[])?;
    }
    if let Some(url) = flag {
        target::check_db_allowed("--db-url", &url, &[])?;
        return Ok((url, remote_api));
    }
    if std::env::var_os("SUPABASE_URL").is_some() {
        let (name, url) = ["SUPABASE_DB_SESSION_URL", "SUPABASE_DB_URL"]
            .into_iter()
            .find_map(|n| Some((n, target::env(&[n])?)))
            .context("SUPABASE_URL is set, so a remote project is targeted, but neither SUPABASE_DB_SESSION_URL nor SUPABASE_DB_URL is: set one or pass --db-url")?;
        target::check_db_allowed(name, &url, &[])?;
        return Ok((url, remote_api));
    }
    let state = local::ensure_up(None)?;
    let api = state
        .api_url()
        .map(|api| (api, state.secrets.service_role_key.clone()));
    Ok((state.direct_db_url(), api))
}

pub fn run(db_url: Option<String>, dir: &Path) -> Result<(), CommandError> {
    let line = apply_dir(db_url, dir)?;
    println!("{line}");
    Ok(())
}

/// Applies the folder's migrations and returns the one-line account of what was done.
pub fn apply_dir(db_url: Option<String>, dir: &Path) -> Result<String, CommandError> {
    let migrations = load_dir(dir).map_err(CommandError::invalid)?;
    let (url, webhook) = database(db_url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let pg = fleetbench_tls::pg::PgConnect::parse(&url)
            .map_err(|e| anyhow::anyhow!("the database URL: {e}"))?;
        let mut client = pg.connect().await.map_err(|e| {
            anyhow::anyhow!(
                "connecting to the database: {}",
                fleetbench_stack::db_error_text(&e)
            )
        })?;
        let report = apply(&mut client, &migrations, &mut |line| {
            eprintln!("migrate: {line}")
        })
        .await?;
        match &webhook {
            // A `verify_jwt` function refuses an opaque key as its bearer: only a JWT will do.
            Some((_, key)) if key.starts_with("sb_") => eprintln!(
                "migrate: alert webhook target left as it is: anomaly-webhook has verify_jwt = true, which takes the legacy service_role JWT, not an sb_secret_ key; set SUPABASE_SERVICE_ROLE_KEY to the project's legacy service_role key to point the webhook at it"
            ),
            Some((api, key)) => {
                let url = format!("{}/functions/v1/anomaly-webhook", api.trim_end_matches('/'));
                let headers = serde_json::json!({
                    "Content-Type": "application/json",
                    "apikey": key,
                    "Authorization": format!("Bearer {key}"),
                });
                // An unnamed statement: the URL may be the transaction pooler.
                let n = client
                    .query_typed(
                        "update fleetbench.webhook_targets set url = $1, headers = $2 \
                         where name = 'anomaly-webhook' \
                           and exists (select 1 from pg_namespace where nspname = 'net') \
                         returning 1",
                        &[
                            (&url, tokio_postgres::types::Type::TEXT),
                            (&headers, tokio_postgres::types::Type::JSONB),
                        ],
                    )
                    .await
                    .map_or(0, |rows| rows.len());
                if n == 1 {
                    eprintln!("migrate: alert webhook posts to {url}");
                }
            }
            None => eprintln!(
                "migrate: alert webhook target left as it is (set SUPABASE_SERVICE_ROLE_KEY to point it at this project's anomaly-webhook function)"
            ),
        }
        anyhow::Ok(report)
    })?;
    Ok(format!(
        "migrations: {} applied now, {} already applied ({} in {})",
        report.applied.len(),
        report.already_applied,
        migrations.len(),
        dir.display()
    ))
}
