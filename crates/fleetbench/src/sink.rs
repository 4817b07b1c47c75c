//! `fleetbench sink`: the calibration target with a known latency model, served until Ctrl-C, with
//! an account of what it answered.

use anyhow::Context;

use crate::CommandError;

pub fn sink(
    listen: std::net::SocketAddr,
    latency: fleetbench_sink::Latency,
    stall: Option<fleetbench_sink::Stall>,
    capacity: Option<f64>,
    faults: Vec<fleetbench_sink::Fault>,
) -> Result<(), CommandError> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let sink = fleetbench_sink::Sink::faulty(
            fleetbench_sink::Model {
                latency,
                stall,
                capacity,
            },
            faults.clone(),
        );
        println!("http://{}", listener.local_addr()?);
        eprintln!(
            "sink: latency {latency:?}, stall {stall:?}, capacity {capacity:?}/s, faults {faults:?}; Ctrl-C stops it"
        );
        tokio::select! {
            r = fleetbench_sink::serve(listener, sink.clone()) => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!(
            "sink: {} requests, {} inserts, {} rows, {} answered with a fault",
            sink.requests.load(std::sync::atomic::Ordering::Relaxed),
            sink.inserts.load(std::sync::atomic::Ordering::Relaxed),
            sink.rows.load(std::sync::atomic::Ordering::Relaxed),
            sink.faulted.load(std::sync::atomic::Ordering::Relaxed)
        );
        anyhow::Ok(())
    })?;
    Ok(())
}
