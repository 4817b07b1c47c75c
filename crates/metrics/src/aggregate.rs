//! Per-operation aggregation: two HdrHistograms (intended-start latency and service time, in
//! microseconds, 3 significant digits, up to one hour), counters, errors by kind, and the same per
//! time window (by intended start) for the over-time charts and the interval log.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::sample::{Outcome, Sample};
use crate::spill::Spill;

/// Highest trackable latency: one hour in microseconds (larger values are clamped and counted).
pub const MAX_US: u64 = 3_600_000_000;

/// The whole-run histograms: 3 significant digits (0.1 %).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Per-window histograms: 2 significant digits (1 %), a tenth of the memory; one exists per
/// operation and window, so a long run holds thousands.
pub fn window_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("valid histogram bounds")
}

#[derive(Debug, Clone)]
pub struct Counts {
    pub latency: Histogram<u64>,
    pub service: Histogram<u64>,
    pub count: u64,
    pub errors: u64,
    pub rows: u64,
    pub bytes: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts::with(histogram)
    }
}

impl Counts {
    pub fn with(make: fn() -> Histogram<u64>) -> Counts {
        Counts {
            latency: make(),
            service: make(),
            count: 0,
            errors: 0,
            rows: 0,
            bytes: 0,
            errors_by_kind: BTreeMap::new(),
        }
    }
}

impl Counts {
    pub fn add(&mut self, s: &Sample) {
        self.latency
            .saturating_record(s.latency_us().clamp(1, MAX_US));
        self.service
            .saturating_record(s.service_us().clamp(1, MAX_US));
        self.count += 1;
        self.rows += s.rows;
        self.bytes += s.bytes;
        if let Outcome::Error(kind) = &s.outcome {
            self.errors += 1;
            *self.errors_by_kind.entry(kind.clone()).or_default() += 1;
        }
    }

    /// Adds `o` in (the histograms must have the same bounds).
    pub fn merge(&mut self, o: &Counts) {
        self.latency.add(&o.latency).expect("same histogram bounds");
        self.service.add(&o.service).expect("same histogram bounds");
        self.count += o.count;
        self.errors += o.errors;
        self.rows += o.rows;
        self.bytes += o.bytes;
        for (k, v) in &o.errors_by_kind {
            *self.errors_by_kind.entry(k.clone()).or_default() += v;
        }
    }
}

#[derive(Debug, Default)]
pub struct Operation {
    pub total: Counts,
    /// Window index (intended start / window) → that window's counts, for the windows still
    /// filling; read every window through [`Operation::windows`].
    open: BTreeMap<u64, Counts>,
    /// Closed windows kept in memory, packed: those a late sample reopened after they were
    /// spilled, those merged in, and all of them when no temporary file could be written.
    packed: BTreeMap<u64, Packed>,
    /// This operation's own file of closed windows ([`Aggregate::pack_before`]), appended to.
    spill: Option<Spill>,
    /// The files of the operations merged into this one (or cloned from), read only.
    merged: Vec<Spill>,
    /// Why windows stay in memory: the first error creating or writing the file.
    spill_error: Option<String>,
}

impl Clone for Operation {
    /// The clone reads the files it shares and never appends to them (its own file is a new one).
    fn clone(&self) -> Operation {
        Operation {
            total: self.total.clone(),
            open: self.open.clone(),
            packed: self.packed.clone(),
            spill: None,
            merged: self.spills().cloned().collect(),
            spill_error: self.spill_error.clone(),
        }
    }
}

/// One source of windows in order: memory, or a file.
type Windows<'a> = std::iter::Peekable<Box<dyn Iterator<Item = (u64, Cow<'a, Counts>)> + 'a>>;

impl Operation {
    /// Every window in order, open, packed or on disk, one window added up from its sources at a
    /// time: reading a run of any length holds one window's histograms per source.
    pub fn windows(&self) -> impl Iterator<Item = (u64, Cow<'_, Counts>)> + '_ {
        self.windows_from(0)
    }

    /// [`Operation::windows`] from window index `first` on.
    pub fn windows_from(&self, first: u64) -> impl Iterator<Item = (u64, Cow<'_, Counts>)> + '_ {
        let memory: Box<dyn Iterator<Item = _>> = Box::new(self.in_memory_from(first));
        let mut sources: Vec<Windows<'_>> = std::iter::once(memory.peekable())
            .chain(self.spills().map(|s| {
                let it: Box<dyn Iterator<Item = _>> =
                    Box::new(s.read_from(first).map(|(w, p)| (w, Cow::Owned(p.unpack()))));
                it.peekable()
            }))
            .collect();
        std::iter::from_fn(move || {
            let w = sources
                .iter_mut()
                .filter_map(|s| s.peek().map(|(w, _)| *w))
                .min()?;
            let mut sum: Option<Cow<'_, Counts>> = None;
            for source in &mut sources {
                if let Some((_, c)) = source.next_if(|(x, _)| *x == w) {
                    sum = Some(match sum {
                        None => c,
                        Some(mut acc) => {
                            acc.to_mut().merge(&c);
                            acc
                        }
                    });
                }
            }
            Some((w, sum?))
        })
    }

    /// The windows held in memory, open or packed, in order.
    fn in_memory_from(&self, first: u64) -> impl Iterator<Item = (u64, Cow<'_, Counts>)> + '_ {
        let mut open = self.open.range(first..).peekable();
        let mut packed = self.packed.range(first..).peekable();
        std::iter::from_fn(move || {
            let take_open = match (open.peek(), packed.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((a, _)), Some((b, _))) => a <= b,
            };
            Some(if take_open {
                let (w, c) = open.next()?;
                (*w, Cow::Borrowed(c))
            } else {
                let (w, p) = packed.next()?;
                (*w, Cow::Owned(p.unpack()))
            })
        })
    }

    /// Every file this operation's windows are in.
    fn spills(&self) -> impl Iterator<Item = &Spill> + '_ {
        self.spill.iter().chain(&self.merged)
    }

    /// The indices of every window, in order (nothing unpacked).
    pub fn window_indices(&self) -> impl Iterator<Item = u64> + '_ {
        let mut all: Vec<u64> = self
            .open
            .keys()
            .chain(self.packed.keys())
            .copied()
            .chain(self.spills().flat_map(|s| s.read_from(0).map(|(w, _)| w)))
            .collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }

    /// The last window with anything in it (nothing read but each file's last index).
    pub fn last_window(&self) -> Option<u64> {
        let open = self.open.keys().next_back();
        let packed = self.packed.keys().next_back();
        let spilled = self.spills().filter_map(|s| s.last.as_ref());
        open.into_iter().chain(packed).chain(spilled).max().copied()
    }

    /// Window `w`'s counts, if it has any.
    pub fn window(&self, w: u64) -> Option<Cow<'_, Counts>> {
        self.windows_from(w)
            .next()
            .filter(|(x, _)| *x == w)
            .map(|(_, c)| c)
    }

    /// How many windows it holds, and how many of those are closed (packed or on disk).
    pub fn window_count(&self) -> (usize, usize) {
        let all = self.window_indices().count();
        (all, all - self.open.len())
    }

    /// Why closed windows are held in memory rather than on disk, if they are.
    pub fn spill_error(&self) -> Option<&str> {
        self.spill_error.as_deref()
    }

    /// Puts closed window `w` away: appended to this operation's file when it comes after every
    /// window there (a late sample's window, reopened after it went to disk, does not), otherwise
    /// kept packed in memory. A file that cannot be created or written keeps the windows in memory
    /// from then on, and says why in [`Operation::spill_error`].
    fn close(&mut self, w: u64, p: Packed) {
        if self.spill_error.is_none() {
            if self.spill.is_none() {
                match Spill::create() {
                    Ok(s) => self.spill = Some(s),
                    Err(e) => self.spill_error = Some(format!("no temporary file: {e}")),
                }
            }
            if let Some(spill) = self.spill.as_mut().filter(|s| s.takes(w)) {
                match spill.append(w, &p) {
                    Ok(()) => return,
                    Err(e) => self.spill_error = Some(format!("temporary file: {e}")),
                }
            }
        }
        self.packed.insert(w, p);
    }

    /// Adds `c` into window `w`: into the open window, or into the packed one (unpacked, added,
    /// packed again), or as a new packed window.
    fn merge_window(&mut self, w: u64, c: &Counts) {
        if let Some(open) = self.open.get_mut(&w) {
            open.merge(c);
            return;
        }
        let mut mine = self
            .packed
            .remove(&w)
            .map_or_else(|| Counts::with(window_histogram), |p| p.unpack());
        mine.merge(c);
        self.packed.insert(w, Packed::pack(mine));
    }

    /// Sets window `w` (closed) from its histograms and counters (a saved run read back, in
    /// window order).
    pub(crate) fn put_window(&mut self, w: u64, c: Counts) {
        self.open.remove(&w);
        self.close(w, Packed::pack(c));
    }
}

/// A closed window with its histograms serialised (HdrHistogram V2 + DEFLATE): some hundred bytes
/// where a live 2-digit histogram's counts take ~27 KiB. A run keeps a window per second per
/// operation and worker: unpacked, a 4-hour run would hold gigabytes of them.
#[derive(Debug, Clone)]
pub struct Packed {
    pub(crate) latency: Vec<u8>,
    pub(crate) service: Vec<u8>,
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) errors_by_kind: BTreeMap<String, u64>,
}

impl Packed {
    pub(crate) fn pack(c: Counts) -> Packed {
        let bytes = |h: &Histogram<u64>| {
            let mut out = Vec::new();
            hdrhistogram::serialization::Serializer::serialize(
                &mut hdrhistogram::serialization::V2DeflateSerializer::new(),
                h,
                &mut out,
            )
            .expect("a histogram serialises into memory");
            out
        };
        Packed {
            latency: bytes(&c.latency),
            service: bytes(&c.service),
            count: c.count,
            errors: c.errors,
            rows: c.rows,
            bytes: c.bytes,
            errors_by_kind: c.errors_by_kind,
        }
    }

    pub(crate) fn unpack(&self) -> Counts {
        let histogram = |b: &[u8]| -> Histogram<u64> {
            hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut &b[..])
                .expect("a histogram this process packed")
        };
        Counts {
            latency: histogram(&self.latency),
            service: histogram(&self.service),
            count: self.count,
            errors: self.errors,
            rows: self.rows,
            bytes: self.bytes,
            errors_by_kind: self.errors_by_kind.clone(),
        }
    }
}

/// One worker's (or one run's) measurements.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub window_us: u64,
    pub operations: BTreeMap<String, Operation>,
    /// Work the schedule asked for that started late (more than one window behind), that never
    /// started (an arrival that found no idle agent), and that was still in flight when the grace
    /// period ended.
    pub late: u64,
    pub dropped: u64,
    pub abandoned: u64,
    /// Windows before this index are closed ([`Aggregate::moved_to`]).
    closed_to: u64,
}

impl Aggregate {
    pub fn new(window_us: u64) -> Aggregate {
        Aggregate {
            window_us: window_us.max(1),
            operations: BTreeMap::new(),
            late: 0,
            dropped: 0,
            abandoned: 0,
            closed_to: 0,
        }
    }

    pub fn add(&mut self, s: &Sample) {
        // The operation's name is allocated once, not per sample.
        if !self.operations.contains_key(s.operation) {
            self.operations
                .insert(s.operation.to_string(), Operation::default());
        }
        let op = self
            .operations
            .get_mut(s.operation)
            .expect("inserted above");
        op.total.add(s);
        let w = s.intended_us / self.window_us;
        // Packed windows are looked at only when a window is not live: a late sample of a packed
        // one (a retry timed from before an outage) reopens it.
        op.open
            .entry(w)
            .or_insert_with(|| {
                op.packed
                    .remove(&w)
                    .map_or_else(|| Counts::with(window_histogram), |p| p.unpack())
            })
            .add(s);
    }

    /// Closes every window before window index `window` (those still filling stay as they are):
    /// packed and, in order, written to disk ([`Operation::close`]).
    pub fn pack_before(&mut self, window: u64) {
        for op in self.operations.values_mut() {
            let open = op.open.split_off(&window);
            let closed = std::mem::replace(&mut op.open, open);
            for (w, c) in closed {
                op.close(w, Packed::pack(c));
            }
        }
    }

    /// Time (a clock, or samples in order) has reached `t_us`: every window before the previous
    /// one is closed ([`Aggregate::pack_before`]), once per window passed, so that a run of any
    /// length holds a window or two open. A late sample reopens its window.
    pub fn moved_to(&mut self, t_us: u64) {
        let window = t_us / self.window_us;
        if window >= self.closed_to + 2 {
            self.closed_to = window - 1;
            self.pack_before(self.closed_to);
        }
    }

    /// Adds samples that come in time order (a collector's timings at the end of a run), closing
    /// each window once the samples have moved past it; everything is closed at the end.
    pub fn add_in_order<'a>(&mut self, samples: impl IntoIterator<Item = &'a Sample>) {
        for s in samples {
            self.moved_to(s.intended_us);
            self.add(s);
        }
        self.pack_all();
    }

    /// Packs every window: what a finished run keeps.
    pub fn pack_all(&mut self) {
        self.pack_before(u64::MAX);
    }

    /// Adds `other` in: the result is what one aggregate fed both sample streams would hold. The
    /// windows stay packed: each of `other`'s is added into its twin one at a time, so merging
    /// never holds more than one window's histograms unpacked beside the packed ones.
    pub fn merge(&mut self, other: &Aggregate) {
        assert_eq!(
            self.window_us, other.window_us,
            "aggregates of different windows"
        );
        for (name, op) in &other.operations {
            let mine = self.operations.entry(name.clone()).or_default();
            mine.total.merge(&op.total);
            for (w, p) in &op.packed {
                if mine.open.contains_key(w) || mine.packed.contains_key(w) {
                    mine.merge_window(*w, &p.unpack());
                } else {
                    mine.packed.insert(*w, p.clone());
                }
            }
            for (w, c) in &op.open {
                mine.merge_window(*w, c);
            }
            mine.merged.extend(op.spills().cloned());
            if mine.spill_error.is_none() {
                mine.spill_error.clone_from(&op.spill_error);
            }
        }
        self.late += other.late;
        self.dropped += other.dropped;
        self.abandoned += other.abandoned;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(op: &'static str, intended: u64, sent: u64, done: u64, err: bool) -> Sample {
        Sample {
            operation: op,
            intended_us: intended,
            sent_us: sent,
            done_us: done,
            outcome: if err {
                Outcome::Error("http_503".into())
            } else {
                Outcome::Ok
            },
            rows: 10,
            bytes: 100,
        }
    }

    #[test]
    fn merging_workers_equals_one_aggregate_of_all_samples() {
        let samples: Vec<Sample> = (0..10_000u64)
            .map(|i| {
                sample(
                    if i % 3 == 0 { "a" } else { "b" },
                    i * 997 % 5_000_000,
                    i * 997 % 5_000_000 + (i % 7) * 100,
                    i * 997 % 5_000_000 + 1_000 + (i * i) % 250_000,
                    i % 50 == 0,
                )
            })
            .collect();
        let mut one = Aggregate::new(1_000_000);
        samples.iter().for_each(|s| one.add(s));
        let mut parts: Vec<Aggregate> = (0..4).map(|_| Aggregate::new(1_000_000)).collect();
        for (i, s) in samples.iter().enumerate() {
            parts[i % 4].add(s);
        }
        let mut merged = Aggregate::new(1_000_000);
        parts.iter().for_each(|p| merged.merge(p));
        for (name, op) in &one.operations {
            let m = &merged.operations[name];
            assert_eq!(op.total.latency, m.total.latency);
            assert_eq!(op.total.service, m.total.service);
            assert_eq!(
                (op.total.count, op.total.errors, op.total.rows),
                (m.total.count, m.total.errors, m.total.rows)
            );
            assert_eq!(op.window_count().0, m.window_count().0);
            for (w, c) in op.windows() {
                assert_eq!(c.latency, m.window(w).unwrap().latency);
            }
            // Merged windows stay packed: a merged run holds no window unpacked.
            assert_eq!(m.window_count().1, m.window_count().0);
        }
        // Against the sorted truth: the p99 of the latencies is within HdrHistogram's 0.1 %.
        let mut lat: Vec<u64> = samples
            .iter()
            .filter(|s| s.operation == "b")
            .map(|s| s.latency_us())
            .collect();
        lat.sort();
        let truth = lat[(lat.len() as f64 * 0.99).ceil() as usize - 1];
        let got = merged.operations["b"].total.latency.value_at_quantile(0.99);
        assert!(
            (got as f64 - truth as f64).abs() <= truth as f64 * 0.001 + 1.0,
            "{got} vs {truth}"
        );
        assert_eq!(
            merged.operations["a"].total.errors_by_kind["http_503"],
            samples
                .iter()
                .filter(|s| s.operation == "a" && s.outcome != Outcome::Ok)
                .count() as u64
        );
    }

    #[test]
    fn closed_windows_leave_memory_for_disk_and_read_back_the_same() {
        let mut live = Aggregate::new(1_000);
        let mut spilled = Aggregate::new(1_000);
        for i in 0..20_000u64 {
            let s = sample(
                "op",
                i * 50,
                i * 50 + 3,
                i * 50 + 3 + (i % 89) * 11,
                i % 40 == 0,
            );
            live.add(&s);
            spilled.add(&s);
            if i % 100 == 0 {
                spilled.pack_before(s.intended_us / 1_000);
            }
        }
        spilled.pack_before(u64::MAX);
        let op = &spilled.operations["op"];
        assert!(op.spill_error().is_none(), "{:?}", op.spill_error());
        assert!(
            op.open.is_empty() && op.packed.is_empty(),
            "every window on disk"
        );
        assert_eq!(op.spill.as_ref().map(|s| s.windows), Some(1_000));
        // A clone appends to a file of its own: the original's windows are untouched by it.
        let mut clone = spilled.clone();
        clone.add(&sample("op", 2_000_000, 2_000_001, 2_000_002, false));
        clone.pack_all();
        assert_eq!(clone.operations["op"].last_window(), Some(2_000));
        assert_eq!(op.last_window(), Some(999));
        let expect: Vec<(u64, Counts)> = live.operations["op"]
            .windows()
            .map(|(w, c)| (w, c.into_owned()))
            .collect();
        let got: Vec<(u64, Counts)> = op.windows().map(|(w, c)| (w, c.into_owned())).collect();
        assert_eq!(expect.len(), got.len());
        for ((w, c), (v, d)) in expect.iter().zip(&got) {
            assert_eq!(
                (w, c.count, c.errors, c.rows),
                (v, d.count, d.errors, d.rows)
            );
            assert_eq!(
                (&c.latency, &c.service),
                (&d.latency, &d.service),
                "window {w}"
            );
            assert_eq!(c.errors_by_kind, d.errors_by_kind);
        }
    }

    #[test]
    fn packed_windows_come_back_whole_and_merge_as_live_ones() {
        let mut live = Aggregate::new(1_000_000);
        for i in 0..5_000u64 {
            let t = i * 2_000;
            live.add(&sample("op", t, t + 7, t + 7 + (i % 97) * 13, i % 50 == 0));
        }
        let mut packed = live.clone();
        packed.pack_before(8);
        assert_eq!(packed.operations["op"].window_count(), (10, 8));
        // A late sample for a packed window reopens it.
        live.add(&sample("op", 3_500_000, 9_000_000, 9_000_500, false));
        packed.add(&sample("op", 3_500_000, 9_000_000, 9_000_500, false));
        assert_eq!(packed.operations["op"].window_count(), (10, 7));
        // Merged into an empty aggregate (and into one holding the same windows), the packed one
        // equals the live one window for window.
        let mut a = Aggregate::new(1_000_000);
        a.merge(&packed);
        a.merge(&packed);
        let mut b = Aggregate::new(1_000_000);
        b.merge(&live);
        b.merge(&live);
        let (a, b) = (&a.operations["op"], &b.operations["op"]);
        assert_eq!(a.window_count(), (10, 10));
        let a_windows: Vec<(u64, Counts)> = a.windows().map(|(w, c)| (w, c.into_owned())).collect();
        let b_windows: Vec<(u64, Counts)> = b.windows().map(|(w, c)| (w, c.into_owned())).collect();
        assert_eq!(a_windows.len(), b_windows.len());
        for ((w, c), (v, d)) in b_windows.iter().zip(&a_windows) {
            assert_eq!(w, v, "windows in order");
            assert_eq!(
                (d.count, d.errors, d.rows, d.bytes),
                (c.count, c.errors, c.rows, c.bytes)
            );
            assert_eq!(d.count, 2 * live.operations["op"].window(*w).unwrap().count);
            assert_eq!(d.errors_by_kind, c.errors_by_kind);
            assert_eq!(d.latency, c.latency, "window {w}");
            assert_eq!(d.service, c.service, "window {w}");
        }
        // Open and packed windows read in order, from any window on.
        let from: Vec<u64> = packed.operations["op"]
            .windows_from(3)
            .map(|(w, _)| w)
            .collect();
        assert_eq!(from, (3..10).collect::<Vec<_>>());
        assert_eq!(
            packed.operations["op"].window(2).unwrap().latency,
            live.operations["op"].window(2).unwrap().latency
        );
    }
}
