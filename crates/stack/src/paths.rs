//! Where things live. The *home* holds what is installed once and shared (the Python venv with
//! PostgreSQL and Deno, the Deno cache); an *instance* is one stack: its cluster, logs and state file.
//! Several instances (the CLI's and each test binary's) share one home.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StackPaths {
    pub home: PathBuf,
    pub instance: PathBuf,
}

impl StackPaths {
    /// The CLI's stack: `$FLEETBENCH_HOME` (default `./.fleetbench`), instance
    /// `$FLEETBENCH_STACK_DIR` (default `<home>/stack`).
    pub fn from_env() -> StackPaths {
        let home = std::env::var_os("FLEETBENCH_HOME")
            .map(|h| absolute(&PathBuf::from(h)))
            .unwrap_or_else(|| reachable_home(absolute(Path::new(".fleetbench"))));
        let instance = std::env::var_os("FLEETBENCH_STACK_DIR")
            .map(|d| absolute(&PathBuf::from(d)))
            .unwrap_or_else(|| home.join("stack"));
        StackPaths { instance, home }
    }

    pub fn venv(&self) -> PathBuf {
        self.home.join("venv")
    }
    pub fn deno_dir(&self) -> PathBuf {
        self.home.join("deno-cache")
    }
    pub fn install_lock(&self) -> PathBuf {
        self.home.join("install.lock")
    }
    pub fn data(&self) -> PathBuf {
        self.instance.join("pgdata")
    }
    pub fn logs(&self) -> PathBuf {
        self.instance.join("log")
    }
    pub fn run(&self) -> PathBuf {
        self.instance.join("run")
    }
    pub fn state_file(&self) -> PathBuf {
        self.instance.join("state.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.instance.join("stack.lock")
    }
}

/// `preferred`, unless the `postgres` service user could not reach binaries installed there (a
/// checkout under `/root`, say): then a shared home under `/var/tmp`.
pub fn reachable_home(preferred: PathBuf) -> PathBuf {
    let probe = preferred.parent().unwrap_or(&preferred);
    if nix::unistd::geteuid().is_root() && untraversable_ancestor(probe).is_some() {
        PathBuf::from("/var/tmp/fleetbench-home")
    } else {
        preferred
    }
}

pub(crate) fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The first ancestor of `path` that another user cannot pass through, if any. The service user
/// must reach both the installed binaries and the instance directory.
pub(crate) fn untraversable_ancestor(path: &Path) -> Option<PathBuf> {
    let mut cur = Some(path);
    while let Some(p) = cur {
        if let Ok(meta) = std::fs::metadata(p)
            && meta.is_dir()
            && meta.permissions().mode() & 0o001 == 0
        {
            return Some(p.to_path_buf());
        }
        cur = p.parent();
    }
    None
}
