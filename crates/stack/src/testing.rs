//! One stack per test binary. The first caller brings it up in a fresh temporary instance (the
//! toolchain in the workspace's `.fleetbench` home is shared and installed once); an `atexit` hook
//! takes it down when the binary exits. Instances left by a test binary that was killed are swept
//! by the next one.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use crate::paths::StackPaths;
use crate::stack::{Stack, StackOptions};
use crate::state::StackState;

const PREFIX: &str = "fleetbench-test-";

/// The workspace root, from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("workspace root")
}

/// Options for a test instance under the system temp dir, sharing the workspace's toolchain home.
pub fn test_options() -> StackOptions {
    let root = workspace_root();
    let home = std::env::var_os("FLEETBENCH_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::paths::reachable_home(root.join(".fleetbench")));
    let instance = tempfile::Builder::new()
        .prefix(PREFIX)
        .tempdir()
        .expect("creating a test instance directory")
        .keep();
    std::fs::write(instance.join("owner.pid"), std::process::id().to_string())
        .expect("writing owner.pid");
    StackOptions {
        paths: StackPaths { home, instance },
        supabase_dir: root.join("supabase"),
        function_env: Default::default(),
        daemon_exe: None,
        profile: Default::default(),
        ip_forwarding: false,
        compute: None,
        plan: None,
    }
}

static SHARED: OnceLock<StackState> = OnceLock::new();
static SHARED_PATHS: Mutex<Option<StackPaths>> = Mutex::new(None);

/// Where the binary's shared stack lives, once [`shared`] has started it.
pub fn shared_paths() -> Option<StackPaths> {
    SHARED_PATHS.lock().unwrap().clone()
}

/// The binary's shared stack, started on first use with `configure` applied to the options.
pub fn shared(configure: impl FnOnce(&mut StackOptions)) -> &'static StackState {
    SHARED.get_or_init(|| {
        sweep_orphans();
        let mut opts = test_options();
        configure(&mut opts);
        *SHARED_PATHS.lock().unwrap() = Some(opts.paths.clone());
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_shared) };
        // On its own thread: `up` drives its own runtime, and callers are often inside one.
        std::thread::spawn(move || Stack::up(&opts, &mut |line| eprintln!("[test stack] {line}")))
            .join()
            .expect("the stack thread panicked")
            .unwrap_or_else(|e| panic!("bringing up the test stack: {e}"))
    })
}

extern "C" fn stop_shared() {
    if let Some(paths) = SHARED_PATHS.lock().ok().and_then(|mut p| p.take()) {
        remove_instance(&paths);
    }
}

/// Takes an instance down and deletes its directory.
pub fn remove_instance(paths: &StackPaths) {
    if let Err(e) = Stack::down(paths) {
        eprintln!("[test stack] down {}: {e}", paths.instance.display());
    }
    let _ = std::fs::remove_dir_all(&paths.instance);
}

/// Takes down test instances whose owning test binary no longer runs.
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("owner.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if owner.is_some_and(crate::process::is_alive) {
            continue;
        }
        let paths = StackPaths {
            home: PathBuf::new(),
            instance: entry.path(),
        };
        remove_instance(&paths);
    }
}
