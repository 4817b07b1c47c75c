//! Fuzzing the shard reader (proptest): `merge` is given shard run directories from CI artifacts,
//! which anyone who can write one may have crafted. Whatever is done to a valid shard's
//! `summary.json`, `timeline.json` or `histograms.hlog` (bytes changed, cut short, lines dropped
//! or repeated), merging it with an intact shard ends in a merged run or an error that names a
//! file, never a panic. CI runs proptest's default 256 cases; the long run:
//! `PROPTEST_CASES=20000 cargo test --release -p fleetbench-report --test fuzz_shards`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fleetbench_metrics::{Aggregate, Outcome, Sample, Summary};
use fleetbench_report::LoadShape;
use fleetbench_report::rundir::{merge, write};
use proptest::prelude::*;

const FILES: [&str; 3] = ["summary.json", "timeline.json", "histograms.hlog"];

/// A small valid shard of a two-shard run, written to `dir`.
fn shard(dir: &Path, k: u32) {
    let mut agg = Aggregate::new(1_000_000);
    for i in 0..400u64 {
        let t = i * 10_000 + u64::from(k);
        agg.add(&Sample {
            operation: if i % 4 == 0 {
                "auth.refresh"
            } else {
                "rest.insert_metrics"
            },
            intended_us: t,
            sent_us: t + 5,
            done_us: t + 900 + (i * 37) % 4_000,
            outcome: if i % 50 == 0 {
                Outcome::Error("http_503".into())
            } else {
                Outcome::Ok
            },
            rows: 10,
            bytes: 480,
        });
    }
    let mut summary = Summary::new(&agg, common::facts("fuzz-run", "fuzz", 4.0), &[]);
    summary.shard = Some(fleetbench_metrics::summary::Shard { index: k, count: 2 });
    let load = LoadShape {
        unit: "active agents".into(),
        points: vec![(0.0, 0.0), (4.0, 10.0)],
        gauges: vec![(1.0, 10.0, 1.0)],
    };
    std::fs::create_dir_all(dir).unwrap();
    let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    write(
        dir,
        "name = \"fuzz\"\n",
        &summary,
        &agg,
        &load,
        None,
        started,
    )
    .unwrap();
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Cut(usize),
    DropLine(usize),
    RepeatLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        any::<usize>().prop_map(Edit::Cut),
        any::<usize>().prop_map(Edit::DropLine),
        any::<usize>().prop_map(Edit::RepeatLine),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    if bytes.is_empty() {
        return;
    }
    let lines =
        |b: &Vec<u8>| -> Vec<Vec<u8>> { b.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect() };
    match *e {
        Edit::Set(i, b) => {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        Edit::Cut(i) => bytes.truncate(i % bytes.len()),
        Edit::DropLine(i) | Edit::RepeatLine(i) => {
            let mut all = lines(bytes);
            let at = i % all.len();
            if matches!(e, Edit::DropLine(_)) {
                all.remove(at);
            } else {
                all.insert(at, all[at].clone());
            }
            *bytes = all.join(&b'\n');
        }
    }
}

fn template() -> &'static (tempfile::TempDir, [PathBuf; 2]) {
    static T: std::sync::OnceLock<(tempfile::TempDir, [PathBuf; 2])> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = [tmp.path().join("shard-0"), tmp.path().join("shard-1")];
        shard(&dirs[0], 0);
        shard(&dirs[1], 1);
        (tmp, dirs)
    })
}

proptest! {
    #[test]
    fn a_crafted_shard_merges_or_is_refused_never_panics(
        file in 0..FILES.len(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let (_, [good, other]) = template();
        let work = tempfile::tempdir().unwrap();
        let crafted = work.path().join("shard-0");
        std::fs::create_dir_all(&crafted).unwrap();
        for entry in std::fs::read_dir(good).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), crafted.join(entry.file_name())).unwrap();
        }
        let path = crafted.join(FILES[file]);
        let mut bytes = std::fs::read(&path).unwrap();
        for e in &edits {
            apply(&mut bytes, e);
        }
        std::fs::write(&path, &bytes).unwrap();
        let out = work.path().join("merged");
        let merged = std::panic::catch_unwind(|| merge(&[crafted.clone(), other.clone()], &out));
        prop_assert!(merged.is_ok(), "merge panicked on {} after {:?}", FILES[file], edits);
        if let Ok(Err(e)) = merged {
            prop_assert!(
                FILES.iter().any(|f| e.contains(f)) || e.contains("shard"),
                "an error that names no file: {e}"
            );
        }
    }
}

#[test]
fn the_intact_shards_merge() {
    let (tmp, dirs) = template();
    let merged = merge(dirs, &tmp.path().join("merged")).unwrap();
    assert_eq!(merged.operations["rest.insert_metrics"].count, 600);
}
