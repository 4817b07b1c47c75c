//! The page from a run whose every sample the test chose: it carries nothing from outside itself,
//! draws one chart per view, and its numbers are the samples' own.
//!
//! Contents:
//! - junit: one test case per threshold, failures marked, `<` in expressions escaped and restored.
//! - self-contained: no script, link, image, `src`, `href` or `url(`; names escaped; every
//!   threshold and error kind listed.
//! - charts: throughput, planned load and two charts per operation; throughput steps with the
//!   samples; p50 = p99 where every window has one latency; service time below latency; the
//!   spectrum monotone from minimum to maximum.
//! - probes: a section per probe that ran (claim, verdict, figures beside the published ones,
//!   findings, tables and charts, all escaped), none when none ran.

mod common;

use fleetbench_metrics::{Aggregate, Outcome, Sample, Summary};
use fleetbench_report::{LoadShape, html};

/// 20 s of `rest.insert_metrics`: in second `s`, `10 + s` uploads whose latency is `(s + 1) ms`
/// (service half of it); one `http_503` per even second; and one `auth.password` at the start.
fn run() -> (Summary, Aggregate) {
    let mut agg = Aggregate::new(1_000_000);
    for s in 0..20u64 {
        for i in 0..10 + s {
            let at = s * 1_000_000 + i * 1_000;
            agg.add(&Sample {
                operation: "rest.insert_metrics",
                intended_us: at,
                sent_us: at + (s + 1) * 500,
                done_us: at + (s + 1) * 1_000,
                outcome: if i == 0 && s % 2 == 0 {
                    Outcome::Error("http_503".into())
                } else {
                    Outcome::Ok
                },
                rows: 10,
                bytes: 100,
            });
        }
    }
    agg.add(&Sample {
        operation: "auth.password",
        intended_us: 0,
        sent_us: 0,
        done_us: 80_000,
        outcome: Outcome::Ok,
        rows: 0,
        bytes: 0,
    });
    let thresholds = vec![
        fleetbench_scenario::Threshold::parse("rest.insert_metrics", "p(99) < 15ms").unwrap(),
        fleetbench_scenario::Threshold::parse("rest.insert_metrics", "error_rate < 1%").unwrap(),
    ];
    let facts = common::facts("r-1", "unit <test>", 20.0);
    (Summary::new(&agg, facts, &thresholds), agg)
}

fn shape() -> LoadShape {
    LoadShape {
        unit: "active agents".into(),
        points: vec![(0.0, 0.0), (5.0, 50.0), (20.0, 50.0)],
        gauges: (0..=20)
            .map(|t| (f64::from(t), f64::from(50.min(10 * t)), 2.0))
            .collect(),
    }
}

/// The `points` of the polyline named `series` in the chart titled `title` (the n-th such chart).
fn points(page: &str, title: &str, nth: usize, series: &str) -> Vec<(f64, f64)> {
    let chart = page
        .split("<svg")
        .filter(|c| c.contains(&format!("<title>{title}</title>")))
        .nth(nth)
        .expect(title);
    let line = chart
        .split("<polyline")
        .find(|p| p.contains(&format!("data-series=\"{series}\"")))
        .expect(series);
    let pts = line
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    pts.split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_page_carries_nothing_from_outside_and_draws_every_view() {
    let (s, agg) = run();
    let page = html(&s, &agg, &shape());
    for outside in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import",
    ] {
        assert!(
            !page.contains(outside),
            "the page refers outside itself: {outside}"
        );
    }
    // Throughput, agents (planned, active, in flight), and two charts for each of the two operations.
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 2 + 2 * 2);
    // Names are escaped, the verdict is the summary's, every threshold is listed.
    assert!(page.contains("unit &lt;test&gt;") && !page.contains("unit <test>"));
    assert!(page.contains(&format!(">{}<", s.verdict.to_uppercase())));
    assert_eq!(
        page.matches("<tr class=\"pass\">").count() + page.matches("<tr class=\"fail\">").count(),
        2
    );
    assert!(page.contains("<td>http_503</td><td>10</td>"));
    // Run facts name the build and the machine when the summary has them, and say nothing otherwise.
    assert!(!page.contains("kernel"));
    let mut with_env = s.clone();
    with_env.environment = fleetbench_metrics::summary::Environment {
        fleetbench_version: "9.9.9".into(),
        git_commit: "0123456789ab+dirty".into(),
        os: "Linux 12 (bookworm)".into(),
        kernel: "6.1.0".into(),
        cpus: 2,
        memory_bytes: 24 << 30,
    };
    let page = html(&with_env, &agg, &shape());
    assert!(page.contains("fleetbench 9.9.9 (0123456789ab+dirty) on Linux 12 (bookworm), kernel 6.1.0, 2 CPUs, 24.0 GiB"), "facts missing");
}

#[test]
fn charts_follow_the_samples() {
    let (s, agg) = run();
    let page = html(&s, &agg, &shape());
    // Throughput: one point per second, rising by one upload per second: equal steps in y, and
    // x in time order.
    let rate = points(
        &page,
        "Throughput and errors (per second, by intended start)",
        0,
        "rest.insert_metrics",
    );
    assert_eq!(rate.len(), 20);
    let steps: Vec<f64> = rate.windows(2).map(|w| w[0].1 - w[1].1).collect();
    assert!(
        steps.iter().all(|d| *d > 0.0 && (d - steps[0]).abs() < 0.2),
        "{steps:?}"
    );
    // Percentiles over time: every second's latency is one value, so p50 = p99 and they climb.
    let p50 = points(&page, "Percentiles over time (ms)", 1, "p50");
    let p99 = points(&page, "Percentiles over time (ms)", 1, "p99");
    assert_eq!(p50.len(), 20);
    assert_eq!(p50, p99);
    assert!(
        p50.windows(2).all(|w| w[1].1 < w[0].1),
        "svg y falls as latency rises"
    );
    // Service time is half the latency: its line lies below (larger svg y) from the start.
    let svc = points(&page, "Percentiles over time (ms)", 1, "service p99");
    assert!(svc.iter().zip(&p99).all(|(a, b)| a.1 > b.1));
    // The planned load is drawn through its corners, the measured gauges once a window, and both
    // panels share one time axis: the same x position for the same second.
    let agents = "Agents: planned, active and in flight";
    assert_eq!(points(&page, agents, 0, "planned active agents").len(), 3);
    let active = points(&page, agents, 0, "active agents");
    assert_eq!(active.len(), 21);
    assert!(
        (active[5].0 - rate[5].0).abs() < 0.05,
        "second 5 at {} and {}",
        active[5].0,
        rate[5].0
    );
    assert_eq!(active[5].1, active[20].1, "50 active from second 5 on");
    // Overlaid on throughput, on the right-hand axis: planned and active agents meet at 50.
    let through = "Throughput and errors (per second, by intended start)";
    let planned_r = points(&page, through, 0, "planned active agents (right)");
    let active_r = points(&page, through, 0, "active agents (right)");
    assert_eq!(planned_r.last().unwrap().1, active_r.last().unwrap().1);
    assert!(page.contains("class=\"yr\""), "a right-hand axis is drawn");
}

#[test]
fn the_spectrum_runs_from_the_minimum_to_the_maximum() {
    let (_, agg) = run();
    let h = &agg.operations["rest.insert_metrics"].total.latency;
    let page = html(&run().0, &agg, &shape());
    let spec = points(
        &page,
        "Percentile spectrum (ms, log scale)",
        1,
        "intended start",
    );
    // Monotone: svg y never rises (latency never falls) as the percentile grows.
    assert!(spec.windows(2).all(|w| w[1].1 <= w[0].1 + 1e-9));
    assert!(spec.windows(2).all(|w| w[1].0 >= w[0].0));
    assert!(
        h.min() <= 1_001 && h.max() >= 19_990,
        "{} {}",
        h.min(),
        h.max()
    );
    // The last point is the maximum: on the log axis it sits at the top decade's height for 20 ms.
    let (top, bottom) = (spec.last().unwrap().1, spec.first().unwrap().1);
    assert!(top < bottom);
}

#[test]
fn junit_has_a_case_per_threshold_and_probe_with_times_and_typed_failures() {
    let (mut s, _) = run();
    s.probes.insert(
        "rls".into(),
        fleetbench_metrics::summary::ProbeReport {
            title: "Row-level security".into(),
            verdict: "fail".into(),
            findings: vec!["agent 3 read agent 4's rows".into()],
            ..Default::default()
        },
    );
    let xml = fleetbench_report::junit::junit(&s);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suite = root
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("timestamp"), Some("2026-11-26T07:00:00"));
    assert_eq!(suite.attribute("time"), Some("20.000"));
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    // Each threshold, the probe, and the abort case.
    assert_eq!(cases.len(), s.thresholds.len() + 2);
    let failed = s.thresholds.iter().filter(|t| !t.pass).count() + 1;
    assert_eq!(
        root.attribute("failures"),
        Some(failed.to_string().as_str())
    );
    for (case, t) in cases.iter().zip(&s.thresholds) {
        // Expressions with `<` survive escaping intact.
        assert_eq!(case.attribute("name"), Some(t.expr.as_str()));
        let class = format!("thresholds.{}", t.operation);
        assert_eq!(case.attribute("classname"), Some(class.as_str()));
        let failure = case.children().find(|n| n.has_tag_name("failure"));
        assert_eq!(failure.is_some(), !t.pass, "{}", t.expr);
        if let Some(f) = failure {
            assert_eq!(f.attribute("type"), Some("threshold"));
            let message = f.attribute("message").unwrap();
            assert!(message.contains(&t.observed_text()), "{message}");
        }
    }
    let rls = cases
        .iter()
        .find(|c| c.attribute("name") == Some("rls"))
        .unwrap();
    let failure = rls.children().find(|n| n.has_tag_name("failure")).unwrap();
    assert_eq!(failure.attribute("type"), Some("probe"));
    assert!(failure.attribute("message").unwrap().contains("agent 3"));
}

#[test]
fn each_probe_that_ran_has_its_section() {
    let (mut s, agg) = run();
    let page = html(&s, &agg, &shape());
    assert!(
        !page.contains("<h2>Probes</h2>"),
        "no probe ran: no section"
    );
    s.probes.insert(
        "realtime".into(),
        fleetbench_metrics::summary::ProbeReport {
            title: "Realtime alert delivery".into(),
            verdict: "fail".into(),
            figures: vec![fleetbench_metrics::summary::Figure {
                name: "commit → client p99".into(),
                value: 812.5,
                unit: "ms".into(),
                published: Some("p95 < 250 ms <hosted>".into()),
            }],
            findings: vec!["a subscription on partitioned system_metrics delivers nothing".into()],
            claim: "alerts arrive \"instantly\"".into(),
            tables: vec![fleetbench_metrics::summary::Table {
                title: "per <size>".into(),
                columns: vec!["rows".into(), "p50 ms".into()],
                rows: vec![
                    vec!["1000".into(), "0.25".into()],
                    vec!["2000".into(), "0.5".into()],
                ],
            }],
            charts: vec![fleetbench_metrics::summary::ProbeChart {
                title: "latency against size".into(),
                x_label: " rows".into(),
                y_label: "p50 ms".into(),
                series: vec![fleetbench_metrics::summary::ChartSeries {
                    name: "partitioned".into(),
                    points: vec![(1000.0, 0.25), (2000.0, 0.5)],
                }],
            }],
        },
    );
    s.probes.insert(
        "rls".into(),
        fleetbench_metrics::summary::ProbeReport {
            title: String::new(),
            verdict: "pass".into(),
            ..Default::default()
        },
    );
    let page = html(&s, &agg, &shape());
    let probes = page
        .split("<h2>Probes</h2>")
        .nth(1)
        .expect("a probes section")
        .split("<h2>")
        .next()
        .unwrap();
    assert_eq!(probes.matches("<section class=\"probe\">").count(), 2);
    assert!(probes.contains("Realtime alert delivery <span class=\"verdict v-fail\">FAIL</span>"));
    assert!(probes.contains("<td>commit → client p99</td><td>812.500</td><td>ms</td><td>p95 &lt; 250 ms &lt;hosted&gt;</td>"));
    assert!(
        probes.contains("<li>a subscription on partitioned system_metrics delivers nothing</li>")
    );
    // The claim, each table (escaped, one row per row) and each chart with its series.
    assert!(probes.contains("<p class=\"claim\">Claim: “alerts arrive &quot;instantly&quot;”</p>"));
    assert!(probes.contains("<h4>per &lt;size&gt;</h4>"));
    assert!(probes.contains("<tr><td>2000</td><td>0.5</td></tr>"));
    assert!(probes.contains("<th>rows</th><th>p50 ms</th>"));
    assert_eq!(probes.matches("<svg").count(), 1);
    assert!(probes.contains("latency against size") && probes.contains("partitioned"));
    // A probe without a title is shown by its name.
    assert!(probes.contains("<h3>rls <span class=\"verdict v-pass\">PASS</span></h3>"));
}

/// A run directory is a CI artifact: whatever its summary says reaches the page, `junit.xml` and
/// `summary.md` as text, never as markup, and XML-illegal characters never reach `junit.xml`.
#[test]
fn a_crafted_summary_is_shown_as_text_everywhere() {
    let (mut s, agg) = run();
    let script = "<script>alert(1)</script>";
    s.verdict = format!("fail{script}");
    s.scenario = format!("smoke\u{1}\u{8}{script}'\"");
    s.probes.insert(
        "rls".into(),
        fleetbench_metrics::summary::ProbeReport {
            title: format!("RLS{script}"),
            verdict: "fail".into(),
            findings: vec![format!("server said \u{0}\u{1b}[31m{script}")],
            ..Default::default()
        },
    );
    let page = fleetbench_report::html(&s, &agg, &shape());
    assert!(
        !page.contains(script) && !page.contains("<script"),
        "markup from the summary"
    );
    assert!(
        !page.chars().any(|c| c.is_control() && c != '\n'),
        "control characters"
    );
    let xml = fleetbench_report::junit::junit(&s);
    let doc = roxmltree::Document::parse(&xml).expect("junit.xml parses whatever the input");
    assert!(!xml.contains(script));
    let texts: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(
        texts.contains("server said [31m<script>"),
        "the finding kept as text"
    );
    let md = fleetbench_report::markdown::markdown(&s);
    assert!(!md.contains("<script") && !md.contains('\u{1b}'), "{md}");
}
