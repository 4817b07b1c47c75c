//! The calibration page (`fleetbench calibrate`): a recorded trace's distributions beside those of
//! the model fitted to it, as a quantile table and a cumulative distribution per metric.

use std::fmt::Write;

use crate::page::{self, COLORS};
use crate::svg::{Chart, Series, XAxis, escape};

/// One metric, as the trace recorded it and as the fitted model produced it.
pub struct Metric {
    pub name: String,
    pub trace: Vec<f64>,
    pub model: Vec<f64>,
    /// The quantile table's cells (already formatted), trace first, then model.
    pub trace_cells: Vec<String>,
    pub model_cells: Vec<String>,
}

/// What the page says about the fit.
pub struct Calibration<'a> {
    pub profile: &'a str,
    pub samples: usize,
    pub interval_ms: u64,
    pub hostname: &'a str,
    /// Where the profile was written.
    pub written_to: &'a str,
    /// What the trace could not show, and other notes of the fit.
    pub notes: &'a [String],
    /// The quantiles' column headings (`p10`, `p50`, …).
    pub quantiles: &'a [&'a str],
    pub metrics: &'a [Metric],
}

/// The page.
pub fn html(c: &Calibration) -> String {
    let mut o = page::open(&format!("fleetbench calibration: {}", c.profile));
    let notes: String = c
        .notes
        .iter()
        .map(|n| format!("<li>{}</li>", escape(n)))
        .collect();
    let _ = write!(
        o,
        "<h1>Calibration: {}</h1><p>{} samples every {} ms from {}; profile written to {}.</p><ul>{notes}</ul>",
        escape(c.profile),
        c.samples,
        c.interval_ms,
        escape(c.hostname),
        escape(c.written_to),
    );
    o.push_str("<div class=\"scroll\"><table><tr><th>metric</th><th>source</th>");
    for q in c.quantiles {
        let _ = write!(o, "<th>{}</th>", escape(q));
    }
    o.push_str("</tr>\n");
    for m in c.metrics {
        for (source, cells) in [("trace", &m.trace_cells), ("model", &m.model_cells)] {
            let _ = write!(o, "<tr><td>{}</td><td>{source}</td>", escape(&m.name));
            for cell in cells {
                let _ = write!(o, "<td>{}</td>", escape(cell));
            }
            o.push_str("</tr>\n");
        }
    }
    o.push_str("</table></div>\n");
    for m in c.metrics {
        o.push_str(&cdf_chart(m));
    }
    o.push_str(page::CLOSE);
    o
}

/// The share of samples at or below each value, for the trace and the model.
fn cdf_chart(m: &Metric) -> String {
    Chart {
        title: &format!("{}: share of samples at or below", m.name),
        y_label: "% of samples",
        x: XAxis::Value(""),
        series: vec![
            Series {
                name: "trace".into(),
                points: cdf(&m.trace),
                color: COLORS[0],
                dashed: false,
                right: false,
            },
            Series {
                name: "fitted model".into(),
                points: cdf(&m.model),
                color: COLORS[1],
                dashed: true,
                right: false,
            },
        ],
        log_y: false,
        x_range: None,
    }
    .render()
}

fn cdf(values: &[f64]) -> Vec<(f64, f64)> {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len().max(1) as f64;
    s.iter()
        .enumerate()
        .map(|(i, x)| (*x, 100.0 * (i + 1) as f64 / n))
        .collect()
}
