//! `junit.xml`: the run as CI's test reporters read it (the JUnit XML that Jenkins, GitLab and
//! the GitHub reporters parse). One test case per threshold (class `thresholds.<operation>`), per
//! probe (class `probes`), and one for what the fleet delivered against its plan (`delivery`) and
//! one for an abort (`abort_on_fail`), so that every reason a run exits 99 is a failed test case.
//! Failures carry a `type` (`threshold`, `probe`, `delivery`, `abort`) and a message with units.
//! Each case's `time` is the span it judged: the load phase for thresholds and delivery, the run
//! for probes. Written by hand: a few escaped elements, where an XML crate would add nothing.

use fleetbench_metrics::Summary;
use fleetbench_metrics::summary::{ProbeReport, ThresholdResult};

use crate::svg::escape;

/// One test case: its class, name, span in seconds, and its failure `(type, message)`,
/// `skipped` message, or neither.
struct Case {
    class: String,
    name: String,
    time_s: f64,
    outcome: Outcome,
}

enum Outcome {
    Passed,
    Failed { kind: &'static str, message: String },
    Skipped(String),
}

/// The run's `junit.xml`.
pub fn junit(s: &Summary) -> String {
    let cases = cases(s);
    let failures = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed { .. }))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .count();
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\"",
        cases.len(),
        s.duration_s
    );
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"fleetbench\" {counts}>\n  <testsuite name=\"fleetbench.{}\" {counts} timestamp=\"{}\">\n",
        escape(&s.scenario),
        timestamp(&s.started_at),
    );
    x.push_str(&properties(s));
    for c in &cases {
        x.push_str(&case(c));
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// JUnit's timestamp: ISO 8601 without a zone (the schema's `xs:dateTime` as reporters expect),
/// in UTC.
fn timestamp(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| rfc3339.to_string(),
        |t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        },
    )
}

fn properties(s: &Summary) -> String {
    let mut x = String::from("    <properties>\n");
    for (name, value) in [
        ("run_id", s.run_id.as_str()),
        ("target", s.target.url.as_str()),
        ("verdict", s.verdict.as_str()),
        ("git_commit", s.environment.git_commit.as_str()),
    ] {
        x.push_str(&format!(
            "      <property name=\"{name}\" value=\"{}\"/>\n",
            escape(value)
        ));
    }
    x.push_str("    </properties>\n");
    x
}

fn case(c: &Case) -> String {
    let open = format!(
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
        escape(&c.class),
        escape(&c.name),
        c.time_s
    );
    match &c.outcome {
        Outcome::Passed => format!("{open}/>\n"),
        Outcome::Failed { kind, message } => format!(
            "{open}>\n      <failure type=\"{kind}\" message=\"{m}\">{m}</failure>\n    </testcase>\n",
            m = escape(message)
        ),
        Outcome::Skipped(message) => format!(
            "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>\n",
            escape(message)
        ),
    }
}

fn cases(s: &Summary) -> Vec<Case> {
    let load_s = s.load_phase.as_ref().map_or(s.duration_s, |l| l.duration_s);
    let mut cases: Vec<Case> = s
        .thresholds
        .iter()
        .map(|t| threshold_case(t, load_s))
        .collect();
    cases.extend(s.probes.iter().map(|(n, p)| probe_case(n, p, s.duration_s)));
    if let Some(d) = &s.delivery {
        cases.push(Case {
            class: "delivery".into(),
            name: "agents and arrivals as planned".into(),
            time_s: load_s,
            outcome: if d.shortfall.is_empty() {
                Outcome::Passed
            } else {
                Outcome::Failed {
                    kind: "delivery",
                    message: d.shortfall.join("; "),
                }
            },
        });
    }
    if !s.shards_failed.is_empty() {
        cases.push(Case {
            class: "shards".into(),
            name: "every shard ran whole".into(),
            time_s: s.duration_s,
            outcome: Outcome::Failed {
                kind: "shard",
                message: s.shards_failed.join("; "),
            },
        });
    }
    cases.push(Case {
        class: "abort_on_fail".into(),
        name: "the run was not aborted".into(),
        time_s: s.duration_s,
        outcome: match &s.aborted {
            None => Outcome::Passed,
            Some(why) => Outcome::Failed {
                kind: "abort",
                message: format!("aborted: {why}"),
            },
        },
    });
    cases
}

fn threshold_case(t: &ThresholdResult, load_s: f64) -> Case {
    Case {
        class: format!("thresholds.{}", t.operation),
        name: t.expr.clone(),
        time_s: load_s,
        outcome: if t.pass {
            Outcome::Passed
        } else {
            Outcome::Failed {
                kind: "threshold",
                message: format!("{} {}: observed {}", t.operation, t.expr, t.observed_text()),
            }
        },
    }
}

fn probe_case(name: &str, p: &ProbeReport, run_s: f64) -> Case {
    let figures: Vec<String> = p
        .figures
        .iter()
        .map(|f| format!("{} {} {}", f.name, f.value, f.unit))
        .collect();
    let said = p
        .findings
        .iter()
        .cloned()
        .chain((!figures.is_empty()).then(|| figures.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    Case {
        class: "probes".into(),
        name: name.to_string(),
        time_s: run_s,
        outcome: match p.verdict.as_str() {
            "pass" => Outcome::Passed,
            "info" => Outcome::Skipped(format!("a measurement with nothing to hold: {said}")),
            _ => Outcome::Failed {
                kind: "probe",
                message: format!("{}: {said}", p.title),
            },
        },
    }
}
