//! Rendering `index.html` for a one-hour run with ten operations at 1-second windows (issue 6:
//! under a second, and the page under 3 MB). Criterion times `fleetbench_report::html` on a
//! synthetic aggregate of that shape (every window of every operation holds 50 samples with a
//! spread of latencies, as a busy run's would); the page size is printed beside it.
//!
//! `cargo bench -p fleetbench-report --bench report_render`

use criterion::{Criterion, criterion_group, criterion_main};
use fleetbench_metrics::{Aggregate, Outcome, Sample, Summary};
use fleetbench_report::LoadShape;

/// The report tests' run facts.
#[path = "../crates/report/tests/common/mod.rs"]
mod common;

fn hour() -> (Summary, Aggregate, LoadShape) {
    let mut agg = Aggregate::new(1_000_000);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for w in 0..3_600u64 {
        // Ten of the operation names INTERFACE.md fixes.
        for op in fleetbench_scenario::OPERATIONS.iter().take(10) {
            for i in 0..50u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = w * 1_000_000 + i * 20_000;
                agg.add(&Sample {
                    operation: op,
                    intended_us: at,
                    sent_us: at + x % 500,
                    done_us: at + x % 500 + 1_000 + x % 40_000,
                    outcome: if x.is_multiple_of(200) {
                        Outcome::Error("http_503".into())
                    } else {
                        Outcome::Ok
                    },
                    rows: 10,
                    bytes: 500,
                });
            }
        }
    }
    let facts = common::facts("bench", "one hour", 3_600.0);
    let summary = Summary::new(&agg, facts, &[]);
    let load = LoadShape {
        unit: "active agents".into(),
        points: vec![(0.0, 0.0), (60.0, 10_000.0), (3_600.0, 10_000.0)],
        gauges: (0..3_600)
            .map(|t| (f64::from(t), f64::from(10_000.min(170 * t)), 120.0))
            .collect(),
    };
    (summary, agg, load)
}

fn render(c: &mut Criterion) {
    let (summary, agg, load) = hour();
    let page = fleetbench_report::html(&summary, &agg, &load);
    println!(
        "index.html for one hour, ten operations, 1 s windows: {} bytes ({:.2} MB)",
        page.len(),
        page.len() as f64 / 1e6
    );
    c.bench_function("index.html, 1 h x 10 operations", |b| {
        b.iter(|| fleetbench_report::html(&summary, &agg, &load))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = render
}
criterion_main!(benches);
