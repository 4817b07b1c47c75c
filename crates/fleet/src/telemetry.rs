//! Telemetry that looks like the real agent's: a device profile (cores, RAM, disk, laptop or
//! desktop, GPU or not), a daily usage curve, correlated metrics (load drives CPU, CPU drives
//! temperature), bursts, and injected anomalies (thermal runaway, memory leak, disk filling).
//! Seeded per agent: the same seed and agent index give the same device and the same series.
//! Every row has the same keys (absent readings are `null`), as PostgREST's bulk insert requires.

use chrono::{DateTime, Timelike, Utc};
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
    pub cpu_temp_c: f32,
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

/// A machine's evolving state.
#[derive(Debug, Clone)]
pub struct Machine {
    pub device: Device,
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
        let device = Device::draw(profile, &mut rng);
        let mut anomaly = None;
        for (name, share) in anomalies {
            if rng.random_bool(share.clamp(0.0, 1.0)) && anomaly.is_none() {
                anomaly = Anomaly::parse(name).map(|a| (a, rng.random_range(5..60)));
            }
        }
        Machine {
            mem_used: device.ram_bytes as f64 * rng.random_range(0.3..0.6),
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
        let r = &mut self.rng;
        self.samples += 1;
        let active = self
            .anomaly
            .filter(|(_, from)| self.samples >= *from)
            .map(|a| a.0);
        // Working hours are busy, nights quiet; bursts now and then.
        let hour = f64::from(ts.hour()) + f64::from(ts.minute()) / 60.0;
        let daily = 0.15 + 0.45 * (((hour - 8.0) / 10.0 * std::f64::consts::PI).sin()).max(0.0);
        let burst = if r.random_bool(0.03) {
            r.random_range(0.3..0.6)
        } else {
            0.0
        };
        let load = (daily + burst + r.random_range(-0.05..0.05)).clamp(0.01, 1.0);
        let cpu_pct = (load * 100.0).clamp(0.0, 100.0);
        // Temperature follows load with inertia; a runaway climbs regardless.
        let target = 35.0 + load * 45.0;
        let noise = r.random_range(-0.5..0.5);
        self.temp = if active == Some(Anomaly::ThermalRunaway) {
            (self.temp + 2.5 + noise).min(105.0)
        } else {
            self.temp + (target - self.temp) * 0.3 + noise
        };
        let ram = self.device.ram_bytes as f64;
        self.mem_used =
            (self.mem_used + ram * r.random_range(-0.01..0.01)).clamp(ram * 0.1, ram * 0.95);
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
            cpu_temp_c: tenth(self.temp),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(seed: u64) -> Vec<Machine> {
        let profiles = vec![("laptop".to_string(), 0.5), ("desktop".to_string(), 0.5)];
        let anomalies = vec![("thermal_runaway".to_string(), 0.2)];
        (0..200)
            .map(|i| Machine::new(seed, i, &profiles, &anomalies))
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
            let hottest = rows.iter().map(|r| r.cpu_temp_c).fold(0.0, f32::max);
            match m.anomaly() {
                Some(Anomaly::ThermalRunaway) => {
                    assert!(hottest >= 95.0, "runaway peaked at {hottest}")
                }
                _ => assert!(hottest < 95.0, "a healthy machine reached {hottest}"),
            }
        }
    }
}
