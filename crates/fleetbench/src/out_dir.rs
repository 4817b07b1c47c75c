//! Where a command writes its run directory: the default name, and a check made before anything is
//! sent that the directory can be written.

use std::path::{Path, PathBuf};

use crate::CommandError;

/// Creates `dir` and checks that a file can be written there; invalid input (exit 2) otherwise.
pub(crate) fn writable(dir: &Path) -> Result<(), CommandError> {
    let probe = dir.join(".fleetbench-write-check");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            CommandError::invalid(anyhow::anyhow!(
                "the run directory {} cannot be written ({e}): choose another --out; nothing was sent",
                dir.display()
            ))
        })
}

pub fn default_out(name: &str) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    PathBuf::from("reports").join(format!("{stamp}-{name}"))
}
