//! What a run says on the terminal at its end, and how much it says: the per-operation table
//! (count, rate over the load phase, errors, p50/p95/p99/max with units), each threshold with its
//! observed value in its unit, and the result on stdout: the report's path, or with `--json` the
//! summary itself. `--quiet` keeps errors and the result only. Colour (pass green, FAIL red) only on
//! a terminal and never with `NO_COLOR` set (`console` decides, as for the progress line).

use std::path::Path;
use std::sync::OnceLock;

use console::style;
use fleetbench_metrics::Summary;
use fleetbench_scenario::threshold::show_ms;

/// The global output flags, set once from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub quiet: bool,
    pub json: bool,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

pub fn set(output: Output) {
    let _ = OUTPUT.set(output);
}

pub fn output() -> Output {
    OUTPUT.get().copied().unwrap_or_default()
}

/// A line of the run's account on stderr, unless `--quiet`.
pub fn say(line: &str) {
    if !output().quiet {
        eprintln!("{line}");
    }
}

/// The result on stdout: `summary.json` of `run_dir` with `--json`, else its report's path.
pub fn result(run_dir: &Path) -> anyhow::Result<()> {
    if output().json {
        let text = std::fs::read_to_string(run_dir.join("summary.json"))?;
        println!("{}", text.trim_end());
    } else {
        println!("{}", run_dir.join("index.html").display());
    }
    Ok(())
}

/// `pass` in green or `FAIL` in red where colour is wanted.
pub fn verdict_word(pass: bool) -> String {
    if pass {
        style("pass").green().to_string()
    } else {
        style("FAIL").red().bold().to_string()
    }
}

/// The per-operation table: one row per operation, latencies from the intended start.
pub fn operations_table(summary: &Summary) -> Vec<String> {
    let width = summary
        .operations
        .keys()
        .map(|k| k.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let mut lines = vec![format!(
        "  {:<width$} {:>9} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "operation", "count", "rate", "errors", "p50", "p95", "p99", "max"
    )];
    for (name, op) in &summary.operations {
        let l = &op.latency_ms;
        lines.push(format!(
            "  {name:<width$} {:>9} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
            op.count,
            format!("{:.1}/s", op.rate_per_s),
            op.errors,
            show_ms(l.p50),
            show_ms(l.p95),
            show_ms(l.p99),
            show_ms(l.max),
        ));
    }
    lines
}

/// Each threshold: verdict, operation, expression, and what it observed in its unit.
pub fn threshold_lines(summary: &Summary) -> Vec<String> {
    summary
        .thresholds
        .iter()
        .map(|t| {
            format!(
                "  {} {:<24} {:<22} observed {}",
                verdict_word(t.pass),
                t.operation,
                t.expr,
                t.observed_text()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_operation_with_units() {
        let text = r#"{"schema_version":1,"run_id":"r","scenario":"s","started_at":"2026-11-26T07:00:00+00:00",
            "duration_s":10,"target":{"kind":"local","url":"http://127.0.0.1:1"},"verdict":"pass",
            "thresholds":[{"operation":"rest.insert_metrics","expr":"p(99) < 250ms","observed":7.639,"pass":true}],
            "operations":{"rest.insert_metrics":{"count":1200,"errors":3,"rate_per_s":120.0,"rows":1,"bytes":1,
              "latency_ms":{"p50":0.85,"p90":5,"p95":6.1,"p99":7.639,"p999":9,"max":1234.5,"mean":2},
              "service_ms":{"p50":1,"p90":1,"p95":1,"p99":1,"p999":1,"max":1,"mean":1},"errors_by_kind":{}}},
            "late":0,"dropped":0,"abandoned":0,"interrupted":false,"aborted":null,"environment":{"fleetbench_version":"0","git_commit":"x","os":"linux","kernel":"6","cpus":2,"memory_bytes":1},"probes":{}}"#;
        let s: Summary = serde_json::from_str(text).unwrap();
        let table = operations_table(&s);
        assert_eq!(table.len(), 2);
        for cell in ["1200", "120.0/s", "850 µs", "6.10 ms", "7.64 ms", "1.23 s"] {
            assert!(table[1].contains(cell), "{cell} in {}", table[1]);
        }
        assert!(threshold_lines(&s)[0].ends_with("observed 7.64 ms"));
    }
}
