//! The run's page (`index.html`), one function per section, in the order they appear: the verdict
//! and facts, thresholds, the comparison with a baseline, operations, load over time, latency by
//! operation, the server's metrics (when the target had a Metrics API), probes, and errors by kind.

use std::borrow::Cow;
use std::fmt::Write;

use fleetbench_metrics::aggregate::{Counts, Operation};
use fleetbench_metrics::server::ServerSeries;
use fleetbench_metrics::{Aggregate, Summary};
use hdrhistogram::Histogram;

use crate::page::{self, COLORS};
use crate::svg::{Chart, Series, XAxis, escape};
use crate::{LoadShape, compare};

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// (x = log10(1 / (1 - q)), latency ms) from 0 % to the last percentile the count resolves.
fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let top = (h.len() as f64).log10().max(1.0);
    let mut out = Vec::new();
    let mut k = 0;
    loop {
        let x = f64::from(k) / 20.0;
        if x > top {
            break;
        }
        let q = 1.0 - 10f64.powf(-x);
        out.push((x, ms(h.value_at_quantile(q))));
        k += 1;
    }
    out.push((top, ms(h.max())));
    out
}

/// The page.
pub fn html(s: &Summary, agg: &Aggregate, load: &LoadShape) -> String {
    html_with(s, agg, load, None, None)
}

/// The page, with the server's metrics through the run when the target had a Metrics API, and a
/// section comparing the run to a baseline.
pub fn html_with(
    s: &Summary,
    agg: &Aggregate,
    load: &LoadShape,
    server: Option<&ServerSeries>,
    baseline: Option<&compare::Comparison>,
) -> String {
    let mut o = String::with_capacity(64 * 1024);
    header(&mut o, s);
    thresholds(&mut o, s);
    if let Some(c) = baseline {
        comparison(&mut o, c);
    }
    operations(&mut o, s);
    let xs = time_range(agg, load, server);
    load_charts(&mut o, agg, load, xs);
    latency_charts(&mut o, agg);
    if let Some(series) = server {
        server_charts(&mut o, series, xs);
    }
    if !s.probes.is_empty() {
        probes(&mut o, s);
    }
    errors(&mut o, s);
    o.push_str("</body></html>\n");
    o
}

/// Planned against achieved (agents that ran, uploads dropped), with each shortfall that failed
/// the run first.
fn delivery(o: &mut String, s: &Summary) {
    let Some(d) = &s.delivery else {
        return;
    };
    for short in &d.shortfall {
        let _ = writeln!(
            o,
            "<p><strong>Less delivered than planned:</strong> {}.</p>",
            escape(short)
        );
    }
    let _ = writeln!(
        o,
        "<p class=\"facts\">agents: {} of {} planned ran (at least {:.0} % required) · uploads: {} of {} planned dropped (at most {:.1} % allowed)</p>",
        d.agents_ran,
        d.agents_planned,
        100.0 * d.agents_required,
        d.uploads_dropped,
        d.uploads_planned,
        100.0 * d.dropped_allowed
    );
}

/// The title with the verdict, the run's facts, and why the run is not what was asked (aborted,
/// delivered less than planned, fell behind its schedule).
fn header(o: &mut String, s: &Summary) {
    let verdict = if s.verdict == "pass" {
        "v-pass"
    } else {
        "v-fail"
    };
    o.push_str(&page::open(&format!(
        "fleetbench: {} {}",
        s.scenario,
        s.verdict.to_uppercase()
    )));
    let _ = write!(
        o,
        "<h1>{name} <span class=\"verdict {verdict}\">{v}</span></h1>\n\
<p class=\"facts\">run {run} · started {started} · {dur:.1} s · target {kind} {url}{interrupted}{env}</p>\n",
        name = escape(&s.scenario),
        v = escape(&s.verdict.to_uppercase()),
        run = escape(&s.run_id),
        started = escape(&s.started_at),
        dur = s.duration_s,
        kind = escape(&s.target.kind),
        url = escape(&s.target.url),
        env = if s.environment.fleetbench_version.is_empty() {
            String::new()
        } else {
            let e = &s.environment;
            format!(
                "<br>fleetbench {} ({}) on {}, kernel {}, {} CPUs, {:.1} GiB",
                escape(&e.fleetbench_version),
                escape(&e.git_commit),
                escape(&e.os),
                escape(&e.kernel),
                e.cpus,
                e.memory_bytes as f64 / (1u64 << 30) as f64
            )
        },
        interrupted = if s.interrupted {
            " · <strong>interrupted</strong>"
        } else {
            ""
        },
    );
    if let Some(reason) = &s.aborted {
        let _ = writeln!(
            o,
            "<p><strong>Aborted:</strong> {} crossed during the run (<code>abort_on_fail</code>).</p>",
            escape(reason)
        );
    }
    for failed in &s.shards_failed {
        let _ = writeln!(
            o,
            "<p><strong>Shard failed:</strong> {}</p>",
            escape(failed)
        );
    }
    delivery(o, s);
    if s.late + s.dropped > 0 {
        let _ = writeln!(
            o,
            "<p><strong>The generator fell behind its schedule:</strong> {} uploads started over a window late, {} arrivals dropped; the target saw less load than planned.</p>",
            s.late, s.dropped
        );
    }
}

fn thresholds(o: &mut String, s: &Summary) {
    o.push_str("<h2>Thresholds</h2>\n");
    if s.thresholds.is_empty() {
        o.push_str("<p>No thresholds: the run passes by finishing.</p>\n");
    } else {
        o.push_str("<div class=\"scroll\"><table><tr><th>operation</th><th>threshold</th><th>observed</th><th>verdict</th></tr>\n");
        for t in &s.thresholds {
            let _ = writeln!(
                o,
                "<tr class=\"{c}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&t.operation),
                escape(&t.expr),
                t.observed
                    .map_or("no samples".into(), |v| format!("{v:.3}")),
                if t.pass { "pass" } else { "FAIL" },
                c = if t.pass { "pass" } else { "fail" },
            );
        }
        o.push_str("</table></div>\n");
    }
}

fn comparison(o: &mut String, c: &compare::Comparison) {
    let regressed = c.regressions().count();
    let _ = write!(
        o,
        "<h2>Compared with baseline {}</h2>\n<p>{} regression{} (tolerance {:.1} % and {:.1} ms on latency percentiles from the intended start, {:.2} points on error rate, {:.1} % on rate).</p>\n",
        escape(&c.baseline_run_id),
        regressed,
        if regressed == 1 { "" } else { "s" },
        c.tolerance_pct,
        c.min_delta_ms,
        c.error_tolerance_points,
        c.tolerance_pct
    );
    o.push_str("<div class=\"scroll\"><table><tr><th>operation</th><th>metric</th><th>baseline</th><th>run</th><th>change</th><th>verdict</th></tr>\n");
    for ch in &c.changes {
        let _ = writeln!(
            o,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
            if ch.regressed { "fail" } else { "pass" },
            escape(&ch.operation),
            escape(&ch.metric),
            ch.baseline,
            ch.run,
            ch.relative
                .map_or("n/a".into(), |r| format!("{:+.1} %", r * 100.0)),
            if ch.regressed { "REGRESSED" } else { "ok" },
        );
    }
    o.push_str("</table></div>\n");
    if !c.server.is_empty() {
        o.push_str("<h3>The server, baseline and run</h3>\n<div class=\"scroll\"><table><tr><th>figure</th><th>unit</th><th>baseline</th><th>run</th><th>change</th></tr>\n");
        for ch in &c.server {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
                escape(&ch.figure),
                escape(&ch.unit),
                ch.baseline,
                ch.run,
                ch.relative
                    .map_or("n/a".into(), |r| format!("{:+.1} %", r * 100.0)),
            );
        }
        o.push_str("</table></div>\n");
    }
    for (what, ops) in [
        ("only in the baseline", &c.only_in_baseline),
        ("only in this run", &c.only_in_run),
    ] {
        if !ops.is_empty() {
            let names: Vec<String> = ops.iter().map(|n| escape(n)).collect();
            let _ = writeln!(o, "<p>Operations {what}: {}.</p>", names.join(", "));
        }
    }
}

fn operations(o: &mut String, s: &Summary) {
    o.push_str("<h2>Operations</h2>\n<p>Latency in ms from the <em>intended</em> start (when the work was due); service time from the actual send.</p>\n<div class=\"scroll\"><table><tr><th>operation</th><th>count</th><th>rate/s</th><th>error %</th><th>rows</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th><th>service p50</th><th>p90</th><th>p99</th><th>max</th></tr>\n");
    for (name, op) in &s.operations {
        let (l, v) = (&op.latency_ms, &op.service_ms);
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            escape(name),
            op.count,
            op.rate_per_s,
            if op.count > 0 {
                op.errors as f64 * 100.0 / op.count as f64
            } else {
                0.0
            },
            op.rows,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.p999,
            l.max,
            v.p50,
            v.p90,
            v.p99,
            v.max
        );
    }
    o.push_str("</table></div>\n");
}

/// Throughput and errors over time with the planned load, and a panel of agents and uploads in
/// flight on the same time axis.
/// The seconds every time chart spans, so that load and server panels line up: from the run's
/// start to its last window, planned point, gauge or scrape.
fn time_range(
    agg: &Aggregate,
    load: &LoadShape,
    server: Option<&ServerSeries>,
) -> Option<(f64, f64)> {
    let window_s = agg.window_us as f64 / 1e6;
    let windows = agg
        .operations
        .values()
        .filter_map(|op| op.last_window().map(|w| w as f64 * window_s));
    let planned = load.points.iter().map(|p| p.0);
    let gauges = load.gauges.iter().map(|g| g.0);
    let scrapes = server
        .into_iter()
        .flat_map(|s| s.scrapes.iter().map(|x| x.t));
    let end = windows
        .chain(planned)
        .chain(gauges)
        .chain(scrapes)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))?;
    Some((0.0, end.max(1.0)))
}

/// The Server section: one panel per quantity the Metrics API gave, on the load charts' time axis.
fn server_charts(o: &mut String, server: &ServerSeries, xs: Option<(f64, f64)>) {
    let panels = server.panels();
    o.push_str("<h2>Server</h2>\n");
    if server.scrapes.is_empty() {
        o.push_str("<p>The target has no Metrics API: its statements only.</p>\n");
    } else {
        let _ = writeln!(
            o,
            "<p>The target's Metrics API ({}), scraped every {:.0} s: {} scrapes{}.</p>",
            escape(&server.source),
            server.interval_s,
            server.scrapes.len(),
            if server.failed > 0 {
                format!(", {} failed", server.failed)
            } else {
                String::new()
            }
        );
    }
    o.push_str("<div class=\"ops\">\n");
    for p in panels {
        let mut series: Vec<Series> = p
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, (name, points))| Series {
                name,
                points,
                color: COLORS[i % COLORS.len()],
                dashed: false,
                right: false,
            })
            .collect();
        if let Some((name, points)) = p.limit {
            series.push(Series {
                name: format!("{name} (limit)"),
                points,
                color: "#b91c1c",
                dashed: true,
                right: false,
            });
        }
        o.push_str("<section>");
        o.push_str(
            &Chart {
                title: p.title,
                y_label: p.unit,
                x: XAxis::Seconds,
                log_y: false,
                x_range: xs,
                series,
            }
            .render(),
        );
        o.push_str("</section>\n");
    }
    o.push_str("</div>\n");
    statements(o, server);
}

/// The statements that took the most database time during the run.
fn statements(o: &mut String, server: &ServerSeries) {
    if server.statements.is_empty() {
        return;
    }
    o.push_str("<h3>Statements that took the most time during the run (pg_stat_statements)</h3>\n<div class=\"scroll\"><table><tr><th>statement</th><th>calls</th><th>total ms</th><th>mean ms</th><th>rows</th></tr>\n");
    for st in &server.statements {
        let _ = writeln!(
            o,
            "<tr><td class=\"l\"><code>{}</code></td><td>{}</td><td>{:.1}</td><td>{:.3}</td><td>{}</td></tr>",
            escape(&st.query),
            st.calls,
            st.total_ms,
            st.total_ms / st.calls.max(1) as f64,
            st.rows
        );
    }
    o.push_str("</table></div>\n");
}

fn load_charts(o: &mut String, agg: &Aggregate, load: &LoadShape, xs: Option<(f64, f64)>) {
    let window_s = agg.window_us as f64 / 1e6;
    let k = windows_per_point(agg);
    let point_s = window_s * k as f64;
    // Throughput and errors over time, and the load the scenario asked for.
    o.push_str("<h2>Load</h2>\n");
    if k > 1 {
        let _ = writeln!(
            o,
            "<p>Each point of the charts over time is {k} windows ({point_s:.3} s) added up.</p>"
        );
    }
    let mut rate = Vec::new();
    // Point (first window) → errors in it, over every operation.
    let mut errors: std::collections::BTreeMap<u64, u64> = Default::default();
    for (i, (name, op)) in agg.operations.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for (w, c) in points(op, k) {
            pts.push((w as f64 * window_s, c.count as f64 / point_s));
            *errors.entry(w).or_default() += c.errors;
        }
        rate.push(Series {
            name: name.clone(),
            points: pts,
            color: COLORS[i % COLORS.len()],
            dashed: false,
            right: false,
        });
    }
    rate.push(Series {
        name: "errors".into(),
        points: errors
            .into_iter()
            .map(|(w, n)| (w as f64 * window_s, n as f64 / point_s))
            .collect(),
        color: "#111111",
        dashed: true,
        right: false,
    });
    // Two panels on one time axis: what went through, and the load behind it (planned and measured).
    let mut agents = vec![
        Series {
            name: "active agents".into(),
            points: thinned(&load.gauges, k).map(|g| (g.0, g.1)).collect(),
            color: "#4b5563",
            dashed: false,
            right: false,
        },
        Series {
            name: "in flight (right)".into(),
            points: thinned(&load.gauges, k).map(|g| (g.0, g.2)).collect(),
            color: COLORS[5],
            dashed: false,
            right: true,
        },
    ];
    let planned = Series {
        name: format!("planned {}", load.unit),
        points: load.points.clone(),
        color: "#4b5563",
        dashed: true,
        right: false,
    };
    // The load shape and the active agents overlaid on throughput (agents on the right-hand axis),
    // and again in their own panel with the uploads in flight.
    let overlay = |s: &Series, right: bool, name: String| Series {
        name,
        points: s.points.clone(),
        color: s.color,
        dashed: s.dashed,
        right,
    };
    if load.unit == "uploads/s" {
        rate.push(overlay(&planned, false, planned.name.clone()));
    } else {
        rate.push(overlay(&planned, true, format!("{} (right)", planned.name)));
    }
    rate.push(overlay(&agents[0], true, "active agents (right)".into()));
    if load.unit != "uploads/s" {
        agents.insert(0, planned);
    }
    o.push_str(
        &Chart {
            title: "Throughput and errors (per second, by intended start)",
            y_label: "per second",
            x: XAxis::Seconds,
            log_y: false,
            x_range: xs,
            series: rate,
        }
        .render(),
    );
    o.push_str(
        &Chart {
            title: "Agents: planned, active and in flight",
            y_label: "agents",
            x: XAxis::Seconds,
            log_y: false,
            x_range: xs,
            series: agents,
        }
        .render(),
    );
}

/// The most points a chart over time draws: a chart is about a thousand pixels wide, and a
/// page's size (and the memory drawing it) must not grow with the run's length.
const MAX_POINTS: u64 = 1_500;

/// How many windows one point of a chart over time adds up: one, unless the run has more
/// windows than [`MAX_POINTS`]; the same for every operation, so that their points line up.
fn windows_per_point(agg: &Aggregate) -> u64 {
    let windows = agg
        .operations
        .values()
        .filter_map(|op| op.last_window())
        .max()
        .map_or(0, |w| w + 1);
    windows.div_ceil(MAX_POINTS).max(1)
}

/// An operation's windows `k` at a time, added up (histograms merged, so a point's percentiles
/// are its windows' together): (the first window of the point, its counts).
fn points(op: &Operation, k: u64) -> impl Iterator<Item = (u64, Cow<'_, Counts>)> + '_ {
    let mut windows = op.windows().peekable();
    std::iter::from_fn(move || {
        let (w, mut sum) = windows.next()?;
        let point = w / k;
        while let Some((_, c)) = windows.next_if(|(v, _)| v / k == point) {
            sum.to_mut().merge(&c);
        }
        Some((point * k, sum))
    })
}

/// Every `k`-th gauge reading (the gauges are read once a window).
fn thinned(gauges: &[(f64, f64, f64)], k: u64) -> impl Iterator<Item = &(f64, f64, f64)> + '_ {
    gauges.iter().step_by(k as usize)
}

/// Per operation: percentiles over time, and the whole percentile spectrum.
fn latency_charts(o: &mut String, agg: &Aggregate) {
    let window_s = agg.window_us as f64 / 1e6;
    let k = windows_per_point(agg);
    o.push_str("<h2>Latency by operation</h2>\n<div class=\"ops\">\n");
    for (name, op) in &agg.operations {
        let _ = writeln!(o, "<section><h3>{}</h3>", escape(name));
        // One pass over the windows (each unpacked once): p50, p90, p99 and service p99.
        let mut over_time: [Vec<(f64, f64)>; 4] = Default::default();
        for (w, c) in points(op, k).filter(|(_, c)| c.count > 0) {
            let x = w as f64 * window_s;
            for (points, (h, p)) in over_time.iter_mut().zip([
                (&c.latency, 0.5),
                (&c.latency, 0.9),
                (&c.latency, 0.99),
                (&c.service, 0.99),
            ]) {
                points.push((x, ms(h.value_at_quantile(p))));
            }
        }
        let [p50, p90, p99, service_p99] = over_time;
        o.push_str(
            &Chart {
                title: "Percentiles over time (ms)",
                y_label: "ms",
                x: XAxis::Seconds,
                log_y: false,
                x_range: None,
                series: vec![
                    Series {
                        name: "p50".into(),
                        points: p50,
                        color: COLORS[0],
                        dashed: false,
                        right: false,
                    },
                    Series {
                        name: "p90".into(),
                        points: p90,
                        color: COLORS[2],
                        dashed: false,
                        right: false,
                    },
                    Series {
                        name: "p99".into(),
                        points: p99,
                        color: COLORS[1],
                        dashed: false,
                        right: false,
                    },
                    Series {
                        name: "service p99".into(),
                        points: service_p99,
                        color: COLORS[3],
                        dashed: true,
                        right: false,
                    },
                ],
            }
            .render(),
        );
        o.push_str(
            &Chart {
                title: "Percentile spectrum (ms, log scale)",
                y_label: "ms",
                x: XAxis::Percentile,
                log_y: true,
                x_range: None,
                series: vec![
                    Series {
                        name: "intended start".into(),
                        points: spectrum(&op.total.latency),
                        color: COLORS[0],
                        dashed: false,
                        right: false,
                    },
                    Series {
                        name: "service".into(),
                        points: spectrum(&op.total.service),
                        color: COLORS[3],
                        dashed: true,
                        right: false,
                    },
                ],
            }
            .render(),
        );
        o.push_str("</section>\n");
    }
    o.push_str("</div>\n");
}

fn probes(o: &mut String, s: &Summary) {
    o.push_str("<h2>Probes</h2>\n");
    for (name, p) in &s.probes {
        let class = match p.verdict.as_str() {
            "pass" => "v-pass",
            "fail" => "v-fail",
            _ => "v-info",
        };
        let _ = writeln!(
            o,
            "<section class=\"probe\"><h3>{} <span class=\"verdict {class}\">{}</span></h3>",
            escape(if p.title.is_empty() { name } else { &p.title }),
            escape(&p.verdict.to_uppercase())
        );
        if !p.claim.is_empty() {
            let _ = writeln!(o, "<p class=\"claim\">Claim: “{}”</p>", escape(&p.claim));
        }
        if !p.figures.is_empty() {
            o.push_str("<div class=\"scroll\"><table><tr><th>figure</th><th>value</th><th>unit</th><th>published (hosted)</th></tr>\n");
            for f in &p.figures {
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
                    escape(&f.name),
                    f.value,
                    escape(&f.unit),
                    f.published.as_deref().map_or("—".into(), escape)
                );
            }
            o.push_str("</table></div>\n");
        }
        if !p.findings.is_empty() {
            o.push_str("<ul>");
            for finding in &p.findings {
                let _ = write!(o, "<li>{}</li>", escape(finding));
            }
            o.push_str("</ul>\n");
        }
        for t in &p.tables {
            let _ = write!(
                o,
                "<h4>{}</h4><div class=\"scroll\"><table><tr>",
                escape(&t.title)
            );
            for c in &t.columns {
                let _ = write!(o, "<th>{}</th>", escape(c));
            }
            o.push_str("</tr>\n");
            for row in &t.rows {
                o.push_str("<tr>");
                for cell in row {
                    // Words read from the left and may wrap; figures stay right-aligned.
                    let class = if cell.parse::<f64>().is_ok() {
                        ""
                    } else {
                        " class=\"l\""
                    };
                    let _ = write!(o, "<td{class}>{}</td>", escape(cell));
                }
                o.push_str("</tr>\n");
            }
            o.push_str("</table></div>\n");
        }
        for c in &p.charts {
            o.push_str(
                &Chart {
                    title: &c.title,
                    y_label: &c.y_label,
                    x: XAxis::Value(&c.x_label),
                    series: c
                        .series
                        .iter()
                        .enumerate()
                        .map(|(i, s)| Series {
                            name: s.name.clone(),
                            points: s.points.clone(),
                            color: COLORS[i % COLORS.len()],
                            dashed: false,
                            right: false,
                        })
                        .collect(),
                    log_y: false,
                    x_range: None,
                }
                .render(),
            );
        }
        o.push_str("</section>\n");
    }
}

fn errors(o: &mut String, s: &Summary) {
    o.push_str("<h2>Errors by kind</h2>\n");
    let kinds: Vec<(&String, &String, &u64)> = s
        .operations
        .iter()
        .flat_map(|(n, op)| op.errors_by_kind.iter().map(move |(k, c)| (n, k, c)))
        .collect();
    if kinds.is_empty() {
        o.push_str("<p>None.</p>\n");
    } else {
        o.push_str(
            "<div class=\"scroll\"><table><tr><th>operation</th><th>kind</th><th>count</th></tr>\n",
        );
        for (n, k, c) in kinds {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{c}</td></tr>",
                escape(n),
                escape(k)
            );
        }
        o.push_str("</table></div>\n");
    }
}

#[cfg(test)]
mod tests {
    use fleetbench_metrics::aggregate::window_histogram;
    use fleetbench_metrics::{Aggregate, Outcome, Sample};

    #[test]
    fn a_long_run_is_drawn_in_at_most_max_points_each_the_sum_of_its_windows() {
        let windows = 4_000u64;
        let mut agg = Aggregate::new(1_000);
        let latency = |i: u64| 100 + (i * 7_919) % 20_000;
        for i in 0..windows * 5 {
            agg.moved_to(i * 200);
            agg.add(&Sample {
                operation: "op",
                intended_us: i * 200,
                sent_us: i * 200,
                done_us: i * 200 + latency(i),
                outcome: Outcome::Ok,
                rows: 1,
                bytes: 1,
            });
        }
        agg.pack_all();
        let k = super::windows_per_point(&agg);
        assert_eq!(k, 3, "4,000 windows in at most 1,500 points");
        let points: Vec<_> = super::points(&agg.operations["op"], k).collect();
        assert_eq!(points.len() as u64, windows.div_ceil(3));
        // Each point against its own samples, recorded afresh.
        for (first, c) in points.iter().step_by(97) {
            let mut truth = window_histogram();
            let samples = (first * 5..((first + 3) * 5).min(windows * 5)).map(latency);
            samples.for_each(|l| truth.record(l).unwrap());
            assert_eq!(c.count, truth.len(), "point at window {first}");
            assert_eq!(
                c.latency.value_at_quantile(0.99),
                truth.value_at_quantile(0.99)
            );
        }
    }
}
