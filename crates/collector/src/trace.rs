//! Trace files: JSON lines, a [`Header`] first, then one [`Reading`] per line with its `t_ms`.
//! Written as they are sampled ([`record`]; a crash loses at most the line being written) and read
//! back whole.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Collector, Reading};

/// The first line of a trace: the machine and the cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Format version (1).
    pub fleetbench_trace: u32,
    pub hostname: String,
    pub cores: u16,
    pub ram_bytes: u64,
    pub disk_bytes: u64,
    pub interval_ms: u64,
    /// RFC 3339.
    pub started_at: String,
}

#[derive(Debug, Clone)]
pub struct Trace {
    pub header: Header,
    pub readings: Vec<Reading>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Bad {
        path: String,
        line: usize,
        message: String,
    },
}

pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, header: &Header) -> std::io::Result<Writer<W>> {
        serde_json::to_writer(&mut out, header)?;
        out.write_all(b"\n")?;
        Ok(Writer { out })
    }

    pub fn push(&mut self, r: &Reading) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, r)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

impl Trace {
    pub fn read(path: &Path) -> Result<Trace, TraceError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
            path: shown.clone(),
            source,
        })?;
        let bad = |line: usize, message: String| TraceError::Bad {
            path: shown.clone(),
            line,
            message,
        };
        let mut lines = std::io::BufReader::new(file).lines();
        let first = lines
            .next()
            .ok_or_else(|| bad(1, "empty: a trace starts with its header line".into()))?
            .map_err(|e| bad(1, e.to_string()))?;
        let header: Header = serde_json::from_str(&first)
            .map_err(|e| bad(1, format!("not a trace header ({e})")))?;
        if header.fleetbench_trace != 1 {
            return Err(bad(
                1,
                format!(
                    "trace format {} (this fleetbench reads 1)",
                    header.fleetbench_trace
                ),
            ));
        }
        if header.interval_ms == 0 {
            return Err(bad(1, "interval_ms must be above 0".into()));
        }
        let mut readings = Vec::new();
        for (i, line) in lines.enumerate() {
            let line = line.map_err(|e| bad(i + 2, e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            readings.push(serde_json::from_str(&line).map_err(|e| bad(i + 2, e.to_string()))?);
        }
        if readings.is_empty() {
            return Err(bad(2, "no readings after the header".into()));
        }
        Ok(Trace { header, readings })
    }
}

/// Records up to `n` samples from `collector`, one every `interval` (the first one interval after
/// the call), into `w`; stops early once `stop` reads true. `progress` sees each sample with its
/// 1-based number. Returns how many were written.
pub async fn record<W: Write>(
    collector: &mut Collector,
    w: &mut Writer<W>,
    interval: Duration,
    n: u64,
    stop: tokio::sync::watch::Receiver<bool>,
    mut progress: impl FnMut(u64, &Reading),
) -> std::io::Result<u64> {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    for i in 0..n {
        ticks.tick().await;
        if *stop.borrow() {
            return Ok(i);
        }
        let mut r = collector.sample();
        r.t_ms = i * interval.as_millis() as u64;
        w.push(&r)?;
        progress(i + 1, &r);
    }
    Ok(n)
}
