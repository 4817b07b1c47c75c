//! Telemetry that looks like the real agent's: a device profile (cores, RAM, disk, laptop or
//! desktop, GPU or not), a daily usage curve, correlated metrics (load drives CPU, CPU drives
//! temperature), bursts, and injected anomalies (thermal runaway, memory leak, disk filling).
//! Seeded per agent: the same seed and agent index give the same device and the same series.
//! Every row has the same keys (absent readings are `null`), as PostgREST's bulk insert requires.

use std::sync::Arc;

use chrono::{DateTime, Timelike, Utc};
use fleetbench_collector::Reading;
use fleetbench_collector::trace::Trace;
use fleetbench_scenario::profile::{DeviceProfile, ModelParams};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A machine's fixed characteristics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Device {
    pub form_factor: &'static str,
    pub cores: u16,
    pub ram_bytes: u64,
    pub disk_bytes: u64,
    pub has_gpu: bool,
    pub has_battery: bool,
}

const GIB: u64 = 1 << 30;

impl Device {
    /// A device of `profile`, varied by `rng`.
    pub fn draw(profile: &str, rng: &mut SmallRng) -> Device {
        let pick = |rng: &mut SmallRng, xs: &[u64]| xs[rng.random_range(0..xs.len())];
        match profile {
            "desktop" => Device {
                form_factor: "desktop",
                cores: pick(rng, &[6, 8, 12, 16]) as u16,
                ram_bytes: pick(rng, &[16, 32, 64]) * GIB,
                disk_bytes: pick(rng, &[512, 1024, 2048]) * GIB,
                has_gpu: rng.random_bool(0.6),
                has_battery: false,
            },
            "workstation" => Device {
                form_factor: "workstation",
                cores: pick(rng, &[16, 24, 32]) as u16,
                ram_bytes: pick(rng, &[64, 128]) * GIB,
                disk_bytes: pick(rng, &[2048, 4096]) * GIB,
                has_gpu: true,
                has_battery: false,
            },
            "server" => Device {
                form_factor: "server",
                cores: pick(rng, &[32, 64]) as u16,
                ram_bytes: pick(rng, &[128, 256]) * GIB,
                disk_bytes: pick(rng, &[4096, 8192]) * GIB,
                has_gpu: false,
                has_battery: false,
            },
            _ => Device {
                form_factor: "laptop",
                cores: pick(rng, &[4, 8, 10]) as u16,
                ram_bytes: pick(rng, &[8, 16, 32]) * GIB,
                disk_bytes: pick(rng, &[256, 512, 1024]) * GIB,
                has_gpu: rng.random_bool(0.2),
                has_battery: true,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    ThermalRunaway,
    MemoryLeak,
    DiskFilling,
}

impl Anomaly {
    pub fn parse(name: &str) -> Option<Anomaly> {
        match name {
            "thermal_runaway" => Some(Anomaly::ThermalRunaway),
            "memory_leak" => Some(Anomaly::MemoryLeak),
            "disk_filling" => Some(Anomaly::DiskFilling),
            _ => None,
        }
    }
}

/// One sample, in `system_metrics`' column names. Field order is the JSON key order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub device_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub ts: DateTime<Utc>,
    pub cpu_pct: f32,
    pub load_1m: f32,
    pub mem_used_bytes: i64,
    pub mem_total_bytes: i64,
    pub swap_used_bytes: i64,
    pub disk_used_pct: f32,
    pub disk_read_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    pub net_rx_bytes_per_s: f64,
    pub net_tx_bytes_per_s: f64,
    /// Absent where the machine has no sensor (a replayed trace of a VM).
    pub cpu_temp_c: Option<f32>,
    pub gpu_temp_c: Option<f32>,
    pub process_count: i32,
    pub battery_pct: Option<f32>,
    pub on_battery: Option<bool>,
}

/// The columns a [`Row`] fills, in order (for the pooler path's column list).
pub const COLUMNS: &[&str] = &[
    "device_id",
    "user_id",
    "ts",
    "cpu_pct",
    "load_1m",
    "mem_used_bytes",
    "mem_total_bytes",
    "swap_used_bytes",
    "disk_used_pct",
    "disk_read_bytes_per_s",
    "disk_write_bytes_per_s",
    "net_rx_bytes_per_s",
    "net_tx_bytes_per_s",
    "cpu_temp_c",
    "gpu_temp_c",
    "process_count",
    "battery_pct",
    "on_battery",
];

/// A profile file's form factor as the static name devices carry.
pub fn form_factor(name: &str) -> &'static str {
    fleetbench_scenario::model::PROFILES
        .iter()
        .find(|p| **p == name)
        .copied()
        .unwrap_or("desktop")
}

/// The working day's share of the daily amplitude at `ts` (0 at night).
pub fn daily_shape(ts: DateTime<Utc>) -> f64 {
    let hour =
        f64::from(ts.hour()) + f64::from(ts.minute()) / 60.0 + f64::from(ts.second()) / 3600.0;
    (((hour - 8.0) / 10.0 * std::f64::consts::PI).sin()).max(0.0)
}

/// An agent replaying a recorded trace instead of the model: the trace's clock runs `time_scale`
/// times as fast as the agent's, from a per-agent offset, wrapping at its end; `jitter` scales
/// each value by up to ± that share (0: the trace's values exactly).
#[derive(Debug, Clone)]
pub struct Replay {
    trace: Arc<Trace>,
    pos_ms: f64,
    step_ms: f64,
    jitter: f64,
}

impl Replay {
    pub fn new(
        trace: Arc<Trace>,
        sample_interval: std::time::Duration,
        time_scale: f64,
        offset_ms: f64,
        jitter: f64,
    ) -> Replay {
        Replay {
            pos_ms: offset_ms,
            step_ms: sample_interval.as_secs_f64() * 1000.0 * time_scale,
            trace,
            jitter,
        }
    }

    /// The reading for the next sample.
    fn next(&mut self) -> &Reading {
        let n = self.trace.readings.len();
        let i = (self.pos_ms / self.trace.header.interval_ms as f64).floor() as usize % n;
        self.pos_ms += self.step_ms;
        &self.trace.readings[i]
    }

    /// The trace's length in ms (offsets are drawn below it).
    pub fn span_ms(trace: &Trace) -> f64 {
        (trace.readings.len() as u64 * trace.header.interval_ms) as f64
    }
}

/// A machine's evolving state.
#[derive(Debug, Clone)]
pub struct Machine {
    pub device: Device,
    pub params: ModelParams,
    /// Replaying a trace instead of the model.
    pub replay: Option<Replay>,
    rng: SmallRng,
    mem_used: f64,
    disk_used_pct: f64,
    battery: f64,
    temp: f64,
    /// The anomaly this machine develops, and from which sample on.
    anomaly: Option<(Anomaly, u64)>,
    samples: u64,
}

impl Machine {
    /// Agent `index` of a fleet seeded `seed`, drawn from `profiles` (shares summing to 1), with
    /// `anomalies` (share of agents each).
    pub fn new(
        seed: u64,
        index: u32,
        profiles: &[(String, f64)],
        anomalies: &[(String, f64)],
        custom: &[DeviceProfile],
    ) -> Machine {
        let mut rng = SmallRng::seed_from_u64(
            seed ^ (u64::from(index) << 20).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut roll: f64 = rng.random();
        let profile = profiles
            .iter()
            .find(|(_, share)| {
                roll -= share;
                roll < 0.0
            })
            .map_or("laptop", |(p, _)| p.as_str());
        let file = custom.iter().find(|p| p.name == profile);
        let device = match file {
            Some(p) => Device {
                form_factor: crate::telemetry::form_factor(&p.form_factor),
                cores: p.cores,
                ram_bytes: p.ram_bytes,
                disk_bytes: p.disk_bytes,
                has_gpu: p.has_gpu,
                has_battery: p.has_battery,
            },
            None => Device::draw(profile, &mut rng),
        };
        let mut anomaly = None;
        for (name, share) in anomalies {
            if rng.random_bool(share.clamp(0.0, 1.0)) && anomaly.is_none() {
                anomaly = Anomaly::parse(name).map(|a| (a, rng.random_range(5..60)));
            }
        }
        let params = file.map_or_else(ModelParams::default, |p| p.model);
        Machine {
            params,
            replay: None,
            mem_used: device.ram_bytes as f64
                * (params.mem_used_fraction + rng.random_range(-0.15..0.15)).clamp(0.02, 0.95),
            disk_used_pct: rng.random_range(20.0..70.0),
            battery: rng.random_range(40.0..100.0),
            temp: 40.0,
            device,
            rng,
            anomaly,
            samples: 0,
        }
    }

    pub fn anomaly(&self) -> Option<Anomaly> {
        self.anomaly.map(|a| a.0)
    }

    /// The next sample, taken at `ts`.
    pub fn sample(&mut self, device_id: uuid::Uuid, user_id: uuid::Uuid, ts: DateTime<Utc>) -> Row {
        if let Some(replay) = &mut self.replay {
            let (jitter, reading) = (replay.jitter, replay.next().clone());
            return replayed(&reading, device_id, user_id, ts, jitter, &mut self.rng);
        }
        let p = self.params;
        let r = &mut self.rng;
        self.samples += 1;
        let active = self
            .anomaly
            .filter(|(_, from)| self.samples >= *from)
            .map(|a| a.0);
        // Working hours are busy, nights quiet; bursts now and then.
        let daily = p.idle_load + p.daily_amplitude * daily_shape(ts);
        let burst = if r.random_bool(p.burst_rate.clamp(0.0, 1.0)) {
            p.burst_size + r.random_range(-0.15..0.15)
        } else {
            0.0
        };
        let noise = if p.noise > 0.0 {
            r.random_range(-p.noise..p.noise)
        } else {
            0.0
        };
        let load = (daily + burst + noise).clamp(0.01, 1.0);
        let cpu_pct = (load * 100.0).clamp(0.0, 100.0);
        // Temperature follows load with inertia; a runaway climbs regardless.
        let target = p.temp_idle_c + load * p.temp_per_load_c;
        let noise = if p.temp_noise > 0.0 {
            r.random_range(-p.temp_noise..p.temp_noise)
        } else {
            0.0
        };
        self.temp = if active == Some(Anomaly::ThermalRunaway) {
            (self.temp + 2.5 + noise).min(105.0)
        } else {
            self.temp + (target - self.temp) * p.temp_inertia + noise
        };
        let ram = self.device.ram_bytes as f64;
        self.mem_used =
            (self.mem_used + ram * r.random_range(-0.01..0.01)).clamp(ram * 0.01, ram * 0.95);
        if active == Some(Anomaly::MemoryLeak) {
            self.mem_used = (self.mem_used + ram * 0.01).min(ram * 0.99);
        }
        self.disk_used_pct = (self.disk_used_pct + r.random_range(0.0..0.001)).min(99.9);
        if active == Some(Anomaly::DiskFilling) {
            self.disk_used_pct = (self.disk_used_pct + 0.5).min(99.9);
        }
        let on_battery = self.device.has_battery && r.random_bool(0.3);
        if on_battery {
            self.battery = (self.battery - 0.05 * (1.0 + load)).max(1.0);
        } else {
            self.battery = (self.battery + 0.1).min(100.0);
        }
        // Values at the precision the desktop agent reports them (psutil: percentages and
        // temperatures to 0.1, load to 0.01, rates in whole bytes per second).
        let tenth = |x: f64| ((x * 10.0).round() / 10.0) as f32;
        Row {
            device_id,
            user_id,
            ts,
            cpu_pct: tenth(cpu_pct),
            load_1m: ((load * f64::from(self.device.cores) * 100.0).round() / 100.0) as f32,
            mem_used_bytes: self.mem_used as i64,
            mem_total_bytes: self.device.ram_bytes as i64,
            swap_used_bytes: ((self.mem_used / ram - 0.8).max(0.0) * ram) as i64,
            disk_used_pct: tenth(self.disk_used_pct),
            disk_read_bytes_per_s: (load * r.random_range(1e5..5e7)).round(),
            disk_write_bytes_per_s: (load * r.random_range(1e5..2e7)).round(),
            net_rx_bytes_per_s: r.random_range(1e3..5e6_f64).round(),
            net_tx_bytes_per_s: r.random_range(1e3..1e6_f64).round(),
            cpu_temp_c: Some(tenth(self.temp)),
            gpu_temp_c: self
                .device
                .has_gpu
                .then(|| tenth(self.temp - 5.0 + r.random_range(-2.0..2.0))),
            process_count: 150 + (load * 250.0) as i32 + r.random_range(0..20),
            battery_pct: self.device.has_battery.then_some(tenth(self.battery)),
            on_battery: self.device.has_battery.then_some(on_battery),
        }
    }
}

/// A replayed reading as the agent's row (values scaled by up to ± `jitter`).
fn replayed(
    r: &Reading,
    device_id: uuid::Uuid,
    user_id: uuid::Uuid,
    ts: DateTime<Utc>,
    jitter: f64,
    rng: &mut SmallRng,
) -> Row {
    let mut j = |x: f64| {
        if jitter > 0.0 {
            x * (1.0 + rng.random_range(-jitter..jitter))
        } else {
            x
        }
    };
    let pct = |x: f64| (x.clamp(0.0, 100.0) * 10.0).round() as f32 / 10.0;
    Row {
        device_id,
        user_id,
        ts,
        cpu_pct: if jitter > 0.0 {
            pct(j(f64::from(r.cpu_pct)))
        } else {
            r.cpu_pct
        },
        load_1m: r.load_1m,
        mem_used_bytes: (j(r.mem_used_bytes as f64) as i64).min(r.mem_total_bytes),
        mem_total_bytes: r.mem_total_bytes,
        swap_used_bytes: r.swap_used_bytes,
        disk_used_pct: r.disk_used_pct,
        disk_read_bytes_per_s: j(r.disk_read_bytes_per_s).round(),
        disk_write_bytes_per_s: j(r.disk_write_bytes_per_s).round(),
        net_rx_bytes_per_s: j(r.net_rx_bytes_per_s).round(),
        net_tx_bytes_per_s: j(r.net_tx_bytes_per_s).round(),
        cpu_temp_c: r.cpu_temp_c.map(|t| {
            if jitter > 0.0 {
                (j(f64::from(t)) * 10.0).round() as f32 / 10.0
            } else {
                t
            }
        }),
        gpu_temp_c: r.gpu_temp_c,
        process_count: r.process_count,
        battery_pct: r.battery_pct,
        on_battery: r.on_battery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(seed: u64) -> Vec<Machine> {
        let profiles = vec![("laptop".to_string(), 0.5), ("desktop".to_string(), 0.5)];
        let anomalies = vec![("thermal_runaway".to_string(), 0.2)];
        (0..200)
            .map(|i| Machine::new(seed, i, &profiles, &anomalies, &[]))
            .collect()
    }

    #[test]
    fn seeded_fleets_repeat_and_differ_by_seed() {
        let ts = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .to_utc();
        let series = |seed| -> Vec<Row> {
            fleet(seed)
                .iter_mut()
                .flat_map(|m| {
                    (0..5)
                        .map(|_| m.sample(uuid::Uuid::nil(), uuid::Uuid::nil(), ts))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(series(1), series(1));
        assert_ne!(series(1), series(2));
        let laptops = fleet(1)
            .iter()
            .filter(|m| m.device.form_factor == "laptop")
            .count();
        assert!(
            (70..130).contains(&laptops),
            "{laptops} of 200 laptops for a 50 % share"
        );
        let runaway = fleet(1)
            .iter()
            .filter(|m| m.anomaly() == Some(Anomaly::ThermalRunaway))
            .count();
        assert!(
            (20..60).contains(&runaway),
            "{runaway} of 200 for a 20 % share"
        );
    }

    #[test]
    fn rows_are_plausible_and_a_runaway_crosses_the_alert_threshold() {
        let ts = DateTime::parse_from_rfc3339("2026-11-25T14:00:00Z")
            .unwrap()
            .to_utc();
        for mut m in fleet(3) {
            let rows: Vec<Row> = (0..120)
                .map(|_| m.sample(uuid::Uuid::nil(), uuid::Uuid::nil(), ts))
                .collect();
            for r in &rows {
                assert!(
                    (0.0..=100.0).contains(&r.cpu_pct) && (0.0..=100.0).contains(&r.disk_used_pct)
                );
                assert!(r.mem_used_bytes > 0 && r.mem_used_bytes <= r.mem_total_bytes);
                assert_eq!(r.battery_pct.is_some(), m.device.has_battery);
                let keys = serde_json::to_value(r)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>();
                assert_eq!(keys.len(), COLUMNS.len());
            }
            let hottest = rows.iter().filter_map(|r| r.cpu_temp_c).fold(0.0, f32::max);
            match m.anomaly() {
                Some(Anomaly::ThermalRunaway) => {
                    assert!(hottest >= 95.0, "runaway peaked at {hottest}")
                }
                _ => assert!(hottest < 95.0, "a healthy machine reached {hottest}"),
            }
        }
    }
}
