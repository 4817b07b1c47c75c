//! Real collectors and traces: a reading round-trips through the Data API into `system_metrics`;
//! a replaying agent reproduces its trace's values exactly at time scale 1; calibration recovers the
//! parameters of a trace the model generated.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fleetbench_collector::trace::{Header, Trace, Writer};
use fleetbench_collector::{Collector, Reading};
use fleetbench_fleet::calibrate;
use fleetbench_fleet::telemetry::Row;
use fleetbench_scenario::profile::{DeviceProfile, ModelParams};

use crate::common::{QUIET, db, gateway, target};

/// A trace whose readings all differ (reading i has cpu_pct i, …).
fn numbered(n: usize, interval_ms: u64) -> Trace {
    let mut c = Collector::new();
    let base = c.sample();
    Trace {
        header: Header {
            fleetbench_trace: 1,
            hostname: "numbered".into(),
            cores: 2,
            ram_bytes: 1 << 34,
            disk_bytes: 1 << 40,
            interval_ms,
            started_at: "2026-11-26T09:00:00Z".into(),
        },
        readings: (0..n)
            .map(|i| Reading {
                t_ms: i as u64 * interval_ms,
                cpu_pct: i as f32,
                mem_used_bytes: 1_000_000 + i as i64,
                mem_total_bytes: 1 << 34,
                cpu_temp_c: (i % 3 != 0).then_some(40.0 + i as f32 / 10.0),
                net_rx_bytes_per_s: 1000.0 * i as f64,
                ..base.clone()
            })
            .collect(),
    }
}

fn replaying(
    trace: &Trace,
    sample: &str,
    extra: &str,
) -> (fleetbench_scenario::Plan, Vec<Arc<Trace>>) {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("t.jsonl");
    let mut w = Writer::new(std::fs::File::create(&path).unwrap(), &trace.header).unwrap();
    trace.readings.iter().for_each(|r| w.push(r).unwrap());
    let text = format!(
        "name = \"replay\"\n[fleet]\nagents = 4\n[[load.stages]]\nduration = \"1s\"\nagents = 4\n[workload]\nsample_interval = \"{sample}\"\nupload_interval = \"{sample}\"\n[workload.replay]\ntraces = [{:?}]\noffsets = false\n{extra}",
        path.display().to_string()
    );
    let (_, plan, _) = fleetbench_scenario::load_str(&text, "replay.toml", &[]).unwrap();
    let traces = fleetbench_fleet::provision::load_traces(&plan).unwrap();
    (plan, traces)
}

fn take(plan: &fleetbench_scenario::Plan, traces: &[Arc<Trace>], n: usize) -> Vec<Row> {
    let mut m = fleetbench_fleet::provision::machine(plan, 0, traces);
    (0..n)
        .map(|_| m.sample(uuid::Uuid::nil(), uuid::Uuid::nil(), Utc::now()))
        .collect()
}

#[test]
fn replay_reproduces_a_trace_exactly_at_time_scale_one() {
    let trace = numbered(20, 1000);
    let (plan, traces) = replaying(&trace, "1s", "");
    let rows = take(&plan, &traces, 45);
    for (k, row) in rows.iter().enumerate() {
        // Sample for sample, wrapping at the end.
        let r = &trace.readings[k % 20];
        assert_eq!(row.cpu_pct, r.cpu_pct);
        assert_eq!(row.mem_used_bytes, r.mem_used_bytes);
        assert_eq!(row.cpu_temp_c, r.cpu_temp_c);
        assert_eq!(row.net_rx_bytes_per_s, r.net_rx_bytes_per_s);
        assert_eq!(row.process_count, r.process_count);
    }
    // Twice as fast: every other reading.
    let (plan, traces) = replaying(&trace, "1s", "time_scale = 2.0\n");
    let cpu: Vec<f32> = take(&plan, &traces, 10).iter().map(|r| r.cpu_pct).collect();
    assert_eq!(cpu, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0]);
    // Sampling every 500 ms at scale 1: each reading twice.
    let (plan, traces) = replaying(&trace, "500ms", "");
    let cpu: Vec<f32> = take(&plan, &traces, 6).iter().map(|r| r.cpu_pct).collect();
    assert_eq!(cpu, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
    // Jitter moves values within its share, never outside it.
    let (plan, traces) = replaying(&trace, "1s", "jitter = 0.1\n");
    let rows = take(&plan, &traces, 20);
    assert!(
        rows.iter()
            .zip(&trace.readings)
            .skip(1)
            .any(|(a, b)| a.net_rx_bytes_per_s != b.net_rx_bytes_per_s)
    );
    for (a, b) in rows.iter().zip(&trace.readings) {
        assert!(
            (a.net_rx_bytes_per_s - b.net_rx_bytes_per_s).abs() <= b.net_rx_bytes_per_s * 0.1 + 1.0
        );
    }
    // Offsets: agents start at their own points of the trace.
    let (plan, traces) = replaying(&trace, "1s", "");
    let mut plan = plan;
    plan.replay.as_mut().unwrap().offsets = true;
    let firsts: std::collections::BTreeSet<u32> = (0..16)
        .map(|i| {
            let mut m = fleetbench_fleet::provision::machine(&plan, i, &traces);
            m.sample(uuid::Uuid::nil(), uuid::Uuid::nil(), Utc::now())
                .cpu_pct as u32
        })
        .collect();
    assert!(firsts.len() > 4, "{firsts:?}");
}

#[test]
fn calibration_recovers_the_parameters_of_a_model_trace() {
    let truth = ModelParams {
        idle_load: 0.2,
        daily_amplitude: 0.3,
        noise: 0.04,
        burst_rate: 0.05,
        burst_size: 0.35,
        temp_idle_c: 30.0,
        temp_per_load_c: 50.0,
        temp_inertia: 0.2,
        temp_noise: 0.6,
        mem_used_fraction: 0.3,
    };
    let profile = DeviceProfile {
        name: "known".into(),
        form_factor: "desktop".into(),
        cores: 8,
        ram_bytes: 32 << 30,
        disk_bytes: 1 << 40,
        has_gpu: false,
        has_battery: false,
        model: truth,
    };
    // Two days, one sample a minute.
    let start: DateTime<Utc> = "2026-11-24T00:00:00Z".parse().unwrap();
    let rows = calibrate::synthesize(&profile, 7, 2 * 1440, 60_000, start);
    let trace = Trace {
        header: Header {
            fleetbench_trace: 1,
            hostname: "model".into(),
            cores: 8,
            ram_bytes: 32 << 30,
            disk_bytes: 1 << 40,
            interval_ms: 60_000,
            started_at: start.to_rfc3339(),
        },
        readings: rows
            .iter()
            .enumerate()
            .map(|(i, r)| Reading {
                t_ms: i as u64 * 60_000,
                cpu_pct: r.cpu_pct,
                cpu_per_core_pct: vec![],
                load_1m: r.load_1m,
                load_5m: 0.0,
                load_15m: 0.0,
                mem_used_bytes: r.mem_used_bytes,
                mem_total_bytes: r.mem_total_bytes,
                swap_used_bytes: 0,
                swap_total_bytes: 0,
                disk_used_pct: r.disk_used_pct,
                disk_read_bytes_per_s: 0.0,
                disk_write_bytes_per_s: 0.0,
                net_rx_bytes_per_s: 0.0,
                net_tx_bytes_per_s: 0.0,
                process_count: r.process_count,
                top_processes: vec![],
                cpu_temp_c: r.cpu_temp_c,
                gpu_temp_c: None,
                battery_pct: None,
                on_battery: None,
            })
            .collect(),
    };
    let fit = calibrate::fit(&trace, "fitted");
    let got = fit.profile.model;
    let close = |name: &str, got: f64, want: f64, tol: f64| {
        assert!(
            (got - want).abs() <= tol,
            "{name}: fitted {got:.4}, truth {want} (± {tol})"
        );
    };
    close("idle_load", got.idle_load, truth.idle_load, 0.01);
    close(
        "daily_amplitude",
        got.daily_amplitude,
        truth.daily_amplitude,
        0.02,
    );
    close("noise", got.noise, truth.noise, 0.005);
    close("burst_rate", got.burst_rate, truth.burst_rate, 0.015);
    close("burst_size", got.burst_size, truth.burst_size, 0.04);
    close("temp_idle_c", got.temp_idle_c, truth.temp_idle_c, 1.5);
    close(
        "temp_per_load_c",
        got.temp_per_load_c,
        truth.temp_per_load_c,
        2.5,
    );
    close("temp_inertia", got.temp_inertia, truth.temp_inertia, 0.02);
    close("temp_noise", got.temp_noise, truth.temp_noise, 0.1);
    close(
        "mem_used_fraction",
        got.mem_used_fraction,
        truth.mem_used_fraction,
        0.16,
    );
    assert!(fit.notes.is_empty(), "{:?}", fit.notes);
    // A minute of a sensorless machine: what cannot be fitted is said, and kept at its default.
    let short = numbered(60, 1000);
    let fit = calibrate::fit(&short, "short");
    assert!(
        fit.notes.iter().any(|n| n.contains("daily amplitude")),
        "{:?}",
        fit.notes
    );
    assert_eq!(fit.profile.model.daily_amplitude, 0.0);
}

#[tokio::test]
async fn a_collector_reading_round_trips_through_the_data_api() {
    let _shared = QUIET.read().await;
    let target = target(&gateway(|_| {}));
    let run_id = uuid::Uuid::new_v4().to_string();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    // Pushed as an agent does for a couple of uploads, stopped by its own flag.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    drop(stop);
    let pushing = tokio::spawn({
        let (target, run_id) = (target.clone(), run_id.clone());
        async move {
            fleetbench_fleet::collectors::push(
                &target,
                &run_id,
                0,
                Duration::from_millis(100),
                Duration::from_millis(400),
                fleetbench_fleet::Clock::new(),
                stop_rx,
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    let pushed = pushing.await.unwrap().unwrap();
    assert!(
        pushed.samples >= 5 && pushed.rows_written == pushed.samples,
        "{pushed:?}"
    );
    let device = pushed.device_id.unwrap();
    let db = db().await;
    let rows = db
        .query(
            "select cpu_pct, cpu_per_core_pct, mem_used_bytes, mem_total_bytes, top_processes, cpu_temp_c, user_id \
             from public.system_metrics where device_id = $1",
            &[&device],
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, pushed.rows_written);
    let cores = std::thread::available_parallelism().unwrap().get();
    for r in &rows {
        let cpu: f32 = r.get(0);
        let per_core: Vec<f32> = r.get(1);
        let (used, total): (i64, i64) = (r.get(2), r.get(3));
        let top: serde_json::Value = r.get(4);
        assert!((0.0..=100.0).contains(&cpu));
        assert_eq!(per_core.len(), cores);
        assert!(per_core.iter().all(|p| (0.0..=100.0).contains(p)));
        assert!(used > 0 && used <= total);
        assert!(
            top.as_array()
                .is_some_and(|t| !t.is_empty() && t.len() <= fleetbench_collector::TOP)
        );
        assert_eq!(r.get::<_, uuid::Uuid>(6), pushed.user_id.unwrap());
    }
    // One reading, posted and read back, field for field.
    let reading = Collector::new().sample();
    let body =
        fleetbench_fleet::collectors::row(&reading, device, pushed.user_id.unwrap(), Utc::now());
    let ts = body["ts"].as_str().unwrap().to_string();
    let (email, password) =
        fleetbench_fleet::agent::credentials(&target.config.service_key, &run_id, 900_000);
    let session = target.sign_in(&email, &password).await.unwrap();
    target
        .insert_rest(
            session.bearer(),
            bytes::Bytes::from(serde_json::to_vec(&[body]).unwrap()),
        )
        .await
        .unwrap();
    let back = db
        .query_one(
            "select to_jsonb(m) - 'id' - 'received_at' - 'device_id' - 'user_id' - 'ts' from public.system_metrics m \
             where device_id = $1 and ts = $2::text::timestamptz",
            &[&device, &ts],
        )
        .await
        .unwrap();
    let back: serde_json::Value = back.get(0);
    let mut sent = serde_json::to_value(&reading).unwrap();
    sent.as_object_mut().unwrap().remove("t_ms");
    for (k, v) in sent.as_object().unwrap() {
        let got = &back[k];
        let same = match (v.as_f64(), got.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= a.abs() * 1e-6 + 1e-6,
            _ => {
                v == got
                    || (v.is_array()
                        && v.as_array()
                            .unwrap()
                            .iter()
                            .zip(got.as_array().unwrap())
                            .all(|(x, y)| {
                                (x.as_f64().unwrap_or(0.0) - y.as_f64().unwrap_or(0.0)).abs() < 1e-3
                                    || x == y
                            }))
            }
        };
        assert!(same, "{k}: sent {v}, stored {got}");
    }
    // Absent sensors are stored as NULL, not zero.
    if reading.cpu_temp_c.is_none() {
        assert!(back["cpu_temp_c"].is_null());
    }
}
