//! `fleetbench collect` (the real collector: record a trace, or push live as an agent would) and
//! `fleetbench calibrate` (fit the synthetic model to a trace, write a device profile, and show the
//! trace's distributions beside the fitted model's).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleetbench_collector::Collector;
use fleetbench_collector::trace::{Header, Trace, Writer};
use fleetbench_fleet::{Clock, Target};
use fleetbench_report::calibration_page;

use crate::{CommandError, target};

pub struct Collect {
    pub interval: Duration,
    pub duration: Duration,
    pub out: Option<PathBuf>,
    pub push: bool,
    pub upload_interval: Duration,
}

pub fn collect(c: Collect) -> Result<(), CommandError> {
    if c.interval.is_zero() {
        return Err(CommandError::invalid(anyhow::anyhow!(
            "--interval must be longer than zero"
        )));
    }
    if c.out.is_none() && !c.push {
        return Err(CommandError::invalid(anyhow::anyhow!(
            "nothing to do: give --out FILE to record a trace, or --push to stream to the target"
        )));
    }
    if c.push {
        return push(&c);
    }
    let out = c.out.as_ref().expect("checked above");
    let file = std::fs::File::create(out)
        .with_context(|| format!("creating the trace {}", out.display()))?;
    let mut collector = Collector::new();
    let (hostname, cores, ram_bytes, disk_bytes) = collector.machine();
    let mut w = Writer::new(
        std::io::BufWriter::new(file),
        &Header {
            fleetbench_trace: 1,
            hostname,
            cores,
            ram_bytes,
            disk_bytes,
            interval_ms: c.interval.as_millis() as u64,
            started_at: chrono::Utc::now().to_rfc3339(),
        },
    )?;
    let n = (c.duration.as_secs_f64() / c.interval.as_secs_f64())
        .floor()
        .max(1.0) as u64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stop = crate::signals::stop_on_signal("collect: stopping")?;
        let progress = |i: u64, r: &fleetbench_collector::Reading| {
            if i.is_multiple_of(10) || i == n {
                eprintln!(
                    "collect: {i}/{n} samples (cpu {:.1} %, {} processes)",
                    r.cpu_pct, r.process_count
                );
            }
        };
        fleetbench_collector::trace::record(&mut collector, &mut w, c.interval, n, stop, progress)
            .await
            .with_context(|| format!("writing the trace {}", out.display()))
    })?;
    println!("{}", out.display());
    Ok(())
}

fn push(c: &Collect) -> Result<(), CommandError> {
    let resolved = target::resolve(false)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    eprintln!(
        "collect: pushing this machine to {} {} as its own user (run {run_id}) every {:?}",
        resolved.config.kind,
        target::redact(&resolved.config.api_url),
        c.upload_interval
    );
    let rt = tokio::runtime::Runtime::new()?;
    let pushed = rt.block_on(async {
        let target = Arc::new(
            Target::new(
                resolved.config.clone(),
                1,
                2,
                fleetbench_fleet::target::DEFAULT_TIMEOUT,
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        );
        let stop =
            crate::signals::stop_on_signal("collect: stopping; the backlog is uploaded once more")?;
        let (tx, timed_stop) = tokio::sync::watch::channel(false);
        let duration = c.duration;
        let mut outer = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(duration) => {}
                _ = outer.wait_for(|s| *s) => {}
            }
            let _ = tx.send(true);
        });
        fleetbench_fleet::collectors::push(
            &target,
            &run_id,
            0,
            c.interval,
            c.upload_interval,
            Clock::new(),
            timed_stop,
        )
        .await
        .map_err(|e| anyhow::anyhow!("the collector could not start: {e}"))
    })?;
    eprintln!(
        "collect: {} samples, {} rows written in {} uploads ({} failed); `fleetbench cleanup --run-id {run_id}` removes them",
        pushed.samples, pushed.rows_written, pushed.uploads, pushed.failed_uploads
    );
    println!(
        "{}",
        pushed.device_id.map_or(String::new(), |d| d.to_string())
    );
    if pushed.rows_written < pushed.samples {
        return Err(CommandError {
            code: 1,
            error: anyhow::anyhow!(
                "{} of {} samples were not written",
                pushed.samples - pushed.rows_written,
                pushed.samples
            ),
        });
    }
    Ok(())
}

/// Quantiles shown side by side.
const QS: [f64; 5] = [0.1, 0.5, 0.9, 0.99, 1.0];

/// `values` at each of [`QS`], one decimal, `—` where there are none.
fn quantile_cells(values: &[f64]) -> Vec<String> {
    fleetbench_fleet::calibrate::quantiles(values.to_vec(), &QS)
        .iter()
        .map(|x| {
            if x.is_nan() {
                "—".into()
            } else {
                format!("{x:.1}")
            }
        })
        .collect()
}

pub fn calibrate(
    trace_path: &Path,
    name: Option<String>,
    out: Option<PathBuf>,
) -> Result<(), CommandError> {
    let trace = Trace::read(trace_path).map_err(CommandError::invalid)?;
    let name = name.unwrap_or_else(|| format!("calibrated-{}", trace.header.hostname));
    let fit = fleetbench_fleet::calibrate::fit(&trace, &name);
    let out = out.unwrap_or_else(|| trace_path.with_extension("profile.toml"));
    let text = format!(
        "# Fitted by `fleetbench calibrate {}` to {} samples of {} every {} ms.\n{}\n",
        trace_path.display(),
        trace.readings.len(),
        trace.header.hostname,
        trace.header.interval_ms,
        toml::to_string(&fit.profile).context("writing the profile")?
    );
    std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    for n in &fit.notes {
        eprintln!("calibrate: {n}");
    }
    // The model with the fitted parameters over the trace's own times, beside the trace.
    let beside = fleetbench_fleet::calibrate::beside_model(&trace, &fit.profile);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{:<14} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "metric", "source", "p10", "p50", "p90", "p99", "max"
    );
    let metrics: Vec<calibration_page::Metric> = beside
        .into_iter()
        .map(|b| calibration_page::Metric {
            name: b.metric.to_string(),
            trace_cells: quantile_cells(&b.trace),
            model_cells: quantile_cells(&b.model),
            trace: b.trace,
            model: b.model,
        })
        .collect();
    for m in &metrics {
        for (source, c) in [("trace", &m.trace_cells), ("model", &m.model_cells)] {
            let _ = writeln!(
                stdout,
                "{:<14} {source:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                m.name, c[0], c[1], c[2], c[3], c[4]
            );
        }
    }
    let page = calibration_page::html(&calibration_page::Calibration {
        profile: &name,
        samples: trace.readings.len(),
        interval_ms: trace.header.interval_ms,
        hostname: &trace.header.hostname,
        written_to: &out.display().to_string(),
        notes: &fit.notes,
        quantiles: &["p10", "p50", "p90", "p99", "max"],
        metrics: &metrics,
    });
    let html = out.with_extension("html");
    std::fs::write(&html, page).with_context(|| format!("writing {}", html.display()))?;
    eprintln!(
        "calibrate: the trace beside the fitted model: {}",
        html.display()
    );
    let _ = writeln!(stdout, "{}", out.display());
    Ok(())
}
