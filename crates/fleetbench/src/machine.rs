//! What generated the load: fleetbench's version and the commit it was built from (by `build.rs`),
//! and this machine, for the summary's `environment`.

/// fleetbench's version and commit, and the machine generating the load.
pub fn environment() -> fleetbench_metrics::summary::Environment {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    fleetbench_metrics::summary::Environment {
        fleetbench_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("FLEETBENCH_GIT_COMMIT").into(),
        os: sysinfo::System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_bytes: sys.total_memory(),
    }
}
