//! Fuzzing the scenario parser and threshold expressions (proptest): whatever the input, a value or
//! a located error, never a panic.
//!
//! - the committed corpus (`crates/scenario/fuzz/corpus/`: scenario files and `thresholds.txt`, one
//!   expression a line, including every input that once misbehaved) parses without a panic;
//! - arbitrary text, and committed scenarios mutated byte by byte and line by line, load or fail
//!   with a `file:line:column` error, also through `--set` overrides built from the mutations;
//! - threshold expressions from arbitrary text never panic, and generated valid ones parse to the
//!   metric, comparison and value they were written from.
//!
//! CI runs proptest's default 256 cases a property. The long run, documented in README:
//! `PROPTEST_CASES=100000 cargo test --release -p fleetbench-scenario --test fuzz`.

use std::path::PathBuf;

use fleetbench_scenario::threshold::Cmp;
use fleetbench_scenario::{Metric, Threshold, load_str};
use proptest::prelude::*;

fn corpus() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus"))
}

/// The committed scenario files of the corpus, as text.
fn scenarios() -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// A load that must not panic; an error must say where.
fn load(text: &str, overrides: &[String]) {
    if let Err(e) = load_str(text, "fuzz.toml", overrides) {
        for l in &e.0 {
            assert!(
                l.file.starts_with("fuzz.toml") || l.file == "--set",
                "an error without its place: {l}"
            );
            assert!(!l.message.is_empty());
        }
    }
}

#[test]
fn the_committed_corpus_parses_without_a_panic() {
    let texts = scenarios();
    assert!(texts.len() >= 7, "the corpus holds the shipped scenarios");
    for t in &texts {
        load(t, &[]);
    }
    let expressions = std::fs::read_to_string(corpus().join("thresholds.txt")).unwrap();
    let mut n = 0;
    for line in expressions.lines().filter(|l| !l.starts_with('#')) {
        let _ = Threshold::parse("rest.insert_metrics", line);
        n += 1;
    }
    assert!(n >= 20);
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        load(&text, &[]);
    }

    #[test]
    fn mutated_scenarios_never_panic(
        which in 0usize..64,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..8),
    ) {
        let texts = scenarios();
        let mut bytes = texts[which % texts.len()].clone().into_bytes();
        for (at, how, byte) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match how {
                0 if i < bytes.len() => { bytes.remove(i); }
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => bytes[i] = byte,
                // Splice a piece of TOML syntax in.
                _ => {
                    let pieces: [&[u8]; 8] = [b"[[", b"]]", b" = ", b"\"", b"\n[load]\n", b"{", b"1e999", b"-0"];
                    let p = pieces[usize::from(byte) % pieces.len()];
                    bytes.splice(i..i, p.iter().copied());
                }
            }
        }
        load(&String::from_utf8_lossy(&bytes), &[]);
    }

    #[test]
    fn line_shuffles_and_overrides_never_panic(
        which in 0usize..64,
        drop_line in any::<prop::sample::Index>(),
        key in "[a-z_.0-9]{0,30}",
        value in prop_oneof![
            Just("1".to_string()), Just("-1".to_string()), Just("\"x\"".to_string()), Just("{}".to_string()),
            Just("[]".to_string()), Just("1e400".to_string()), Just("\"0s\"".to_string()), any::<String>(),
        ],
    ) {
        let texts = scenarios();
        let text = &texts[which % texts.len()];
        let lines: Vec<&str> = text.lines().collect();
        let gone = drop_line.index(lines.len().max(1));
        let shorter: String = lines.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, l)| format!("{l}\n")).collect();
        load(&shorter, &[]);
        load(text, &[format!("{key}={value}")]);
        load(text, std::slice::from_ref(&key));
    }

    #[test]
    fn threshold_text_never_panics(expr in any::<String>(), op in any::<String>()) {
        let _ = Threshold::parse(&op, &expr);
    }

    #[test]
    fn valid_thresholds_parse_to_what_they_say(
        metric in 0usize..9,
        pct in 0.001f64..100.0,
        cmp in 0usize..6,
        value in 0.0f64..1e6,
        unit in 0usize..4,
        spaces in 0usize..3,
    ) {
        let metrics = ["p(_)", "avg", "min", "max", "med", "error_rate", "rate", "count", "loss"];
        let cmps = [("<", Cmp::Lt), ("<=", Cmp::Le), (">", Cmp::Gt), (">=", Cmp::Ge), ("==", Cmp::Eq), ("!=", Cmp::Ne)];
        let lhs = metrics[metric].replace('_', &format!("{pct}"));
        let lhs = if metric == 0 { lhs } else { metrics[metric].to_string() };
        let latency = metric <= 4;
        let (suffix, scale) = match (latency, unit) {
            (true, 0) => ("ms", 1.0),
            (true, 1) => ("s", 1000.0),
            (true, 2) => ("us", 0.001),
            (false, 0) if metric == 5 || metric == 8 => ("%", 0.01),
            _ => ("", 1.0),
        };
        let pad = " ".repeat(spaces);
        let expr = format!("{lhs}{pad}{}{pad}{value}{suffix}", cmps[cmp].0);
        let t = Threshold::parse("rest.insert_metrics", &expr).map_err(|e| TestCaseError::fail(format!("{expr}: {e}")))?;
        prop_assert_eq!(t.cmp, cmps[cmp].1);
        prop_assert!((t.value - value * scale).abs() <= 1e-9 * (1.0 + value * scale), "{} → {}", expr, t.value);
        match (metric, t.metric) {
            (0, Metric::Percentile(p)) => prop_assert!((p - pct).abs() < 1e-9),
            (0, m) => prop_assert!(false, "{} → {:?}", expr, m),
            (_, m) => prop_assert_eq!(format!("{m:?}").to_lowercase().replace('_', ""), metrics[metric].replace('_', "")),
        }
    }
}
