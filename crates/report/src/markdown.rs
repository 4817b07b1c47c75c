//! The run's `summary.md`: the verdict, what fell short of the plan, a table per operation, the
//! thresholds and the probes, in GitHub-flavoured Markdown for a CI job summary or a pull request
//! comment. Written from the summary alone, so a merged run has one too.

use std::fmt::Write as _;

use fleetbench_metrics::Summary;

/// `s` with the characters that would break a Markdown table cell or open an HTML tag escaped,
/// control characters dropped (a summary is untrusted input: a CI artifact).
fn cell(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect::<String>()
        .replace('|', "\\|")
        .replace('\n', " ")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The Markdown summary of a run.
pub fn markdown(s: &Summary) -> String {
    let mut out = String::new();
    let verdict = if s.passed() { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "## fleetbench `{}`: {verdict}\n", cell(&s.scenario));
    let _ = writeln!(
        out,
        "Run `{}` against the {} target {}, started {}, {:.0} s{}.\n",
        s.run_id,
        s.target.kind,
        s.target.url,
        s.started_at,
        s.duration_s,
        if s.interrupted { ", interrupted" } else { "" }
    );
    if let Some(reason) = &s.aborted {
        let _ = writeln!(out, "Aborted: {}\n", cell(reason));
    }
    for failed in &s.shards_failed {
        let _ = writeln!(out, "- **Shard failed:** {}", cell(failed));
    }
    if !s.shards_failed.is_empty() {
        out.push('\n');
    }
    if let Some(d) = &s.delivery {
        for short in &d.shortfall {
            let _ = writeln!(out, "- **Short of the plan:** {}", cell(short));
        }
        if !d.shortfall.is_empty() {
            out.push('\n');
        }
    }
    operations(s, &mut out);
    thresholds(s, &mut out);
    probes(s, &mut out);
    out
}

fn operations(s: &Summary, out: &mut String) {
    if s.operations.is_empty() {
        return;
    }
    out.push_str("| operation | count | errors | rate/s | p50 ms | p95 ms | p99 ms | max ms |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (name, o) in &s.operations {
        let l = &o.latency_ms;
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            cell(name),
            o.count,
            o.errors,
            o.rate_per_s,
            l.p50,
            l.p95,
            l.p99,
            l.max
        );
    }
    out.push_str(
        "\nLatency from each request's intended start (coordinated omission included).\n\n",
    );
}

fn thresholds(s: &Summary, out: &mut String) {
    if s.thresholds.is_empty() {
        return;
    }
    out.push_str("| threshold | operation | expression | observed |\n| --- | --- | --- | ---: |\n");
    for t in &s.thresholds {
        let observed = t
            .observed
            .map_or_else(|| "no samples".to_string(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "| {} | `{}` | `{}` | {observed} |",
            if t.pass { "pass" } else { "**FAIL**" },
            cell(&t.operation),
            cell(&t.expr)
        );
    }
    out.push('\n');
}

fn probes(s: &Summary, out: &mut String) {
    if s.probes.is_empty() {
        return;
    }
    out.push_str("| probe | verdict | claim |\n| --- | --- | --- |\n");
    for (name, p) in &s.probes {
        let verdict = match p.verdict.as_str() {
            "fail" => "**FAIL**".to_string(),
            v => v.to_string(),
        };
        let _ = writeln!(out, "| `{name}` | {verdict} | {} |", cell(&p.claim));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cell_cannot_break_its_table() {
        assert_eq!(super::cell("a|b\nc"), "a\\|b c");
    }
}
