//! The capacity run's page: the knee and what bound it, every step, throughput and latency against
//! the offered load, and the model per compute size; drawn from `capacity.json`'s [`Report`].

use fleetbench_capacity::{Report, Step};

use crate::page;
use crate::svg::{Chart, Series, XAxis, escape};

/// The capacity run's `index.html`.
pub fn html(r: &Report) -> String {
    let mut steps: Vec<&Step> = r.outcome.steps.iter().collect();
    steps.sort_by(|a, b| a.level.total_cmp(&b.level));
    let mut o = page::open(&format!("fleetbench capacity: {}", r.scenario));
    o.push_str(&format!(
        "<h1>Capacity: {}</h1><p>Target {} · SLO {} · {} s warm-up excluded, {} s held per step.</p>",
        escape(&r.scenario),
        escape(&r.target),
        escape(&r.slo.join("; ")),
        r.warmup_s,
        r.hold_s
    ));
    o.push_str(&format!(
        "<h2>Sustainable: {} {}</h2><ul><li>{} uploads/s, about {} agents</li><li>first broken at {}: {}</li><li>binding limit: {}</li><li>confidence: {}</li>{}</ul>",
        r.outcome.knee.map_or("none".into(), |k| format!("{k}")),
        escape(&r.unit),
        r.knee_uploads_per_s.map_or("—".into(), |v| format!("{v:.0}")),
        r.knee_agents.map_or("—".into(), |v| format!("{v:.0}")),
        r.outcome.broke_at.map_or("—".into(), |v| format!("{v}")),
        escape(r.outcome.broke_first.as_deref().unwrap_or("nothing")),
        escape(&r.binding),
        escape(&r.confidence),
        r.outcome.stopped_early.iter().chain(&r.outcome.degraded).map(|s| format!("<li>{}</li>", escape(s))).collect::<String>()
    ));
    o.push_str(&format!("<h2>Steps</h2><div class=\"scroll\"><table><tr><th>{}</th><th>offered /s</th><th>done /s</th><th>p50 ms</th><th>p99 ms</th><th>errors</th><th>SLO</th><th>resources</th></tr>", escape(&r.unit)));
    for s in &r.outcome.steps {
        let op = s.operations.first();
        o.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            if s.held() { "pass" } else { "fail" },
            s.level,
            s.offered_per_s,
            s.achieved_per_s,
            op.map_or("—".into(), |o| format!("{:.1}", o.1)),
            op.map_or("—".into(), |o| format!("{:.1}", o.2)),
            op.map_or("—".into(), |o| format!("{:.2} %", o.3 * 100.0)),
            if s.held() { "held".to_string() } else { escape(&s.slo.iter().filter(|x| !x.3).map(|x| format!("{} {}", x.0, x.1)).chain(s.degraded.clone()).collect::<Vec<_>>().join("; ")) },
            escape(&s.resources.iter().map(|(n, v, l)| format!("{n} {v:.0}{}", l.map_or(String::new(), |l| format!("/{l:.0}")))).collect::<Vec<_>>().join(", "))
        ));
    }
    o.push_str("</table></div>");
    let pts = |f: &dyn Fn(&Step) -> f64| {
        steps
            .iter()
            .map(|s| (s.offered_per_s, f(s)))
            .filter(|p| p.1.is_finite())
            .collect::<Vec<_>>()
    };
    o.push_str(
        &Chart {
            title: "throughput against offered load",
            y_label: "uploads/s done",
            x: XAxis::Value(" /s"),
            series: vec![
                Series {
                    name: "done".into(),
                    points: pts(&|s| s.achieved_per_s),
                    color: "#1f5fa8",
                    dashed: false,
                    right: false,
                },
                Series {
                    name: "offered".into(),
                    points: pts(&|s| s.offered_per_s),
                    color: "#4b5563",
                    dashed: true,
                    right: false,
                },
            ],
            log_y: false,
            x_range: None,
        }
        .render(),
    );
    o.push_str(
        &Chart {
            title: "latency against offered load (log scale: the steps below the knee stay readable)",
            y_label: "ms",
            x: XAxis::Value(" /s"),
            series: vec![
                Series {
                    name: "p99".into(),
                    points: pts(&|s| s.operations.first().map_or(f64::NAN, |o| o.2)),
                    color: "#c2410c",
                    dashed: false,
                    right: false,
                },
                Series {
                    name: "p50".into(),
                    points: pts(&|s| s.operations.first().map_or(f64::NAN, |o| o.1)),
                    color: "#15803d",
                    dashed: false,
                    right: false,
                },
            ],
            log_y: true,
            x_range: None,
        }
        .render(),
    );
    o.push_str(&format!(
        "<h2>Capacity model by compute size</h2><p>The target's compute size: {}.</p>",
        escape(&r.target_size)
    ));
    if !r.model.is_empty() {
        o.push_str("<p>From the knee measured on the target's size and the limits Supabase publishes per compute size (database connections, pooler clients); extrapolated rows scale the knee by the sizes' CPU cores and are capped by the pooler's client limit for agents on the pooler path.</p><table><tr><th>compute</th><th>agents</th><th>basis</th><th>binding limit</th></tr>");
        for e in &r.model {
            o.push_str(&format!(
                "<tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td></tr>",
                e.size,
                e.agents,
                e.basis,
                escape(&e.binds)
            ));
        }
        o.push_str("</table>");
    }
    o.push_str(page::CLOSE);
    o
}
