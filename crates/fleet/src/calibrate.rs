//! `fleetbench calibrate`: fits the synthetic model ([`ModelParams`]) to a recorded trace and
//! compares the two ([`beside_model`]). Load is fitted as `idle + amplitude · daily_shape(t)` by least squares on the
//! samples that are not bursts (a residual over 0.15 is a burst; the fit and the split are repeated
//! until they agree); the noise half-width is √3 times the residuals' deviation (uniform noise);
//! bursts give their rate and mean size. Temperature is fitted from its step equation
//! `Δtemp = inertia · (temp_idle + per_load · load − temp_prev) + noise`, linear in
//! `(1, load, temp_prev)`. The 2×2 and 3×3 least-squares systems are solved here by hand (Cramer's
//! rule): a linear-algebra crate would be a large dependency for two small systems.

use chrono::{DateTime, Utc};
use fleetbench_collector::trace::Trace;
use fleetbench_scenario::profile::{DeviceProfile, ModelParams};

use crate::telemetry::{Machine, Row, daily_shape};

/// A residual above this is a burst.
const BURST: f64 = 0.15;

pub struct Fit {
    pub profile: DeviceProfile,
    /// What could not be fitted from this trace, and what was kept instead.
    pub notes: Vec<String>,
}

fn det3(m: [[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Least squares of `y` on the columns of `x` (1 to 3 of them), or `None` when they are collinear.
fn ols<const K: usize>(x: &[[f64; K]], y: &[f64]) -> Option<[f64; K]> {
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    for (row, yi) in x.iter().zip(y) {
        for i in 0..K {
            b[i] += row[i] * yi;
            for j in 0..K {
                a[i][j] += row[i] * row[j];
            }
        }
    }
    // Unused dimensions are the identity, so one 3×3 determinant serves every size.
    for (i, row) in a.iter_mut().enumerate().skip(K) {
        row[i] = 1.0;
    }
    let d = det3(a);
    if d.abs() < 1e-9 * (1.0 + a[0][0].abs()).powi(K as i32) {
        return None;
    }
    let mut out = [0.0; K];
    for (k, v) in out.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][k] = b[i];
        }
        *v = det3(m) / d;
    }
    Some(out)
}

fn sd(v: &[f64]) -> f64 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// The load's idle level and daily amplitude by least squares on the samples that are not bursts
/// (found again until they settle), the noise from the residuals, and the bursts' rate and size.
fn fit_load(load: &[f64], shape: &[f64], p: &mut ModelParams, notes: &mut Vec<String>) {
    let span = shape.iter().cloned().fold(f64::MIN, f64::max)
        - shape.iter().cloned().fold(f64::MAX, f64::min);
    let mut burst = vec![false; load.len()];
    let base = |burst: &[bool]| -> (f64, f64) {
        let (x, y): (Vec<[f64; 2]>, Vec<f64>) = shape
            .iter()
            .zip(load)
            .zip(burst)
            .filter(|(_, b)| !**b)
            .map(|((s, l), _)| ([1.0, *s], *l))
            .unzip();
        match (span > 0.2).then(|| ols(&x, &y)).flatten() {
            Some([idle, amp]) => (idle, amp),
            None => (y.iter().sum::<f64>() / y.len().max(1) as f64, 0.0),
        }
    };
    let (mut idle, mut amp) = base(&burst);
    for _ in 0..5 {
        let next: Vec<bool> = load
            .iter()
            .zip(shape)
            .map(|(l, s)| l - (idle + amp * s) > BURST)
            .collect();
        if next == burst {
            break;
        }
        burst = next;
        (idle, amp) = base(&burst);
    }
    if span <= 0.2 {
        notes.push(format!(
            "the trace covers too little of the day (daily shape {:.2}–{:.2}) to fit the daily amplitude: the profile keeps a flat load of {idle:.3}",
            shape.iter().cloned().fold(f64::MAX, f64::min),
            shape.iter().cloned().fold(f64::MIN, f64::max)
        ));
    }
    let calm: Vec<f64> = (0..load.len())
        .filter(|i| !burst[*i])
        .map(|i| load[i] - (idle + amp * shape[i]))
        .collect();
    let bursts: Vec<f64> = (0..load.len())
        .filter(|i| burst[*i])
        .map(|i| load[i] - (idle + amp * shape[i]))
        .collect();
    p.idle_load = idle.clamp(0.0, 1.0);
    p.daily_amplitude = amp.clamp(0.0, 1.0);
    p.noise = (3f64.sqrt() * sd(&calm)).clamp(0.0, 1.0);
    p.burst_rate = bursts.len() as f64 / load.len().max(1) as f64;
    if !bursts.is_empty() {
        p.burst_size = (bursts.iter().sum::<f64>() / bursts.len() as f64).clamp(0.0, 1.0);
    }
}

/// Temperature's settling level, load gain, inertia and noise from its step equation
/// (Δ = a·b + a·c·load − a·prev); the default model kept, and why, when the trace cannot show it.
fn fit_temperature(trace: &Trace, p: &mut ModelParams, notes: &mut Vec<String>) {
    let temps: Vec<(f64, f64, f64)> = trace
        .readings
        .windows(2)
        .filter_map(|w| {
            let (prev, now) = (w[0].cpu_temp_c?, w[1].cpu_temp_c?);
            Some((
                f64::from(now),
                f64::from(now - prev),
                f64::from(w[1].cpu_pct) / 100.0,
            ))
        })
        .collect();
    let prev: Vec<[f64; 3]> = trace
        .readings
        .windows(2)
        .filter_map(|w| {
            Some([
                1.0,
                f64::from(w[1].cpu_pct) / 100.0,
                f64::from(w[0].cpu_temp_c?),
            ])
        })
        .collect();
    if temps.is_empty() {
        notes.push("the trace has no CPU temperature (no sensor): the profile keeps the default temperature model".into());
    } else if let Some([b0, b1, b2]) = ols(&prev, &temps.iter().map(|t| t.1).collect::<Vec<_>>()) {
        let a = -b2;
        if a > 0.01 && a <= 1.0 {
            p.temp_inertia = a;
            p.temp_idle_c = b0 / a;
            p.temp_per_load_c = b1 / a;
            let resid: Vec<f64> = prev
                .iter()
                .zip(&temps)
                .map(|(x, t)| t.1 - (b0 + b1 * x[1] + b2 * x[2]))
                .collect();
            p.temp_noise = 3f64.sqrt() * sd(&resid);
        } else {
            notes.push("the temperature does not settle toward a load-driven level in this trace: the profile keeps the default temperature model".into());
        }
    } else {
        notes.push("load does not vary enough to separate its effect on temperature: the profile keeps the default temperature model".into());
    }
}

/// The model fitted to `trace`, as a device profile named `name`.
pub fn fit(trace: &Trace, name: &str) -> Fit {
    let start = DateTime::parse_from_rfc3339(&trace.header.started_at)
        .map(|t| t.to_utc())
        .unwrap_or_else(|_| Utc::now());
    let at = |t_ms: u64| start + chrono::Duration::milliseconds(t_ms as i64);
    let load: Vec<f64> = trace
        .readings
        .iter()
        .map(|r| f64::from(r.cpu_pct) / 100.0)
        .collect();
    let shape: Vec<f64> = trace
        .readings
        .iter()
        .map(|r| daily_shape(at(r.t_ms)))
        .collect();
    let mut notes = Vec::new();
    let mut p = ModelParams::default();

    fit_load(&load, &shape, &mut p, &mut notes);

    let mem: Vec<f64> = trace
        .readings
        .iter()
        .map(|r| r.mem_used_bytes as f64 / r.mem_total_bytes.max(1) as f64)
        .collect();
    p.mem_used_fraction = (mem.iter().sum::<f64>() / mem.len().max(1) as f64).clamp(0.02, 0.95);

    fit_temperature(trace, &mut p, &mut notes);

    let h = &trace.header;
    Fit {
        profile: DeviceProfile {
            name: name.to_string(),
            form_factor: "desktop".into(),
            cores: h.cores,
            ram_bytes: h.ram_bytes,
            disk_bytes: h.disk_bytes,
            has_gpu: trace.readings.iter().any(|r| r.gpu_temp_c.is_some()),
            has_battery: trace.readings.iter().any(|r| r.battery_pct.is_some()),
            model: p,
        },
        notes,
    }
}

/// `n` samples of the model with `profile`, one every `interval_ms` from `start` (seeded).
pub fn synthesize(
    profile: &DeviceProfile,
    seed: u64,
    n: usize,
    interval_ms: u64,
    start: DateTime<Utc>,
) -> Vec<Row> {
    let mut m = Machine::new(
        seed,
        0,
        &[(profile.name.clone(), 1.0)],
        &[],
        std::slice::from_ref(profile),
    );
    (0..n)
        .map(|i| {
            m.sample(
                uuid::Uuid::nil(),
                uuid::Uuid::nil(),
                start + chrono::Duration::milliseconds((i as u64 * interval_ms) as i64),
            )
        })
        .collect()
}

/// `qs` quantiles of `v` (nearest rank).
pub fn quantiles(mut v: Vec<f64>, qs: &[f64]) -> Vec<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    qs.iter()
        .map(|q| {
            if v.is_empty() {
                f64::NAN
            } else {
                v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
            }
        })
        .collect()
}

/// One metric's values in a trace and in the model fitted to it, over the trace's own times.
pub struct Beside {
    pub metric: &'static str,
    pub trace: Vec<f64>,
    pub model: Vec<f64>,
}

/// CPU, temperature and memory use as `trace` recorded them and as `profile`'s model samples them
/// at the same instants (seed 1).
pub fn beside_model(trace: &Trace, profile: &DeviceProfile) -> Vec<Beside> {
    let start = DateTime::parse_from_rfc3339(&trace.header.started_at)
        .map(|t| t.to_utc())
        .unwrap_or_else(|_| Utc::now());
    let model = synthesize(
        profile,
        1,
        trace.readings.len(),
        trace.header.interval_ms,
        start,
    );
    let readings = &trace.readings;
    let mem_pct = |used: f64, total: f64| 100.0 * used / total.max(1.0);
    vec![
        Beside {
            metric: "cpu_pct",
            trace: readings.iter().map(|r| f64::from(r.cpu_pct)).collect(),
            model: model.iter().map(|r| f64::from(r.cpu_pct)).collect(),
        },
        Beside {
            metric: "cpu_temp_c",
            trace: readings
                .iter()
                .filter_map(|r| r.cpu_temp_c.map(f64::from))
                .collect(),
            model: model
                .iter()
                .filter_map(|r| r.cpu_temp_c.map(f64::from))
                .collect(),
        },
        Beside {
            metric: "mem_used_pct",
            trace: readings
                .iter()
                .map(|r| mem_pct(r.mem_used_bytes as f64, r.mem_total_bytes as f64))
                .collect(),
            model: model
                .iter()
                .map(|r| mem_pct(r.mem_used_bytes as f64, r.mem_total_bytes as f64))
                .collect(),
        },
    ]
}
