//! `histograms.hlog`: HdrHistogram's V2 compressed interval log (readable by `HistogramLogProcessor`
//! and HdrHistogram's plotters), values in microseconds, with the header and legend HdrHistogram's
//! own writers put first. Per window, tag `<operation>` holds the
//! latency from the intended start and `<operation>/service` the service time; at the end, one
//! interval spanning the run per operation holds the full-precision totals (`<operation>/total`,
//! `<operation>/service/total`). With `timeline.json` (the windows' counters) it is the run's saved
//! data: [`read`] rebuilds the run's [`Aggregate`] exactly.

use std::io::Write;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::aggregate::Aggregate;

/// The format version HdrHistogram's own writers put first (the tag and base-time lines of 1.3).
pub const FORMAT_VERSION: &str = "[Histogram log format version 1.3]";
/// The column legend HdrHistogram's writers put after the header.
pub const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";

/// Writes the log: HdrHistogram's header (format version, comment, start and base time, max-value
/// divisor), its legend, then the intervals.
pub fn write(out: &mut impl Write, agg: &Aggregate, started: SystemTime) -> std::io::Result<()> {
    // The crate's writer has no legend line: the log is written to a buffer and the legend put in
    // after the header's comment lines.
    let mut log = Vec::new();
    intervals(&mut log, agg, started)?;
    let text = String::from_utf8(log).map_err(std::io::Error::other)?;
    let header_end = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.len() + 1)
        .sum::<usize>();
    out.write_all(&text.as_bytes()[..header_end])?;
    writeln!(out, "{LEGEND}")?;
    out.write_all(&text.as_bytes()[header_end..])
}

fn intervals(out: &mut impl Write, agg: &Aggregate, started: SystemTime) -> std::io::Result<()> {
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(FORMAT_VERSION)
        .add_comment("fleetbench: intended-start latency in microseconds, one tag per operation");
    builder.with_start_time(started);
    builder.with_base_time(started);
    builder.with_max_value_divisor(1000.0);
    let mut writer = builder
        .begin_log_with(out, &mut serializer)
        .map_err(std::io::Error::other)?;
    let window = Duration::from_micros(agg.window_us);
    // Interval logs are ordered by start time: windows outer, operations inner.
    let mut windows: Vec<u64> = agg
        .operations
        .values()
        .flat_map(|op| op.windows.keys().copied())
        .collect();
    windows.sort_unstable();
    windows.dedup();
    let tag = |name: String| {
        Tag::new(&name)
            .map(|_| name.clone())
            .ok_or_else(|| std::io::Error::other(format!("{name:?} cannot be an interval-log tag")))
    };
    let mut put =
        |h: &hdrhistogram::Histogram<u64>, start: Duration, span: Duration, name: String| {
            let name = tag(name)?;
            writer
                .write_histogram(h, start, span, Tag::new(&name))
                .map_err(|e| std::io::Error::other(format!("{e:?}")))
        };
    for w in windows {
        for (name, op) in &agg.operations {
            if let Some(c) = op.windows.get(&w) {
                put(&c.latency, window * (w as u32), window, name.clone())?;
                put(
                    &c.service,
                    window * (w as u32),
                    window,
                    format!("{name}/service"),
                )?;
            }
        }
    }
    let last = agg
        .operations
        .values()
        .flat_map(|op| op.windows.keys().copied())
        .max()
        .map_or(window, |w| window * (w as u32 + 1));
    for (name, op) in &agg.operations {
        put(
            &op.total.latency,
            Duration::ZERO,
            last,
            format!("{name}/total"),
        )?;
        put(
            &op.total.service,
            Duration::ZERO,
            last,
            format!("{name}/service/total"),
        )?;
    }
    Ok(())
}

/// One window's counters, as `timeline.json` keeps them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowCounts {
    pub window: u64,
    pub count: u64,
    pub errors: u64,
    pub rows: u64,
    pub bytes: u64,
    pub errors_by_kind: std::collections::BTreeMap<String, u64>,
}

/// `timeline.json`: what the interval log does not hold.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timeline {
    pub window_us: u64,
    pub late: u64,
    pub dropped: u64,
    pub abandoned: u64,
    /// The load the scenario asked for: what its level is, and (seconds on the run's clock, level)
    /// at the stages' corners.
    #[serde(default)]
    pub load_unit: String,
    #[serde(default)]
    pub load_points: Vec<(f64, f64)>,
    /// (seconds on the run's clock, active agents, uploads in flight), once a window.
    #[serde(default)]
    pub gauges: Vec<(f64, f64, f64)>,
    /// Operation → its windows' counters, and its totals' errors by kind.
    pub operations: std::collections::BTreeMap<
        String,
        (Vec<WindowCounts>, std::collections::BTreeMap<String, u64>),
    >,
}

impl Timeline {
    pub fn of(agg: &Aggregate) -> Timeline {
        Timeline {
            window_us: agg.window_us,
            late: agg.late,
            dropped: agg.dropped,
            abandoned: agg.abandoned,
            load_unit: String::new(),
            load_points: Vec::new(),
            gauges: Vec::new(),
            operations: agg
                .operations
                .iter()
                .map(|(name, op)| {
                    let windows = op
                        .windows
                        .iter()
                        .map(|(w, c)| WindowCounts {
                            window: *w,
                            count: c.count,
                            errors: c.errors,
                            rows: c.rows,
                            bytes: c.bytes,
                            errors_by_kind: c.errors_by_kind.clone(),
                        })
                        .collect();
                    (name.clone(), (windows, op.total.errors_by_kind.clone()))
                })
                .collect(),
        }
    }
}

/// Rebuilds the run's aggregate from its interval log and timeline; with the log's start time
/// (since the Unix epoch).
pub fn read(hlog: &[u8], timeline: &Timeline) -> Result<(Aggregate, Duration), String> {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut agg = Aggregate::new(timeline.window_us);
    agg.late = timeline.late;
    agg.dropped = timeline.dropped;
    agg.abandoned = timeline.abandoned;
    let mut deserializer = hdrhistogram::serialization::Deserializer::new();
    let window_s = timeline.window_us as f64 / 1e6;
    let mut started = Duration::ZERO;
    for entry in IntervalLogIterator::new(hlog) {
        let h = match entry.map_err(|e| format!("histograms.hlog: {e:?}"))? {
            LogEntry::Interval(h) => h,
            LogEntry::StartTime(t) => {
                started = t;
                continue;
            }
            _ => continue,
        };
        let tag = h
            .tag()
            .map(|t| t.as_str().to_string())
            .ok_or("histograms.hlog: an interval without a tag")?;
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            h.encoded_histogram(),
        )
        .map_err(|e| format!("histograms.hlog: {e}"))?;
        let hist: hdrhistogram::Histogram<u64> = deserializer
            .deserialize(&mut &bytes[..])
            .map_err(|e| format!("histograms.hlog: {e:?}"))?;
        let (name, kind) = match tag.split_once('/') {
            Some((n, k)) => (n.to_string(), k),
            None => (tag.clone(), ""),
        };
        let op = agg.operations.entry(name).or_default();
        let w = (h.start_timestamp().as_secs_f64() / window_s).round() as u64;
        match kind {
            "total" => op.total.latency = hist,
            "service/total" => op.total.service = hist,
            "" => {
                op.windows
                    .entry(w)
                    .or_insert_with(|| {
                        crate::aggregate::Counts::with(crate::aggregate::window_histogram)
                    })
                    .latency = hist
            }
            "service" => {
                op.windows
                    .entry(w)
                    .or_insert_with(|| {
                        crate::aggregate::Counts::with(crate::aggregate::window_histogram)
                    })
                    .service = hist
            }
            other => {
                return Err(format!(
                    "histograms.hlog: unknown tag kind {other:?} in {tag:?}"
                ));
            }
        }
    }
    for (name, (windows, by_kind)) in &timeline.operations {
        let op = agg.operations.get_mut(name).ok_or_else(|| {
            format!("timeline.json names {name:?}, which histograms.hlog does not hold")
        })?;
        for wc in windows {
            let c = op.windows.get_mut(&wc.window).ok_or_else(|| {
                format!(
                    "timeline.json: {name} window {} is not in histograms.hlog",
                    wc.window
                )
            })?;
            (c.count, c.errors, c.rows, c.bytes) = (wc.count, wc.errors, wc.rows, wc.bytes);
            c.errors_by_kind = wc.errors_by_kind.clone();
            op.total.count += wc.count;
            op.total.errors += wc.errors;
            op.total.rows += wc.rows;
            op.total.bytes += wc.bytes;
        }
        op.total.errors_by_kind = by_kind.clone();
    }
    Ok((agg, started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Outcome, Sample};
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn the_log_reads_back_as_the_same_windows() {
        let mut agg = Aggregate::new(1_000_000);
        for i in 0..3_000u64 {
            agg.add(&Sample {
                operation: if i % 2 == 0 {
                    "rest.insert_metrics"
                } else {
                    "auth.refresh"
                },
                intended_us: i * 1_000,
                sent_us: i * 1_000,
                done_us: i * 1_000 + 500 + i,
                outcome: Outcome::Ok,
                rows: 1,
                bytes: 1,
            });
        }
        let mut buf = Vec::new();
        write(
            &mut buf,
            &agg,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .unwrap();
        // HdrHistogram's header comes first, its legend before the intervals.
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(
            text.starts_with(&format!("#{FORMAT_VERSION}\n")),
            "{text:.200}"
        );
        let legend = text.lines().position(|l| l == LEGEND).unwrap();
        assert!(text.lines().take(legend).all(|l| l.starts_with('#')));
        assert!(text.lines().skip(legend + 1).all(|l| l.starts_with("Tag=")));
        let mut seen = 0;
        let mut deserializer = hdrhistogram::serialization::Deserializer::new();
        for entry in IntervalLogIterator::new(&buf) {
            if let Ok(LogEntry::Interval(h)) = entry {
                let tag = h.tag().unwrap().as_str().to_string();
                if tag.contains('/') {
                    continue;
                }
                let bytes = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    h.encoded_histogram(),
                )
                .unwrap();
                let hist: hdrhistogram::Histogram<u64> =
                    deserializer.deserialize(&mut &bytes[..]).unwrap();
                let w = (h.start_timestamp().as_secs_f64()).round() as u64;
                assert_eq!(
                    hist, agg.operations[&tag].windows[&w].latency,
                    "{tag} window {w}"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, 6);
        // Log and timeline rebuild the aggregate exactly: totals, windows, counters.
        let timeline = Timeline::of(&agg);
        let json = serde_json::to_string(&timeline).unwrap();
        let (back, started) = read(&buf, &serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(started, Duration::from_secs(1_800_000_000));
        assert_eq!(back.operations.len(), agg.operations.len());
        for (name, op) in &agg.operations {
            let b = &back.operations[name];
            assert_eq!(b.total.latency, op.total.latency, "{name}");
            assert_eq!(b.total.service, op.total.service, "{name}");
            assert_eq!(
                (b.total.count, b.total.rows, b.total.bytes),
                (op.total.count, op.total.rows, op.total.bytes)
            );
            assert_eq!(b.windows.len(), op.windows.len());
            for (w, c) in &op.windows {
                assert_eq!(b.windows[w].latency, c.latency);
                assert_eq!(b.windows[w].service, c.service);
                assert_eq!(b.windows[w].count, c.count);
            }
        }
    }
}
