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
/// divisor), its legend, then the intervals, as they are read (the log is never held whole).
pub fn write(out: &mut impl Write, agg: &Aggregate, started: SystemTime) -> std::io::Result<()> {
    let mut out = LegendAfterHeader {
        out,
        pending: true,
        line_start: true,
    };
    intervals(&mut out, agg, started)?;
    out.legend()
}

/// The crate's writer has no legend line: this puts it in at the first line that is not one of
/// the header's comments.
struct LegendAfterHeader<'a, W: Write> {
    out: &'a mut W,
    pending: bool,
    line_start: bool,
}

impl<W: Write> LegendAfterHeader<'_, W> {
    fn legend(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.pending) {
            writeln!(self.out, "{LEGEND}")?;
        }
        Ok(())
    }
}

impl<W: Write> Write for LegendAfterHeader<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(first) = buf.first() else {
            return Ok(0);
        };
        if self.line_start && *first != b'#' {
            self.legend()?;
        }
        let n = self.out.write(buf)?;
        if n > 0 {
            self.line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
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
    // Interval logs are ordered by start time: windows outer, operations inner. Each operation's
    // windows are read in order, one unpacked at a time.
    let mut each: Vec<_> = agg
        .operations
        .iter()
        .map(|(name, op)| (name, op.windows().peekable()))
        .collect();
    let mut last = None;
    while let Some(w) = each
        .iter_mut()
        .filter_map(|(_, it)| it.peek().map(|(w, _)| *w))
        .min()
    {
        last = Some(w);
        let start = window_start(window, w)?;
        for (name, it) in &mut each {
            if let Some((_, c)) = it.next_if(|(v, _)| *v == w) {
                put(&c.latency, start, window, (*name).clone())?;
                put(&c.service, start, window, format!("{name}/service"))?;
            }
        }
    }
    let last = match last {
        Some(w) => window_start(window, w + 1)?,
        None => window,
    };
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

/// Where window `w` starts on the run's clock.
fn window_start(window: Duration, w: u64) -> std::io::Result<Duration> {
    u32::try_from(w)
        .ok()
        .and_then(|w| window.checked_mul(w))
        .ok_or_else(|| std::io::Error::other(format!("window {w} is beyond any run's length")))
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
    /// The timeline of `agg`, held whole (tests and small runs; a run writes it with
    /// [`write_timeline`]).
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
                    let windows = op.windows().map(|(w, c)| window_counts(w, &c)).collect();
                    (name.clone(), (windows, op.total.errors_by_kind.clone()))
                })
                .collect(),
        }
    }
}

fn window_counts(window: u64, c: &crate::aggregate::Counts) -> WindowCounts {
    WindowCounts {
        window,
        count: c.count,
        errors: c.errors,
        rows: c.rows,
        bytes: c.bytes,
        errors_by_kind: c.errors_by_kind.clone(),
    }
}

/// The load shape `timeline.json` keeps beside the windows (see [`Timeline`]'s fields).
pub struct LoadFields<'a> {
    pub load_unit: &'a str,
    pub load_points: &'a [(f64, f64)],
    pub gauges: &'a [(f64, f64, f64)],
}

/// Writes `timeline.json` for `agg` as one line, each operation's windows as they are read (what
/// [`Timeline::of`] with the load fields set would serialise, without holding it).
pub fn write_timeline(
    out: &mut impl Write,
    agg: &Aggregate,
    load: LoadFields<'_>,
) -> std::io::Result<()> {
    use serde::ser::{SerializeStruct, Serializer};
    let mut json = serde_json::Serializer::new(&mut *out);
    let mut doc = json.serialize_struct("Timeline", 8)?;
    doc.serialize_field("window_us", &agg.window_us)?;
    doc.serialize_field("late", &agg.late)?;
    doc.serialize_field("dropped", &agg.dropped)?;
    doc.serialize_field("abandoned", &agg.abandoned)?;
    doc.serialize_field("load_unit", load.load_unit)?;
    doc.serialize_field("load_points", load.load_points)?;
    doc.serialize_field("gauges", load.gauges)?;
    doc.serialize_field("operations", &Streamed(agg))?;
    doc.end()?;
    out.write_all(b"\n")
}

/// The operations of an aggregate serialised as `Timeline::operations` is, windows streamed.
struct Streamed<'a>(&'a Aggregate);

impl serde::Serialize for Streamed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .operations
                .iter()
                .map(|(name, op)| (name, (WindowsOf(op), &op.total.errors_by_kind))),
        )
    }
}

struct WindowsOf<'a>(&'a crate::aggregate::Operation);

impl serde::Serialize for WindowsOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.windows().map(|(w, c)| window_counts(w, &c)))
    }
}

/// The longest run a saved log may describe (windows beyond it are a crafted or broken file).
pub const MAX_RUN: Duration = Duration::from_secs(31 * 24 * 3600);

/// Rebuilds the run's aggregate from its interval log and timeline; with the log's start time
/// (since the Unix epoch). Each window is packed as soon as both its histograms are read, so a
/// log of any length is held packed. The files are untrusted input (CI artifacts): every
/// histogram is decoded within the bounds fleetbench writes, every window within [`MAX_RUN`].
pub fn read(
    hlog: impl std::io::BufRead,
    timeline: &Timeline,
) -> Result<(Aggregate, Duration), String> {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    if timeline.window_us == 0 || timeline.window_us > crate::aggregate::MAX_US {
        return Err(format!(
            "timeline.json: window_us {} is not a window fleetbench writes (1 µs to 1 h)",
            timeline.window_us
        ));
    }
    let mut agg = Aggregate::new(timeline.window_us);
    agg.late = timeline.late;
    agg.dropped = timeline.dropped;
    agg.abandoned = timeline.abandoned;
    let mut log = LogReader {
        agg,
        counters: Counters::of(timeline)?,
        halves: Default::default(),
        window_s: timeline.window_us as f64 / 1e6,
    };
    let mut started = Duration::ZERO;
    // Line by line: HdrHistogram's parser keeps no state between lines (it reports timestamps
    // as written), so a log of any length is never held whole.
    for line in hlog.split(b'\n') {
        let mut line = line.map_err(|e| format!("histograms.hlog: {e}"))?;
        line.push(b'\n');
        for entry in IntervalLogIterator::new(&line) {
            match entry.map_err(|e| format!("histograms.hlog: {e:?}"))? {
                LogEntry::Interval(h) => log.take(&h)?,
                LogEntry::StartTime(t) => started = t,
                _ => {}
            }
        }
    }
    if let Some(((name, w), _)) = log.halves.iter().next() {
        return Err(format!(
            "histograms.hlog: {name} window {w} has one of its two histograms (latency and service)"
        ));
    }
    log.counters.all_taken()?;
    totals(&mut log.agg, timeline)?;
    Ok((log.agg, started))
}

/// The aggregate a log is read into, and what is still waiting for its other half.
struct LogReader {
    agg: Aggregate,
    counters: Counters,
    halves: std::collections::HashMap<(String, u64), Half>,
    window_s: f64,
}

impl LogReader {
    /// One interval of the log into the aggregate: a total, or half of a window (packed once
    /// both halves are in).
    fn take(
        &mut self,
        h: &hdrhistogram::serialization::interval_log::IntervalLogHistogram,
    ) -> Result<(), String> {
        let tag = h
            .tag()
            .map(|t| t.as_str().to_string())
            .ok_or("histograms.hlog: an interval without a tag")?;
        let hist =
            decode(h.encoded_histogram()).map_err(|e| format!("histograms.hlog: {tag}: {e}"))?;
        let (name, kind) = match tag.split_once('/') {
            Some((n, k)) => (n.to_string(), k),
            None => (tag.clone(), ""),
        };
        let at = h.start_timestamp();
        if at > MAX_RUN {
            return Err(format!(
                "histograms.hlog: {tag}: an interval at {} s, beyond any run ({} days at most)",
                at.as_secs(),
                MAX_RUN.as_secs() / 86_400
            ));
        }
        let w = (at.as_secs_f64() / self.window_s).round() as u64;
        let op = self.agg.operations.entry(name.clone()).or_default();
        match kind {
            "total" => op.total.latency = hist,
            "service/total" => op.total.service = hist,
            "" | "service" => {
                let half = self.halves.entry((name.clone(), w)).or_default();
                let slot = if kind.is_empty() {
                    &mut half.latency
                } else {
                    &mut half.service
                };
                if slot.replace(hist).is_some() {
                    return Err(format!("histograms.hlog: {tag} window {w} appears twice"));
                }
                if let Some(c) = half.complete() {
                    self.halves.remove(&(name.clone(), w));
                    op.put_window(w, self.counters.take(&name, w, c)?);
                }
            }
            other => {
                return Err(format!(
                    "histograms.hlog: unknown tag kind {other:?} in {tag:?}"
                ));
            }
        }
        Ok(())
    }
}

/// A window's two histograms as the log gives them, one line each.
#[derive(Default)]
struct Half {
    latency: Option<hdrhistogram::Histogram<u64>>,
    service: Option<hdrhistogram::Histogram<u64>>,
}

impl Half {
    /// The window's counts once both histograms are in (the counters filled in later).
    fn complete(&mut self) -> Option<crate::aggregate::Counts> {
        if self.latency.is_none() || self.service.is_none() {
            return None;
        }
        let mut c =
            crate::aggregate::Counts::with(|| hdrhistogram::Histogram::new(1).expect("1 digit"));
        c.latency = self.latency.take()?;
        c.service = self.service.take()?;
        Some(c)
    }
}

/// `timeline.json`'s window counters, by operation and window, taken as the log's windows come.
struct Counters(std::collections::HashMap<(String, u64), WindowCounts>);

impl Counters {
    fn of(timeline: &Timeline) -> Result<Counters, String> {
        let mut map = std::collections::HashMap::new();
        for (name, (windows, _)) in &timeline.operations {
            for wc in windows {
                if map.insert((name.clone(), wc.window), wc.clone()).is_some() {
                    return Err(format!(
                        "timeline.json: {name} window {} appears twice",
                        wc.window
                    ));
                }
            }
        }
        Ok(Counters(map))
    }

    fn take(
        &mut self,
        name: &str,
        w: u64,
        mut c: crate::aggregate::Counts,
    ) -> Result<crate::aggregate::Counts, String> {
        let wc = self
            .0
            .remove(&(name.to_string(), w))
            .ok_or_else(|| format!("histograms.hlog: {name} window {w} is not in timeline.json"))?;
        (c.count, c.errors, c.rows, c.bytes) = (wc.count, wc.errors, wc.rows, wc.bytes);
        c.errors_by_kind = wc.errors_by_kind;
        Ok(c)
    }

    fn all_taken(&self) -> Result<(), String> {
        match self.0.keys().next() {
            None => Ok(()),
            Some((name, w)) => Err(format!(
                "timeline.json: {name} window {w} is not in histograms.hlog"
            )),
        }
    }
}

/// Each operation's total counters: the sum of its windows' (checked, never overflowing).
fn totals(agg: &mut Aggregate, timeline: &Timeline) -> Result<(), String> {
    for (name, (windows, by_kind)) in &timeline.operations {
        let op = agg.operations.get_mut(name).ok_or_else(|| {
            format!("timeline.json names {name:?}, which histograms.hlog does not hold")
        })?;
        let overflow = || format!("timeline.json: {name}'s counters overflow");
        for wc in windows {
            let t = &mut op.total;
            t.count = t.count.checked_add(wc.count).ok_or_else(overflow)?;
            t.errors = t.errors.checked_add(wc.errors).ok_or_else(overflow)?;
            t.rows = t.rows.checked_add(wc.rows).ok_or_else(overflow)?;
            t.bytes = t.bytes.checked_add(wc.bytes).ok_or_else(overflow)?;
        }
        op.total.errors_by_kind = by_kind.clone();
    }
    Ok(())
}

/// The V2 compressed magic cookie, and the uncompressed one inside it (each with the word size
/// bits HdrHistogram's writers set).
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9304 | 0x10;
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
/// An uncompressed V2 histogram's header: cookie, payload length, normalising offset, digits,
/// lowest, highest, integer-to-double ratio.
const V2_HEADER: usize = 40;

/// One interval's histogram, decoded only if it is of the shape fleetbench writes: at most as
/// large as fleetbench's histograms inflate to (HdrHistogram's decoder sizes its buffer from the
/// header's payload length, so a lying length would have it allocate gigabytes), with the bounds
/// of [`crate::aggregate::histogram`] (a histogram beyond them cannot be added to the run's).
fn decode(base64_text: &str) -> Result<hdrhistogram::Histogram<u64>, String> {
    use std::io::Read;
    let reference = crate::aggregate::histogram();
    // Each count is at most 9 bytes of LEB128.
    let limit = V2_HEADER + reference.distinct_values() * 9;
    if base64_text.len() > limit * 2 {
        return Err(format!(
            "{} bytes of base64, more than any histogram fleetbench writes",
            base64_text.len()
        ));
    }
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, base64_text)
        .map_err(|e| e.to_string())?;
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    if word(&bytes, 0) != Some(V2_DEFLATE_COOKIE) {
        return Err("not an HdrHistogram V2 compressed histogram".into());
    }
    let mut inner = Vec::new();
    flate2::read::ZlibDecoder::new(bytes.get(8..).unwrap_or_default())
        .take(limit as u64 + 1)
        .read_to_end(&mut inner)
        .map_err(|e| format!("its compressed payload: {e}"))?;
    if inner.len() > limit {
        return Err("it inflates beyond any histogram fleetbench writes".into());
    }
    let claimed = word(&inner, 4).map(|n| n as usize);
    if word(&inner, 0) != Some(V2_COOKIE) || claimed != Some(inner.len().saturating_sub(V2_HEADER))
    {
        return Err("its payload length does not match its payload".into());
    }
    let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &inner[..])
        .map_err(|e| e.to_string())?;
    if h.low() != reference.low() || h.high() != reference.high() || !(2..=3).contains(&h.sigfig())
    {
        return Err(format!(
            "bounds {}..{} µs at {} digits, not fleetbench's {}..{} at 2 or 3",
            h.low(),
            h.high(),
            h.sigfig(),
            reference.low(),
            reference.high()
        ));
    }
    Ok(h)
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
                    hist,
                    agg.operations[&tag].window(w).unwrap().latency,
                    "{tag} window {w}"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, 6);
        // Log and timeline rebuild the aggregate exactly: totals, windows, counters.
        let timeline = Timeline::of(&agg);
        let json = serde_json::to_string(&timeline).unwrap();
        let (back, started) = read(buf.as_slice(), &serde_json::from_str(&json).unwrap()).unwrap();
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
            assert_eq!(b.window_count(), (op.window_count().0, op.window_count().0));
            for (w, c) in op.windows() {
                let d = b.window(w).unwrap();
                assert_eq!(d.latency, c.latency);
                assert_eq!(d.service, c.service);
                assert_eq!(d.count, c.count);
            }
        }
    }

    #[test]
    fn the_streamed_timeline_is_the_whole_one_serialised() {
        let mut agg = Aggregate::new(1_000);
        for i in 0..5_000u64 {
            agg.moved_to(i * 300);
            agg.add(&Sample {
                operation: if i % 3 == 0 {
                    "auth.refresh"
                } else {
                    "rest.insert"
                },
                intended_us: i * 300,
                sent_us: i * 300 + 2,
                done_us: i * 300 + 900 + i % 17,
                outcome: if i % 29 == 0 {
                    Outcome::Error(format!("http_{}", 500 + i % 3))
                } else {
                    Outcome::Ok
                },
                rows: i % 4,
                bytes: 10 + i % 5,
            });
        }
        agg.late = 3;
        agg.dropped = 2;
        agg.abandoned = 1;
        let mut whole = Timeline::of(&agg);
        whole.load_unit = "agents".into();
        whole.load_points = vec![(0.0, 0.0), (1.5, 40.0)];
        whole.gauges = vec![(0.5, 10.0, 2.0), (1.0, 40.0, 7.0)];
        let mut expected = serde_json::to_vec(&whole).unwrap();
        expected.push(b'\n');
        let mut streamed = Vec::new();
        let load = LoadFields {
            load_unit: &whole.load_unit,
            load_points: &whole.load_points,
            gauges: &whole.gauges,
        };
        write_timeline(&mut streamed, &agg, load).unwrap();
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        assert_eq!(whole.operations["rest.insert"].0.len(), 1_500);
    }

    /// A log and timeline of one operation over `windows` windows.
    fn saved(windows: u64) -> (Vec<u8>, Timeline) {
        let mut agg = Aggregate::new(1_000_000);
        for i in 0..windows * 10 {
            agg.add(&Sample {
                operation: "op",
                intended_us: i * 100_000,
                sent_us: i * 100_000,
                done_us: i * 100_000 + 900 + i,
                outcome: Outcome::Ok,
                rows: 1,
                bytes: 1,
            });
        }
        let mut buf = Vec::new();
        write(&mut buf, &agg, SystemTime::UNIX_EPOCH).unwrap();
        (buf, Timeline::of(&agg))
    }

    /// The log's interval lines, with `edit` applied to the `n`-th one's encoded histogram.
    fn edit_histogram(log: &[u8], n: usize, edit: impl Fn(Vec<u8>) -> Vec<u8>) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let text = String::from_utf8(log.to_vec()).unwrap();
        let mut seen = 0;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with('#') || l.starts_with('"') || !l.contains(',') {
                    return l.to_string();
                }
                seen += 1;
                if seen != n {
                    return l.to_string();
                }
                let (head, enc) = l.rsplit_once(',').unwrap();
                format!("{head},{}", b64.encode(edit(b64.decode(enc).unwrap())))
            })
            .collect();
        (lines.join("\n") + "\n").into_bytes()
    }

    #[test]
    fn crafted_logs_are_refused_in_bounded_memory_and_never_panic() {
        let (log, timeline) = saved(3);
        assert!(read(log.as_slice(), &timeline).is_ok());
        // A payload length that lies (4 GiB), inside the compressed histogram.
        let lying = edit_histogram(&log, 1, |b| {
            let mut inner = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&b[8..]), &mut inner)
                .unwrap();
            inner[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut z, &inner).unwrap();
            let z = z.finish().unwrap();
            let mut out = b[..4].to_vec();
            out.extend((z.len() as u32).to_be_bytes());
            out.extend(z);
            out
        });
        let e = read(lying.as_slice(), &timeline).unwrap_err();
        assert!(e.contains("payload length"), "{e}");
        // A histogram beyond fleetbench's bounds (highest trackable 2^40).
        let wide = edit_histogram(&log, 1, |_| {
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 40, 2).unwrap();
            h.record(1 << 39).unwrap();
            let mut out = Vec::new();
            hdrhistogram::serialization::Serializer::serialize(
                &mut hdrhistogram::serialization::V2DeflateSerializer::new(),
                &h,
                &mut out,
            )
            .unwrap();
            out
        });
        let e = read(wide.as_slice(), &timeline).unwrap_err();
        assert!(e.contains("bounds"), "{e}");
        // A window 2^53 s after the start.
        let text = String::from_utf8(log.clone()).unwrap();
        let far = text.replacen("Tag=op,1.000,", "Tag=op,9007199254740992.000,", 1);
        assert_ne!(far, text);
        let e = read(far.as_bytes(), &timeline).unwrap_err();
        assert!(e.contains("beyond any run"), "{e}");
        // Garbage, and a truncated log: errors, not panics.
        assert!(read(&log[..log.len() / 2], &timeline).is_err());
        assert!(
            read(
                edit_histogram(&log, 2, |b| b[..b.len() / 2].to_vec()).as_slice(),
                &timeline
            )
            .is_err()
        );
        let mut zero = timeline.clone();
        zero.window_us = 0;
        assert!(read(log.as_slice(), &zero).is_err());
    }
}
