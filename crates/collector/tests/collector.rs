//! The collector on this machine: plausible values against what the OS says elsewhere
//! (`/proc`, the CPU count), absent sensors absent rather than zero, and traces that read back as
//! written.

use fleetbench_collector::trace::{Header, Trace, Writer};
use fleetbench_collector::{Collector, TOP};

#[test]
fn readings_are_plausible_and_absent_sensors_are_absent() {
    let mut c = Collector::new();
    // Some work between the samples, so rates and CPU have something to measure.
    let spin = std::time::Instant::now();
    let mut x = 0u64;
    while spin.elapsed() < std::time::Duration::from_millis(300) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    assert_ne!(x, 1);
    // Other tests start servers meanwhile (a Postgres is some thirty processes): the reading's
    // process count must lie between /proc's counts just before and just after it.
    let procs_before = proc_count();
    let r = c.sample();
    let procs_after = proc_count();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(r.cpu_per_core_pct.len(), cores);
    assert!((0.0..=100.0).contains(&r.cpu_pct), "{}", r.cpu_pct);
    assert!(
        r.cpu_per_core_pct.iter().all(|p| (0.0..=100.0).contains(p)),
        "{:?}",
        r.cpu_per_core_pct
    );
    assert!(r.mem_used_bytes > 0 && r.mem_used_bytes <= r.mem_total_bytes);
    assert!(r.swap_used_bytes <= r.swap_total_bytes);
    assert!((0.0..=100.0).contains(&r.disk_used_pct));
    // Memory total as /proc/meminfo has it.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: i64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!((r.mem_total_bytes - kib * 1024).abs() <= kib * 1024 / 100);
    // Processes: as many as /proc lists (give or take the ones that came and went).
    let (low, high) = (procs_before.min(procs_after), procs_before.max(procs_after));
    assert!(
        (low - low / 10 - 5..=high + high / 10 + 5).contains(&r.process_count),
        "{} vs /proc's {procs_before} before and {procs_after} after",
        r.process_count
    );
    assert!(r.top_processes.len() <= TOP && !r.top_processes.is_empty());
    assert!(
        r.top_processes
            .windows(2)
            .all(|w| w[0].cpu_pct >= w[1].cpu_pct)
    );
    assert!(r.load_1m >= 0.0 && r.load_5m >= 0.0);
    // A machine without sensors or battery leaves the fields out instead of writing zeros.
    let json = serde_json::to_value(&r).unwrap();
    for (field, present) in [
        ("cpu_temp_c", r.cpu_temp_c.is_some()),
        ("gpu_temp_c", r.gpu_temp_c.is_some()),
        ("battery_pct", r.battery_pct.is_some()),
    ] {
        assert_eq!(json.get(field).is_some(), present, "{field}");
    }
    let has_battery = std::fs::read_dir("/sys/class/power_supply")
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("type")).is_ok_and(|t| t.trim() == "Battery")
            })
        })
        .unwrap_or(false);
    assert_eq!(r.battery_pct.is_some(), has_battery);
}

#[test]
fn a_trace_reads_back_as_written() {
    let mut c = Collector::new();
    let header = Header {
        fleetbench_trace: 1,
        hostname: "test".into(),
        cores: 2,
        ram_bytes: 1 << 30,
        disk_bytes: 1 << 40,
        interval_ms: 100,
        started_at: "2026-11-26T10:00:00Z".into(),
    };
    let readings: Vec<_> = (0..5)
        .map(|i| {
            let mut r = c.sample();
            r.t_ms = i * 100;
            r
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let mut w = Writer::new(std::fs::File::create(&path).unwrap(), &header).unwrap();
    readings.iter().for_each(|r| w.push(r).unwrap());
    let back = Trace::read(&path).unwrap();
    assert_eq!(back.header, header);
    assert_eq!(back.readings, readings);
    // A broken line is refused with its place.
    std::fs::write(
        &path,
        format!(
            "{}\n{{\"cpu_pct\": \"hot\"}}\n",
            serde_json::to_string(&header).unwrap()
        ),
    )
    .unwrap();
    let e = Trace::read(&path).unwrap_err().to_string();
    assert!(e.contains("t.jsonl:2:"), "{e}");
}

/// Processes /proc lists now.
fn proc_count() -> i32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .count() as i32
}
