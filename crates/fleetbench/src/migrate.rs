//! `fleetbench migrate`: apply `migrations/` to the chosen database (the local stack by default).

use std::path::Path;

use anyhow::Context;
use fleetbench_schema::{apply, load_dir};

use crate::{Failure, local};

/// Which database `migrate` targets: the flag, then SUPABASE_DB_SESSION_URL / SUPABASE_DB_URL when a
/// remote project is selected, else the local stack (started on demand) over a direct connection.
pub fn target_url(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(url) = flag {
        return Ok(url);
    }
    if std::env::var_os("SUPABASE_URL").is_some() {
        return std::env::var("SUPABASE_DB_SESSION_URL")
            .or_else(|_| std::env::var("SUPABASE_DB_URL"))
            .context("SUPABASE_URL is set, so a remote project is targeted, but neither SUPABASE_DB_SESSION_URL nor SUPABASE_DB_URL is: set one or pass --db-url");
    }
    Ok(local::ensure_up(None)?.direct_db_url())
}

pub fn run(db_url: Option<String>, dir: &Path) -> Result<(), Failure> {
    let line = apply_dir(db_url, dir)?;
    println!("{line}");
    Ok(())
}

/// Applies the folder's migrations and returns the one-line account of what was done.
pub fn apply_dir(db_url: Option<String>, dir: &Path) -> Result<String, Failure> {
    let migrations = load_dir(dir).map_err(Failure::invalid)?;
    let url = target_url(db_url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connecting to the database: {}",
                    fleetbench_stack::db_error_text(&e)
                )
            })?;
        tokio::spawn(conn);
        anyhow::Ok(
            apply(&mut client, &migrations, &mut |line| {
                eprintln!("migrate: {line}")
            })
            .await?,
        )
    })?;
    Ok(format!(
        "migrations: {} applied now, {} already applied ({} in {})",
        report.applied.len(),
        report.already_applied,
        migrations.len(),
        dir.display()
    ))
}
