//! The `fleetbench` binary end to end, as a user types it.
//!
//! Contents:
//! - stack: `stack up` → the gateway answers Auth → `migrate` (twice) → the daemon's scheduler runs
//!   the partition maintenance → the Data API serves the new tables → Edge Functions answer behind
//!   `verify_jwt` → a smoke fleet run with the webhook and rls probes beside it, and `probe rls`
//!   alone (report path, exit 0; a crossed threshold exits 99; a broken
//!   scenario exits 2 with its location; no secret in any output) → `stack up --profile hosted`
//!   rate-limits `/token` → `stack down` leaves nothing behind.
//! - input errors: a migrations folder with a misnamed file exits 2 before connecting.
//! - [`collect`]: record a trace, calibrate a profile, use both in a scenario.
//! - [`capacity`]: the knee of a saturating sink; `compare` of capacity runs.
//! - [`safety`]: remote targets need an allowlist; hard caps; an unwritable run directory.
//! - [`goose`]: the goose front end's cross-check against a sink (its local-stack run is in stack).
//! - [`faults`]: fault survival against a misbehaving sink (5xx, 429 with and without Retry-After,
//!   answers past the timeout, answers broken off, refused refresh tokens).
//! - [`stack_faults`]: the gateway, PgBouncer and Postgres killed under a running fleet and probe.
//! - [`signals`]: SIGINT/SIGTERM write the whole run directory; a second signal exits at once.
//! - [`deploy`]: the Kubernetes manifests and the staging workflow, parsed.

mod capacity;
mod collect;
mod deploy;
mod faults;
#[cfg(feature = "goose")]
mod goose;
mod safety;
mod signals;
mod stack;
mod stack_faults;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fleetbench_stack::testing::workspace_root;
use fleetbench_stack::{StackPaths, process};

fn fleetbench(instance: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args(args)
        .current_dir(workspace_root())
        .env("FLEETBENCH_HOME", workspace_root().join(".fleetbench"))
        .env("FLEETBENCH_STACK_DIR", instance)
        .env_remove("SUPABASE_URL")
        .output()
        .expect("running fleetbench")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Removes the instance even when the test fails half-way.
struct Instance(PathBuf);
impl Drop for Instance {
    fn drop(&mut self) {
        fleetbench_stack::testing::remove_instance(&StackPaths {
            home: PathBuf::new(),
            instance: self.0.clone(),
        });
    }
}

#[test]
fn misnamed_migration_is_invalid_input() {
    let migrations = tempfile::tempdir().unwrap();
    std::fs::write(migrations.path().join("001_init.sql"), "select 1").unwrap();
    let out = fleetbench(
        Path::new("/nonexistent"),
        &[
            "migrate",
            "--dir",
            migrations.path().to_str().unwrap(),
            "--db-url",
            "postgres://nobody@127.0.0.1:1/x",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("001_init.sql") && stderr.contains("14 digits"),
        "{stderr}"
    );
}
