//! `histograms.hlog`: one interval histogram per operation and window, tagged with the operation
//! name, in HdrHistogram's V2 compressed interval-log format (readable by `HistogramLogProcessor` and
//! HdrHistogram's plotters). Values are intended-start latencies in microseconds.

use std::io::Write;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::aggregate::Aggregate;

pub fn write(out: &mut impl Write, agg: &Aggregate, started: SystemTime) -> std::io::Result<()> {
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
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
    for w in windows {
        for (name, op) in &agg.operations {
            if let Some(c) = op.windows.get(&w) {
                let tag = Tag::new(name).ok_or_else(|| {
                    std::io::Error::other(format!("{name:?} cannot be an interval-log tag"))
                })?;
                writer
                    .write_histogram(&c.latency, window * (w as u32), window, Some(tag))
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            }
        }
    }
    Ok(())
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
        let mut seen = 0;
        let mut deserializer = hdrhistogram::serialization::Deserializer::new();
        for entry in IntervalLogIterator::new(&buf) {
            if let Ok(LogEntry::Interval(h)) = entry {
                let tag = h.tag().unwrap().as_str().to_string();
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
    }
}
