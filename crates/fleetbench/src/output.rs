//! The run directory (INTERFACE.md): `scenario.toml` as resolved, `summary.json`,
//! `histograms.hlog`, `timeline.json` (with the log, the run's saved data: `fleetbench report`
//! re-renders from them), `junit.xml` (one test case per threshold) and `index.html` (drawn by the
//! report crate). Nothing here holds a secret: the target URL is redacted before it reaches the
//! summary.

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
    load: &fleetbench_report::LoadShape,
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
    let mut timeline = fleetbench_metrics::hlog::Timeline::of(agg);
    timeline.load_unit = load.unit.clone();
    timeline.load_points = load.points.clone();
    std::fs::write(
        file("timeline.json"),
        serde_json::to_string(&timeline)? + "\n",
    )
    .context("writing timeline.json")?;
    std::fs::write(file("junit.xml"), junit(summary)).context("writing junit.xml")?;
    std::fs::write(
        file("index.html"),
        fleetbench_report::html(summary, agg, load),
    )
    .context("writing index.html")?;
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

/// `fleetbench report RUN_DIR`: index.html again, from the run's saved data alone.
pub fn rerender(dir: &Path) -> Result<std::path::PathBuf, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| {
            format!(
                "{}: {e}; a run directory holds summary.json, timeline.json and histograms.hlog",
                dir.join(name).display()
            )
        })
    };
    let summary: Summary = serde_json::from_slice(&read("summary.json")?)
        .map_err(|e| format!("{}: {e}", dir.join("summary.json").display()))?;
    let timeline: fleetbench_metrics::hlog::Timeline =
        serde_json::from_slice(&read("timeline.json")?)
            .map_err(|e| format!("{}: {e}", dir.join("timeline.json").display()))?;
    let agg = fleetbench_metrics::hlog::read(&read("histograms.hlog")?, &timeline)?;
    let load = fleetbench_report::LoadShape {
        unit: timeline.load_unit.clone(),
        points: timeline.load_points.clone(),
    };
    let page = dir.join("index.html");
    std::fs::write(&page, fleetbench_report::html(&summary, &agg, &load))
        .map_err(|e| format!("writing {}: {e}", page.display()))?;
    Ok(page)
}
