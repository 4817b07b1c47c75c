//! The Data API's bulk insert body: telemetry rows as one JSON array, written byte for byte as
//! `serde_json` writes them (a test holds the two equal on random rows), at about half the cost.
//!
//! Written by hand because the body is built once per upload on the generator's hot path, and
//! serde's derive spends a fifth of the generator's own time here: every key escaped and quoted
//! again for every row, and the timestamp formatted through `core::fmt`. Here each key is a
//! ready-made fragment, numbers go through the formatters `serde_json` itself uses (`itoa`,
//! `zmij`), and the timestamp is written digit by digit in chrono's RFC 3339 form.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::telemetry::Row;

/// `rows` as a JSON array of objects with `system_metrics`' column names.
pub fn rows_json(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 560 + 2);
    out.push(b'[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut uuid = uuid::Uuid::encode_buffer();
        out.extend_from_slice(b"{\"device_id\":\"");
        out.extend_from_slice(r.device_id.hyphenated().encode_lower(&mut uuid).as_bytes());
        out.extend_from_slice(b"\",\"user_id\":\"");
        out.extend_from_slice(r.user_id.hyphenated().encode_lower(&mut uuid).as_bytes());
        out.extend_from_slice(b"\",\"ts\":\"");
        timestamp(&r.ts, &mut out);
        out.extend_from_slice(b"\",\"cpu_pct\":");
        single(r.cpu_pct, &mut out);
        out.extend_from_slice(b",\"load_1m\":");
        single(r.load_1m, &mut out);
        out.extend_from_slice(b",\"mem_used_bytes\":");
        int(r.mem_used_bytes, &mut out);
        out.extend_from_slice(b",\"mem_total_bytes\":");
        int(r.mem_total_bytes, &mut out);
        out.extend_from_slice(b",\"swap_used_bytes\":");
        int(r.swap_used_bytes, &mut out);
        out.extend_from_slice(b",\"disk_used_pct\":");
        single(r.disk_used_pct, &mut out);
        out.extend_from_slice(b",\"disk_read_bytes_per_s\":");
        double(r.disk_read_bytes_per_s, &mut out);
        out.extend_from_slice(b",\"disk_write_bytes_per_s\":");
        double(r.disk_write_bytes_per_s, &mut out);
        out.extend_from_slice(b",\"net_rx_bytes_per_s\":");
        double(r.net_rx_bytes_per_s, &mut out);
        out.extend_from_slice(b",\"net_tx_bytes_per_s\":");
        double(r.net_tx_bytes_per_s, &mut out);
        out.extend_from_slice(b",\"cpu_temp_c\":");
        optional_f32(r.cpu_temp_c, &mut out);
        out.extend_from_slice(b",\"gpu_temp_c\":");
        optional_f32(r.gpu_temp_c, &mut out);
        out.extend_from_slice(b",\"process_count\":");
        int(i64::from(r.process_count), &mut out);
        out.extend_from_slice(b",\"battery_pct\":");
        optional_f32(r.battery_pct, &mut out);
        out.extend_from_slice(b",\"on_battery\":");
        out.extend_from_slice(match r.on_battery {
            None => b"null",
            Some(true) => b"true",
            Some(false) => b"false",
        });
        out.push(b'}');
    }
    out.push(b']');
    out
}

fn int(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Floats as `serde_json` writes them: the shortest form that reads back the same value of their
/// own width, `null` if not finite.
fn single(v: f32, out: &mut Vec<u8>) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn double(v: f64, out: &mut Vec<u8>) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn optional_f32(v: Option<f32>, out: &mut Vec<u8>) {
    match v {
        Some(v) => single(v, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// chrono's serde form: RFC 3339 with `Z`, and 0, 3, 6 or 9 fractional digits as the
/// nanoseconds need.
fn timestamp(ts: &DateTime<Utc>, out: &mut Vec<u8>) {
    let year = ts.year();
    let nano = ts.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        // Out-of-range years and leap seconds: rare enough for chrono's own formatting.
        let quoted = serde_json::to_vec(ts).expect("a timestamp serialises");
        out.extend_from_slice(&quoted[1..quoted.len() - 1]);
        return;
    }
    let digits = |v: u32, n: usize, out: &mut Vec<u8>| {
        let mut buf = [b'0'; 9];
        let mut v = v;
        for d in buf[..n].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..n]);
    };
    digits(year as u32, 4, out);
    out.push(b'-');
    digits(ts.month(), 2, out);
    out.push(b'-');
    digits(ts.day(), 2, out);
    out.push(b'T');
    digits(ts.hour(), 2, out);
    out.push(b':');
    digits(ts.minute(), 2, out);
    out.push(b':');
    digits(ts.second(), 2, out);
    if nano == 0 {
    } else if nano.is_multiple_of(1_000_000) {
        out.push(b'.');
        digits(nano / 1_000_000, 3, out);
    } else if nano.is_multiple_of(1_000) {
        out.push(b'.');
        digits(nano / 1_000, 6, out);
    } else {
        out.push(b'.');
        digits(nano, 9, out);
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn random_f32(rng: &mut SmallRng) -> f32 {
        match rng.random_range(0..10) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => 0.0,
            3 => -rng.random::<f32>() * 1e-30,
            4 => f32::from_bits(rng.random()),
            _ => rng.random::<f32>() * 100.0,
        }
    }

    fn random_f64(rng: &mut SmallRng) -> f64 {
        match rng.random_range(0..8) {
            0 => f64::NEG_INFINITY,
            1 => f64::from_bits(rng.random()),
            2 => 1e21 * rng.random::<f64>(),
            _ => rng.random::<f64>() * 1e8,
        }
    }

    fn random_row(rng: &mut SmallRng) -> Row {
        let nanos = match rng.random_range(0..5) {
            0 => 0,
            1 => rng.random_range(0..1000) * 1_000_000,
            2 => rng.random_range(0..1_000_000) * 1000,
            3 => rng.random_range(0..1_000_000_000),
            _ => 1_000_000_000 + rng.random_range(0..1000),
        };
        let secs = match rng.random_range(0..6) {
            0 => rng.random_range(-80_000_000_000i64..-62_167_219_200),
            1 => rng.random_range(253_402_300_800i64..300_000_000_000),
            _ => rng.random_range(-62_167_219_200i64..253_402_300_800),
        };
        let ts = Utc
            .timestamp_opt(secs, nanos)
            .single()
            .unwrap_or_else(|| Utc.timestamp_opt(secs, 0).unwrap());
        let opt = |rng: &mut SmallRng| rng.random_bool(0.7).then(|| random_f32(rng));
        Row {
            device_id: uuid::Uuid::from_u128(rng.random()),
            user_id: uuid::Uuid::from_u128(rng.random()),
            ts,
            cpu_pct: random_f32(rng),
            load_1m: random_f32(rng),
            mem_used_bytes: rng.random(),
            mem_total_bytes: rng.random_range(0..1 << 40),
            swap_used_bytes: -rng.random_range(0..1000),
            disk_used_pct: random_f32(rng),
            disk_read_bytes_per_s: random_f64(rng),
            disk_write_bytes_per_s: random_f64(rng),
            net_rx_bytes_per_s: random_f64(rng),
            net_tx_bytes_per_s: random_f64(rng),
            cpu_temp_c: opt(rng),
            gpu_temp_c: opt(rng),
            process_count: rng.random(),
            battery_pct: opt(rng),
            on_battery: [None, Some(true), Some(false)][rng.random_range(0..3)],
        }
    }

    #[test]
    fn the_same_bytes_as_serde_json() {
        let mut rng = SmallRng::seed_from_u64(7);
        for n in [0usize, 1, 2, 5, 40] {
            for _ in 0..2_000 {
                let rows: Vec<Row> = (0..n).map(|_| random_row(&mut rng)).collect();
                let ours = rows_json(&rows);
                let serde = serde_json::to_vec(&rows).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&serde)
                );
            }
        }
    }
}
