//! What every page fleetbench writes shares: one stylesheet, the series colours, and the frame
//! (head and title) around the body.

use crate::svg::escape;

pub const COLORS: [&str; 8] = [
    "#1f5fa8", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#4b5563",
];

pub const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:1100px;padding:1.2em;color:#1f2328}\
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.6em 0 .4em;border-bottom:1px solid #d0d7de}h3{font-size:1em;margin:1em 0 .3em}\
.verdict{display:inline-block;padding:.1em .6em;border-radius:4px;color:#fff}.v-pass{background:#1a7f37}.v-fail{background:#cf222e}.v-info{background:#57606a}\
.facts{color:#57606a}.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5em 0;font-variant-numeric:tabular-nums}\
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}\
td.l{text-align:left;white-space:normal;max-width:40em}\
th{background:#f6f8fa}tr.fail td{color:#cf222e;font-weight:600}tr.pass td:last-child{color:#1a7f37}\
svg.chart{width:100%;max-width:760px;height:auto;display:block;margin:.4em 0}svg .axis line{stroke:#57606a}\
svg .grid{stroke:#d0d7de;stroke-width:.6}svg text{font:11px system-ui,sans-serif;fill:#57606a}svg .ct{font-weight:600;fill:#1f2328}\
svg .yl{text-anchor:end}svg .yr{text-anchor:start}svg .xl{text-anchor:middle}svg .al{text-anchor:middle}svg .note{fill:#8c959f}\
.ops{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:0 1.5em}\
@media print{body{max-width:none;padding:0}h2{break-after:avoid}svg.chart{break-inside:avoid}}";

/// The start of a page titled `title`, its stylesheet inline, up to the opening `<body>`.
pub fn open(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(title)
    )
}

/// The end of every page.
pub const CLOSE: &str = "</body></html>\n";
