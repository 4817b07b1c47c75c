//! The fleet against the calibration sink: load models, pacing, percentiles, aborts.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fleetbench_fleet::RunOutcome;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_rates_are_held_constant_and_ramping() {
    let _quiet = QUIET.write().await;
    let (target, sink) = sink_target(fixed(2), 256).await;
    // 200/s held for 4 s, then a ramp to 400/s over 4 s: 800 + 1200 arrivals.
    let out = run_text(
        r#"name = "rate"
[fleet]
agents = 50
[load]
model = "arrival_rate"
[[load.stages]]
duration = "0s"
rate = "200/s"
[[load.stages]]
duration = "4s"
rate = "200/s"
[[load.stages]]
duration = "4s"
rate = "24000/m"
[workload]
sample_interval = "1s"
upload_interval = "2s"
"#,
        target,
    )
    .await;
    let ops = &out.aggregate.operations["rest.insert_metrics"];
    assert_eq!(out.aggregate.dropped, 0);
    assert_eq!(out.aggregate.late, 0);
    assert_eq!(ops.total.count, 2000, "every arrival carried once");
    assert_eq!(sink.inserts.load(Relaxed), 2000);
    assert_eq!(sink.rows.load(Relaxed), 4000, "two rows per upload");
    // Per one-second window, the count is the rate's integral over that window (independently:
    // 200 in the hold, 200 + 50·t at t seconds into the ramp), within one arrival per worker.
    let rate = |t: f64| {
        if t < 4.0 {
            200.0
        } else {
            200.0 + 50.0 * (t - 4.0)
        }
    };
    let start = out.load_start_us as f64 / 1e6;
    for (w, c) in ops.windows() {
        let (a, b) = (
            (w as f64 - start).max(0.0),
            (w as f64 + 1.0 - start).min(8.0),
        );
        if b <= a {
            continue;
        }
        let steps = 1000;
        let truth: f64 = (0..steps)
            .map(|i| rate(a + (b - a) * (i as f64 + 0.5) / steps as f64) * (b - a) / steps as f64)
            .sum();
        assert!(
            (c.count as f64 - truth).abs() <= 2.5,
            "window {w}: {} uploads, the rate's integral is {truth:.1}",
            c.count
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_that_find_no_idle_agent_are_dropped_and_counted() {
    let _quiet = QUIET.write().await;
    // Two agents, each busy 100 ms per upload, cannot carry 100 arrivals a second.
    let (target, sink) = sink_target(fixed(100), 256).await;
    let out = run_text(
        r#"name = "overload"
[fleet]
agents = 2
[load]
model = "arrival_rate"
[[load.stages]]
duration = "3s"
rate = "100/s"
[[load.stages]]
duration = "0s"
rate = "100/s"
[workload]
sample_interval = "1s"
upload_interval = "1s"
"#,
        target,
    )
    .await;
    // The ramp from 0 to 100/s over 3 s asks for 150 arrivals in all.
    let carried = out.aggregate.operations["rest.insert_metrics"].total.count;
    assert_eq!(carried + out.aggregate.dropped, 150);
    assert!(
        carried <= 2 * 31,
        "{carried} uploads from two agents at 100 ms each"
    );
    assert!(
        out.aggregate.dropped >= 80,
        "dropped {}",
        out.aggregate.dropped
    );
    assert_eq!(sink.inserts.load(Relaxed), carried);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_agents_go_again_when_their_upload_ends() {
    let _quiet = QUIET.write().await;
    let (target, sink) = sink_target(fixed(20), 256).await;
    let out = run_text(
        r#"name = "closed"
[fleet]
agents = 10
[load]
model = "closed"
[[load.stages]]
duration = "0s"
agents = 10
[[load.stages]]
duration = "4s"
agents = 10
[workload]
sample_interval = "1s"
upload_interval = "1s"
think_time = "30ms"
"#,
        target,
    )
    .await;
    let ops = &out.aggregate.operations["rest.insert_metrics"];
    // Each agent cycles in 20 ms of service + 30 ms of thinking: at most 80 uploads each in 4 s.
    let n = ops.total.count;
    assert!(
        (560..=810).contains(&n),
        "{n} uploads from 10 agents at 50 ms a cycle"
    );
    assert_eq!(sink.inserts.load(Relaxed), n);
    // A closed loop has no schedule to fall behind: its latency is its service time.
    let (lat, svc) = (
        ops.total.latency.value_at_quantile(0.5),
        ops.total.service.value_at_quantile(0.5),
    );
    assert!(
        lat >= 20_000 && lat - svc < 2_000,
        "latency p50 {lat} µs, service p50 {svc} µs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_agents_stop_after_their_iterations_and_the_run_ends() {
    let _quiet = QUIET.write().await;
    let (target, sink) = sink_target(fixed(5), 256).await;
    let started = std::time::Instant::now();
    let out = run_text(
        r#"name = "iterations"
[fleet]
agents = 7
[load]
model = "closed"
[[load.stages]]
duration = "0s"
agents = 7
[[load.stages]]
duration = "60s"
agents = 7
[workload]
sample_interval = "1s"
upload_interval = "1s"
iterations = 13
"#,
        target,
    )
    .await;
    // Exactly 13 uploads per agent, each of one row, and the run over long before its 60 s stage.
    let ops = &out.aggregate.operations["rest.insert_metrics"];
    assert_eq!(ops.total.count, 7 * 13);
    assert_eq!(sink.inserts.load(Relaxed), 7 * 13);
    assert_eq!(out.rows_written["rest.insert_metrics"], 7 * 13);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the run waited for its stages: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_shares_at_most_its_connections() {
    let _quiet = QUIET.write().await;
    let (target, sink) = sink_target(fixed(20), 4).await;
    let out = run_text(
        r#"name = "capped"
[fleet]
agents = 32
connections = 4
[load]
model = "closed"
[[load.stages]]
duration = "0s"
agents = 32
[[load.stages]]
duration = "3s"
agents = 32
[workload]
sample_interval = "1s"
upload_interval = "1s"
"#,
        target.clone(),
    )
    .await;
    // Four connections at 20 ms a request carry at most 200 uploads a second, whatever 32 agents want.
    let ops = &out.aggregate.operations["rest.insert_metrics"];
    assert!(
        ops.total.count <= 3 * 200 + 4,
        "{} uploads",
        ops.total.count
    );
    assert!(ops.total.count >= 3 * 100, "{} uploads", ops.total.count);
    assert_eq!(target.upload_connections_opened(), 4);
    assert_eq!(sink.inserts.load(Relaxed), ops.total.count);
    // 32 agents queue for 4 connections: each waits about 7 others' 20 ms.
    assert!(ops.total.latency.value_at_quantile(0.5) > 100_000);
}

/// The windows of `op` strictly inside the hold (the first and last two dropped), merged.
fn steady_windows(
    out: &RunOutcome,
    op: &str,
    most: usize,
) -> (fleetbench_metrics::aggregate::Counts, usize) {
    let windows = &out.aggregate.operations[op];
    let keys: Vec<u64> = windows.window_indices().collect();
    let inner = &keys[2..keys.len() - 2];
    let inner = &inner[..inner.len().min(most)];
    let mut merged = fleetbench_metrics::aggregate::Counts::default();
    for k in inner {
        let c = windows.window(*k).unwrap();
        merged.latency.add(&c.latency).unwrap();
        merged.service.add(&c.service).unwrap();
        merged.count += c.count;
    }
    (merged, inner.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_holds_the_arrival_rate() {
    let _quiet = QUIET.write().await;
    let model = fleetbench_sink::Model {
        latency: fleetbench_sink::Latency::Fixed(Duration::ZERO),
        stall: None,
        capacity: None,
    };
    let (out, sink) = against_sink(model, &["load.stages.1.duration=\"8s\""]).await;
    // 50 agents every 100 ms: 500 uploads in every 1 s window of the hold.
    let windows = &out.aggregate.operations["rest.insert_metrics"];
    let keys: Vec<u64> = windows.window_indices().collect();
    for k in &keys[1..keys.len() - 1] {
        let n = windows.window(*k).unwrap().count as f64;
        assert!((n - 500.0).abs() <= 5.0, "window {k}: {n} uploads, not 500");
    }
    assert_eq!(out.aggregate.late, 0);
    assert_eq!(
        sink.rows.load(Relaxed),
        out.rows_written["rest.insert_metrics"]
    );
}

/// Stalls of 400 ms every 1.1 s, one upload per agent per second: an upload arriving `u` into a
/// stall waits `400 ms - u`, so the true latency is `d` for the 63.6 % of arrivals outside stalls
/// and `d + U(0, 400 ms]` for the rest (`d`, the undisturbed round trip, is measured at p25).
/// Each agent's arrivals drift 100 ms per period against the stalls and sweep the whole period in
/// 11 uploads; the truth is checked over 22 one-second windows (two sweeps), where every agent's
/// arrivals sit on an even 100 ms grid across the period. The
/// reported p90, p95 and p99 must be within 2 % of that truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_the_analytic_truth_under_stalls() {
    let _quiet = QUIET.write().await;
    let (stall, period) = (400.0, 1100.0);
    let model = fleetbench_sink::Model {
        latency: fleetbench_sink::Latency::Fixed(Duration::ZERO),
        stall: Some(fleetbench_sink::Stall {
            length: Duration::from_millis(400),
            period: Duration::from_millis(1100),
        }),
        capacity: None,
    };
    let (out, _) = against_sink(
        model,
        &[
            "fleet.agents=40",
            "load.stages.0.agents=40",
            "load.stages.1.agents=40",
            "workload.upload_interval=\"1s\"",
            "workload.sample_interval=\"1s\"",
            "load.stages.1.duration=\"28s\"",
            "output.window=\"1s\"",
        ],
    )
    .await;
    let (steady, windows) = steady_windows(&out, "rest.insert_metrics", 22);
    assert_eq!(
        (windows, steady.count),
        (22, 22 * 40),
        "22 windows of one upload per agent"
    );
    let d = steady.latency.value_at_quantile(0.25) as f64 / 1000.0;
    let stalled = stall / period;
    let truth = |q: f64| d + stall * (q - (1.0 - stalled)) / stalled;
    for q in [0.90, 0.95, 0.99] {
        let got = steady.latency.value_at_quantile(q) as f64 / 1000.0;
        let want = truth(q);
        eprintln!("p{}: {got:.1} ms reported, {want:.1} ms true", q * 100.0);
        assert!(
            (got - want).abs() <= 0.02 * want,
            "p{}: {got:.1} ms reported, {want:.1} ms true (d = {d:.1} ms)",
            q * 100.0
        );
    }
}

/// When uploads come faster than a stall lasts (every 100 ms against 300 ms stalls), the upload
/// that meets the stall holds the agent, the ticks behind it merge into one upload sent when the
/// stall ends, and that upload's wait shows in the latency from its intended start but not in its
/// service time: the difference coordinated omission would hide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_behind_a_stall_show_in_intended_start_latency_only() {
    let _quiet = QUIET.write().await;
    let model = fleetbench_sink::Model {
        latency: fleetbench_sink::Latency::Fixed(Duration::ZERO),
        stall: Some(fleetbench_sink::Stall {
            length: Duration::from_millis(300),
            period: Duration::from_millis(1010),
        }),
        capacity: None,
    };
    let (out, _) = against_sink(
        model,
        &["load.stages.1.duration=\"10s\"", "output.window=\"1010ms\""],
    )
    .await;
    let (steady, _) = steady_windows(&out, "rest.insert_metrics", usize::MAX);
    // Per agent and period: ~7.1 undisturbed uploads, one sent into the stall (latency and service
    // 200-300 ms) and one merged behind it (latency 100-200 ms, service a round trip).
    let (lat, svc) = (
        steady.latency.value_at_quantile(0.85) as f64 / 1000.0,
        steady.service.value_at_quantile(0.85) as f64 / 1000.0,
    );
    assert!(
        lat > 100.0 && svc < 0.2 * lat,
        "p85 latency {lat:.1} ms, service {svc:.1} ms"
    );
    let (lat, svc) = (
        steady.latency.value_at_quantile(0.97) as f64 / 1000.0,
        steady.service.value_at_quantile(0.97) as f64 / 1000.0,
    );
    assert!(
        lat > 200.0 && svc > 200.0,
        "p97 latency {lat:.1} ms, service {svc:.1} ms: both see the stalled upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_fail_threshold_stops_the_run_early() {
    let _quiet = QUIET.write().await;
    // Every upload takes 20 ms; a p50 under 1 ms cannot hold, so after its 1 s delay the
    // threshold stops a run planned for 60 s.
    let (target, sink) = sink_target(fixed(20), 64).await;
    let out = run_text(
        r#"name = "abort"
[fleet]
agents = 10
[load]
model = "closed"
grace = "2s"
[[load.stages]]
duration = "0s"
agents = 10
[[load.stages]]
duration = "60s"
agents = 10
[workload]
sample_interval = "1s"
upload_interval = "1s"
[thresholds]
"rest.insert_metrics" = ["p(99) < 10s", { threshold = "p(50) < 1ms", abort_on_fail = true, delay_abort_eval = "1s" }]
"#,
        target,
    )
    .await;
    let reason = out.aborted.expect("the run was aborted");
    assert!(
        reason.contains("rest.insert_metrics p(50) < 1ms"),
        "{reason}"
    );
    let load_s = (out.clock.now_us() - out.load_start_us) as f64 / 1e6;
    assert!(
        load_s < 20.0,
        "the run went on for {load_s:.1} s after the threshold was crossed"
    );
    assert!(!out.interrupted, "an abort is not a signal");
    // What was measured up to the abort is all there: every upload the sink saw is counted.
    assert_eq!(
        sink.inserts.load(Relaxed),
        out.aggregate.operations["rest.insert_metrics"].total.count
    );
    // A threshold that holds never aborts: the run lasts its stages.
    let (target, _) = sink_target(fixed(20), 64).await;
    let out = run_text(
        r#"name = "holds"
[fleet]
agents = 4
[load]
model = "closed"
[[load.stages]]
duration = "3s"
agents = 4
[workload]
sample_interval = "1s"
upload_interval = "1s"
[thresholds]
"rest.insert_metrics" = [{ threshold = "p(50) < 10s", abort_on_fail = true }]
"#,
        target,
    )
    .await;
    assert_eq!(out.aborted, None);
    assert!((out.clock.now_us() - out.load_start_us) as f64 / 1e6 >= 3.0);
}
