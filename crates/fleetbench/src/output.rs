//! The run directory (INTERFACE.md): `scenario.toml` as resolved, `summary.json`,
//! `histograms.hlog`, `junit.xml` (one test case per threshold) and `index.html`. The full report
//! is issue 6; this page is the plain table it will grow from. Nothing here holds a secret: the
//! target URL is redacted before it reaches the summary.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use fleetbench_metrics::{Aggregate, Summary};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn write(
    dir: &Path,
    resolved_toml: &str,
    summary: &Summary,
    agg: &Aggregate,
    started: SystemTime,
) -> anyhow::Result<()> {
    let file = |name: &str| dir.join(name);
    std::fs::write(file("scenario.toml"), resolved_toml).context("writing scenario.toml")?;
    std::fs::write(
        file("summary.json"),
        serde_json::to_string_pretty(summary)? + "\n",
    )
    .context("writing summary.json")?;
    let mut hlog = std::io::BufWriter::new(
        std::fs::File::create(file("histograms.hlog")).context("creating histograms.hlog")?,
    );
    fleetbench_metrics::hlog::write(&mut hlog, agg, started).context("writing histograms.hlog")?;
    std::io::Write::flush(&mut hlog)?;
    std::fs::write(file("junit.xml"), junit(summary)).context("writing junit.xml")?;
    std::fs::write(file("index.html"), html(summary)).context("writing index.html")?;
    Ok(())
}

fn junit(s: &Summary) -> String {
    let failures = s.thresholds.iter().filter(|t| !t.pass).count();
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{n}\" failures=\"{failures}\">\n  <testsuite name=\"fleetbench.{}\" tests=\"{n}\" failures=\"{failures}\" time=\"{:.3}\">\n",
        escape(&s.scenario),
        s.duration_s,
        n = s.thresholds.len()
    );
    for t in &s.thresholds {
        x.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\">",
            escape(&t.operation),
            escape(&t.expr)
        ));
        if !t.pass {
            let observed = t
                .observed
                .map_or("no samples".into(), |v| format!("{v:.3}"));
            x.push_str(&format!(
                "<failure message=\"observed {}\"/>",
                escape(&observed)
            ));
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

fn html(s: &Summary) -> String {
    let mut rows = String::new();
    for (name, op) in &s.operations {
        let l = &op.latency_ms;
        let v = &op.service_ms;
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}%</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>\n",
            escape(name), op.count, op.rate_per_s,
            if op.count > 0 { op.errors as f64 * 100.0 / op.count as f64 } else { 0.0 },
            op.rows, l.p50, l.p95, l.p99, l.p999, l.max, v.p50, v.p99
        ));
    }
    let mut thresholds = String::new();
    for t in &s.thresholds {
        thresholds.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            if t.pass { "pass" } else { "fail" },
            escape(&t.operation),
            escape(&t.expr),
            t.observed
                .map_or("no samples".into(), |v| format!("{v:.3}")),
            if t.pass { "pass" } else { "FAIL" }
        ));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>fleetbench: {name}</title>\n<style>\
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
.pass td:last-child{{color:#176f2c}}.fail td:last-child{{color:#b00020;font-weight:bold}}</style></head><body>\n\
<h1>{name}: {verdict}</h1>\n<p>run {run} · started {started} · {dur:.1} s · target {kind} {url}{interrupted}</p>\n\
<h2>Thresholds</h2><table><tr><th>operation</th><th>threshold</th><th>observed</th><th>verdict</th></tr>\n{thresholds}</table>\n\
<h2>Operations</h2><p>Latency in ms from the intended start; service time from the actual send.</p>\n\
<table><tr><th>operation</th><th>count</th><th>rate/s</th><th>errors</th><th>rows</th><th>p50</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th><th>service p50</th><th>service p99</th></tr>\n{rows}</table>\n\
</body></html>\n",
        name = escape(&s.scenario),
        verdict = s.verdict.to_uppercase(),
        run = escape(&s.run_id),
        started = escape(&s.started_at),
        dur = s.duration_s,
        kind = escape(&s.target.kind),
        url = escape(&s.target.url),
        interrupted = if s.interrupted { " · interrupted" } else { "" },
    )
}
