//! `fleetbench run`: until the fleet engine lands, it prepares the target the scenario would run
//! against (the local stack, migrated) and says so; it sends no load.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{Failure, local, migrate};

pub fn run(scenario: &Path, _out: Option<PathBuf>, _overrides: &[String]) -> Result<(), Failure> {
    let text = std::fs::read_to_string(scenario)
        .with_context(|| format!("reading scenario {}", scenario.display()))
        .map_err(Failure::invalid)?;
    text.parse::<toml::Table>()
        .with_context(|| format!("{} is not valid TOML", scenario.display()))
        .map_err(Failure::invalid)?;
    if std::env::var_os("SUPABASE_URL").is_none() {
        local::ensure_up(None)?;
        migrate::run(None, Path::new("migrations"))?;
        local::status()?;
    }
    println!(
        "the target is ready; the fleet engine (issue 5) is not built yet, so {} sent no load",
        scenario.display()
    );
    Ok(())
}
