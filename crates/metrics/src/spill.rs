//! Closed windows on disk: what keeps a run's memory flat however long it lasts.
//!
//! Each operation of each aggregate appends its closed windows, packed, in window order to an
//! unnamed temporary file of its own (created in `TMPDIR`, unlinked from the start, so that nothing
//! is left behind whatever way the process ends). A [`Spill`] is a view of such a file's first
//! `len` bytes: cloning or merging an aggregate shares the file and copies the view, and only the
//! view's owner appends past it. Readers read at offsets (`pread`), never moving a shared cursor.
//!
//! The record format is private to one process and never leaves it (the run's files are the
//! interval log and the timeline); it is written by hand because it is six integers and three
//! byte strings, which a serialisation crate would only wrap.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::aggregate::Packed;

/// One operation's windows on disk: the file and how much of it this view covers.
#[derive(Debug, Clone)]
pub(crate) struct Spill {
    file: Arc<File>,
    len: u64,
    /// The highest window written, so that appends keep the file in window order.
    pub(crate) last: Option<u64>,
    pub(crate) windows: usize,
}

impl Spill {
    /// A new, empty file in the temporary directory.
    pub(crate) fn create() -> std::io::Result<Spill> {
        Ok(Spill {
            file: Arc::new(tempfile::tempfile()?),
            len: 0,
            last: None,
            windows: 0,
        })
    }

    /// Whether window `w` can be appended (it comes after every window written).
    pub(crate) fn takes(&self, w: u64) -> bool {
        self.last.is_none_or(|last| w > last)
    }

    /// Appends window `w` (which [`Spill::takes`]); on an error nothing is counted as written.
    pub(crate) fn append(&mut self, w: u64, p: &Packed) -> std::io::Result<()> {
        debug_assert!(self.takes(w), "spilled windows go in order");
        let record = encode(w, p);
        self.file.write_all_at(&record, self.len)?;
        self.len += record.len() as u64;
        self.last = Some(w);
        self.windows += 1;
        Ok(())
    }

    /// The windows of this view, in order, from window `first` on.
    pub(crate) fn read_from(&self, first: u64) -> impl Iterator<Item = (u64, Packed)> + use<> {
        let mut reader = BufReader::with_capacity(
            64 * 1024,
            At {
                file: self.file.clone(),
                at: 0,
                end: self.len,
            },
        );
        std::iter::from_fn(move || {
            if reader.fill_buf().ok()?.is_empty() {
                return None;
            }
            // A file this process wrote and never shares: a read error is the disk failing under
            // the run, not input to handle.
            Some(decode(&mut reader).expect("a spill file this process wrote reads back"))
        })
        .filter(move |(w, _)| *w >= first)
    }
}

/// A reader of a shared file from an offset, up to an end.
struct At {
    file: Arc<File>,
    at: u64,
    end: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = (self.end - self.at).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

fn encode(w: u64, p: &Packed) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + p.latency.len() + p.service.len());
    for n in [w, p.count, p.errors, p.rows, p.bytes] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    for bytes in [&p.latency, &p.service] {
        put_bytes(&mut out, bytes);
    }
    out.extend_from_slice(&(p.errors_by_kind.len() as u64).to_le_bytes());
    for (kind, n) in &p.errors_by_kind {
        put_bytes(&mut out, kind.as_bytes());
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn decode(r: &mut impl Read) -> std::io::Result<(u64, Packed)> {
    let mut n = [0u64; 5];
    for slot in &mut n {
        *slot = u64_of(r)?;
    }
    let latency = bytes_of(r)?;
    let service = bytes_of(r)?;
    let mut errors_by_kind = BTreeMap::new();
    for _ in 0..u64_of(r)? {
        let kind = String::from_utf8(bytes_of(r)?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        errors_by_kind.insert(kind, u64_of(r)?);
    }
    let [w, count, errors, rows, bytes] = n;
    Ok((
        w,
        Packed {
            latency,
            service,
            count,
            errors,
            rows,
            bytes,
            errors_by_kind,
        },
    ))
}

fn u64_of(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn bytes_of(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0; u64_of(r)? as usize];
    r.read_exact(&mut out)?;
    Ok(out)
}
