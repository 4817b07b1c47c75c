//! The real collector: what the System Health AI desktop agent reads from the machine it runs on,
//! through `sysinfo`, as one [`Reading`] per sample: CPU total and per core, load averages, memory
//! and swap, the fullest disk's use and the disks' read/write rates, network receive/transmit
//! rates, the process count and the top processes, and temperatures and battery where the machine
//! has them (absent, not zero, where it does not: these VMs have no sensors). Readings are the
//! `system_metrics` row's values under its column names, so a reading posts as a row as it is.
//!
//! # Layout
//! - [`Reading`], [`Process`]: one sample.
//! - [`Collector`]: samples the machine (rates from the deltas between two samples).
//! - [`trace`]: trace files (`.jsonl`: a header line, then one reading per line) written and read.

pub mod trace;

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sysinfo::{Components, Disks, Networks, ProcessesToUpdate, System};

/// One sample of a machine, in `system_metrics`' column names (plus `t_ms`, the time since the
/// first sample of its trace, which is not a column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub t_ms: u64,
    pub cpu_pct: f32,
    pub cpu_per_core_pct: Vec<f32>,
    pub load_1m: f32,
    pub load_5m: f32,
    pub load_15m: f32,
    pub mem_used_bytes: i64,
    pub mem_total_bytes: i64,
    pub swap_used_bytes: i64,
    pub swap_total_bytes: i64,
    pub disk_used_pct: f32,
    pub disk_read_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    pub net_rx_bytes_per_s: f64,
    pub net_tx_bytes_per_s: f64,
    pub process_count: i32,
    pub top_processes: Vec<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_temp_c: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_temp_c: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_battery: Option<bool>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One of the busiest processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    pub cpu_pct: f32,
    pub mem_bytes: u64,
}

/// How many processes a reading lists.
pub const TOP: usize = 5;

/// Samples this machine. Rates (CPU, disk, network) are over the time since the previous sample,
/// so the first [`Collector::sample`] after [`Collector::new`] already covers a short interval.
pub struct Collector {
    system: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    last: Instant,
}

impl Default for Collector {
    fn default() -> Self {
        Collector::new()
    }
}

fn tenth(x: f64) -> f32 {
    ((x * 10.0).round() / 10.0) as f32
}

impl Collector {
    pub fn new() -> Collector {
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        system.refresh_processes(ProcessesToUpdate::All, true);
        Collector {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            components: Components::new_with_refreshed_list(),
            last: Instant::now(),
        }
    }

    /// The machine now.
    pub fn sample(&mut self) -> Reading {
        let secs = self.last.elapsed().as_secs_f64().max(1e-3);
        self.last = Instant::now();
        let s = &mut self.system;
        s.refresh_cpu_usage();
        s.refresh_memory();
        s.refresh_processes(ProcessesToUpdate::All, true);
        self.disks.refresh(true);
        self.networks.refresh(true);
        self.components.refresh(true);

        let per_core: Vec<f32> = s
            .cpus()
            .iter()
            .map(|c| tenth(f64::from(c.cpu_usage())))
            .collect();
        let load = System::load_average();
        let (read, written) = self.disks.list().iter().fold((0u64, 0u64), |(r, w), d| {
            let u = d.usage();
            (r + u.read_bytes, w + u.written_bytes)
        });
        let fullest = self
            .disks
            .list()
            .iter()
            .filter(|d| d.total_space() > 0)
            .map(|d| 100.0 * (1.0 - d.available_space() as f64 / d.total_space() as f64))
            .fold(0.0, f64::max);
        let (rx, tx) = self
            .networks
            .list()
            .iter()
            .filter(|(name, _)| name.as_str() != "lo")
            .fold((0u64, 0u64), |(r, t), (_, n)| {
                (r + n.received(), t + n.transmitted())
            });
        // sysinfo lists a process's threads as processes of their own on Linux: not those (kernel
        // threads stay: /proc and `ps -e` count them).
        let mut procs: Vec<Process> = s
            .processes()
            .values()
            .filter(|p| p.thread_kind() != Some(sysinfo::ThreadKind::Userland))
            .map(|p| Process {
                pid: p.pid().as_u32(),
                name: p.name().to_string_lossy().into_owned(),
                cpu_pct: tenth(f64::from(p.cpu_usage())),
                mem_bytes: p.memory(),
            })
            .collect();
        let process_count = procs.len() as i32;
        procs.sort_by(|a, b| {
            b.cpu_pct
                .total_cmp(&a.cpu_pct)
                .then(b.mem_bytes.cmp(&a.mem_bytes))
        });
        procs.truncate(TOP);
        let temp = |pred: &dyn Fn(&str) -> bool| {
            self.components
                .list()
                .iter()
                .filter(|c| pred(&c.label().to_lowercase()))
                .filter_map(|c| c.temperature())
                .filter(|t| t.is_finite())
                .fold(None, |m: Option<f32>, t| Some(m.map_or(t, |m| m.max(t))))
                .map(|t| tenth(f64::from(t)))
        };
        let (battery_pct, on_battery) = battery();
        Reading {
            t_ms: 0,
            cpu_pct: tenth(f64::from(s.global_cpu_usage())),
            cpu_per_core_pct: per_core,
            load_1m: load.one as f32,
            load_5m: load.five as f32,
            load_15m: load.fifteen as f32,
            mem_used_bytes: s.used_memory() as i64,
            mem_total_bytes: s.total_memory() as i64,
            swap_used_bytes: s.used_swap() as i64,
            swap_total_bytes: s.total_swap() as i64,
            disk_used_pct: tenth(fullest),
            disk_read_bytes_per_s: (read as f64 / secs).round(),
            disk_write_bytes_per_s: (written as f64 / secs).round(),
            net_rx_bytes_per_s: (rx as f64 / secs).round(),
            net_tx_bytes_per_s: (tx as f64 / secs).round(),
            process_count,
            top_processes: procs,
            cpu_temp_c: temp(&|l| {
                l.contains("cpu")
                    || l.contains("core")
                    || l.contains("package")
                    || l.contains("k10temp")
            }),
            gpu_temp_c: temp(&|l| {
                l.contains("gpu") || l.contains("amdgpu") || l.contains("nouveau")
            }),
            battery_pct,
            on_battery,
        }
    }

    /// The machine's fixed characteristics: (hostname, cores, RAM bytes, disk bytes).
    pub fn machine(&self) -> (String, u16, u64, u64) {
        (
            System::host_name().unwrap_or_else(|| "unknown".into()),
            self.system.cpus().len() as u16,
            self.system.total_memory(),
            self.disks
                .list()
                .iter()
                .map(|d| d.total_space())
                .max()
                .unwrap_or(0),
        )
    }
}

/// Battery charge and whether it is discharging, from Linux's power-supply class (sysinfo has no
/// battery API); `None` where there is no battery.
fn battery() -> (Option<f32>, Option<bool>) {
    let Ok(entries) = std::fs::read_dir("/sys/class/power_supply") else {
        return (None, None);
    };
    for e in entries.flatten() {
        let dir = e.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_string());
        if read("type").ok().as_deref() != Some("Battery") {
            continue;
        }
        let pct = read("capacity").ok().and_then(|c| c.parse::<f32>().ok());
        let discharging = read("status").ok().map(|s| s == "Discharging");
        return (pct, discharging);
    }
    (None, None)
}
