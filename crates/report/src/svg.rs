//! Line charts as inline SVG. Hand-written because the charts need only polylines, ticks and
//! labels: a plotting crate (plotters) needs a font backend for its text (system fonts through
//! fontconfig, or a bundled TTF), whereas SVG's own `<text>` is drawn by the viewer in its font,
//! and the page must carry nothing but itself.

use std::fmt::Write;

/// One line of a chart.
pub struct Series {
    pub name: String,
    /// (x, y) points, x ascending.
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
    /// Dashed (a planned or secondary quantity).
    pub dashed: bool,
    /// On the right-hand axis (a second unit overlaid on the same time axis).
    pub right: bool,
}

pub enum XAxis<'a> {
    /// Seconds since the run started.
    Seconds,
    /// Any quantity, its ticks labelled with this unit (rows, MiB, …).
    Value(&'a str),
    /// Percentiles on HdrHistogram's scale: x = log10(1 / (1 - q)), labelled 0 %, 90 %, 99 %, …
    Percentile,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub x: XAxis<'a>,
    pub series: Vec<Series>,
    /// Log scale on y (latency spectra).
    pub log_y: bool,
    /// A fixed x range, so that charts stacked one above the other line up in time.
    pub x_range: Option<(f64, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 240.0;
const L: f64 = 64.0;
const R: f64 = 16.0;
const T: f64 = 28.0;
const B: f64 = 36.0;

/// Text for HTML, SVG and XML alike, from untrusted input (a run directory is a CI artifact):
/// markup characters escaped, control characters dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' | '\r' => out.push(c),
            // Control characters are illegal in XML 1.0 (junit.xml would not parse) and mean
            // nothing on a page: dropped.
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// "Nice" tick values covering `lo..=hi`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 10.0 {
        format!("{:.0}", v)
    } else if v.abs() >= 1.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

/// Where data goes on the canvas: the ranges of both y axes and the x axis, and the plot's edges.
struct Frame {
    x0: f64,
    x1: f64,
    /// The left axis, in log10 when the chart is logarithmic.
    y0: f64,
    y1: f64,
    /// The right axis's top (it starts at 0).
    ry1: f64,
    log_y: bool,
    /// The plot's top edge (below the legend) and its right margin.
    top: f64,
    rm: f64,
}

impl Frame {
    fn fy(&self, y: f64) -> f64 {
        if self.log_y { y.log10() } else { y }
    }
    fn sx(&self, x: f64) -> f64 {
        L + (x - self.x0) / (self.x1 - self.x0) * (W - L - self.rm)
    }
    fn sy(&self, y: f64) -> f64 {
        H - B - (self.fy(y) - self.y0) / (self.y1 - self.y0) * (H - self.top - B)
    }
    fn rsy(&self, y: f64) -> f64 {
        H - B - y / self.ry1 * (H - self.top - B)
    }
}

impl Chart<'_> {
    /// The chart as an `<svg>` element (empty series are skipped; no points at all gives a note).
    pub fn render(&self) -> String {
        let has_right = self.series.iter().any(|s| s.right && !s.points.is_empty());
        // Room for the right-hand axis's labels when it is used.
        let rm = if has_right { 48.0 } else { R };
        let (legend, top) = self.legend(rm);
        let mut o = String::new();
        let _ = write!(
            o,
            "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
<text x=\"{L}\" y=\"18\" class=\"ct\">{t}</text>",
            t = escape(self.title)
        );
        let Some(f) = self.frame(top, rm) else {
            let _ = write!(
                o,
                "<text x=\"{}\" y=\"{}\" class=\"note\">no samples</text></svg>",
                W / 2.0 - 30.0,
                H / 2.0
            );
            return o;
        };
        self.axes(&mut o, &f, has_right);
        self.x_labels(&mut o, &f);
        let _ = write!(
            o,
            "<text x=\"12\" y=\"{}\" class=\"al\" transform=\"rotate(-90 12 {})\">{}</text></g>",
            H / 2.0,
            H / 2.0,
            escape(self.y_label)
        );
        // Lines, then the legend above them.
        self.lines(&mut o, &f);
        for (s, x, y) in legend {
            let _ = write!(
                o,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"lg\">{}</text>",
                y - 4.0,
                s.color,
                x + 14.0,
                y,
                escape(&s.name)
            );
        }
        o.push_str("</svg>");
        o
    }

    /// A point the chart can draw (finite, and positive on a log scale).
    fn drawable(&self, p: &(f64, f64)) -> bool {
        p.0.is_finite() && p.1.is_finite() && (!self.log_y || p.1 > 0.0)
    }

    /// Legend entries left to right, wrapping onto more rows: each series with its place, and the
    /// plot's top edge below them.
    fn legend(&self, rm: f64) -> (Vec<(&Series, f64, f64)>, f64) {
        let mut legend = Vec::new();
        let (mut lx, mut row) = (L + 8.0, 0.0);
        for s in self.series.iter().filter(|s| !s.points.is_empty()) {
            let width = 22.0 + 6.5 * s.name.chars().count() as f64;
            if lx + width > W - rm && lx > L + 8.0 {
                (lx, row) = (L + 8.0, row + 1.0);
            }
            legend.push((s, lx, 30.0 + 13.0 * row));
            lx += width;
        }
        (legend, T + 13.0 * row + 6.0)
    }

    /// The ranges from the drawable points (the left axis from the left-hand series, or the
    /// right-hand ones when there are none); none when nothing can be drawn.
    fn frame(&self, top: f64, rm: f64) -> Option<Frame> {
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|p| self.drawable(p))
            .collect();
        if pts.is_empty() {
            return None;
        }
        let side = |right: bool| -> Vec<(f64, f64)> {
            self.series
                .iter()
                .filter(|s| s.right == right)
                .flat_map(|s| s.points.iter().copied())
                .filter(|p| self.drawable(p))
                .collect()
        };
        let (left_pts, right_pts) = (side(false), side(true));
        let left_pts = if left_pts.is_empty() {
            right_pts.clone()
        } else {
            left_pts
        };
        let fy = |y: f64| if self.log_y { y.log10() } else { y };
        let (x0, x1) = self.x_range.unwrap_or_else(|| {
            pts.iter()
                .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)))
        });
        let (y0, y1) = left_pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
            (a.min(fy(p.1)), b.max(fy(p.1)))
        });
        let ry1 = right_pts.iter().fold(0.0f64, |a, p| a.max(p.1));
        let ry1 = if ry1 > 0.0 { ry1 * 1.05 } else { 1.0 };
        let (x1, y0) = (
            if x1 > x0 { x1 } else { x0 + 1.0 },
            if self.log_y {
                y0.floor()
            } else {
                0.0f64.min(y0)
            },
        );
        let y1 = if self.log_y {
            y1.ceil().max(y0 + 1.0)
        } else if y1 > y0 {
            y1 * 1.05
        } else {
            y0 + 1.0
        };
        Some(Frame {
            x0,
            x1,
            y0,
            y1,
            ry1,
            log_y: self.log_y,
            top,
            rm,
        })
    }

    /// The axes, the right-hand axis's labels when it is used, and the left axis's grid.
    fn axes(&self, o: &mut String, f: &Frame, has_right: bool) {
        let (top, rm) = (f.top, f.rm);
        let _ = write!(
            o,
            "<g class=\"axis\"><line x1=\"{L}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><line x1=\"{L}\" y1=\"{top}\" x2=\"{L}\" y2=\"{}\"/>",
            H - B,
            W - rm,
            H - B,
            H - B
        );
        if has_right {
            let _ = write!(
                o,
                "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{}\"/>",
                H - B,
                x = W - rm
            );
            for v in ticks(0.0, f.ry1, 5) {
                let _ = write!(
                    o,
                    "<text x=\"{:.1}\" y=\"{:.1}\" class=\"yr\">{}</text>",
                    W - rm + 6.0,
                    f.rsy(v) + 4.0,
                    label(v)
                );
            }
        }
        let yt: Vec<f64> = if self.log_y {
            (f.y0 as i32..=f.y1 as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            ticks(f.y0, f.y1, 5)
        };
        for v in yt {
            let y = f.sy(v);
            let _ = write!(
                o,
                "<line class=\"grid\" x1=\"{L}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\"/><text x=\"{}\" y=\"{:.1}\" class=\"yl\">{}</text>",
                W - rm,
                L - 6.0,
                y + 4.0,
                label(v)
            );
        }
    }

    /// The x axis's labels: values with their unit, or percentiles on their log scale with a grid.
    fn x_labels(&self, o: &mut String, f: &Frame) {
        match self.x {
            XAxis::Seconds | XAxis::Value(_) => {
                let unit = match self.x {
                    XAxis::Value(u) => escape(u),
                    _ => "s".into(),
                };
                for v in ticks(f.x0, f.x1, 8) {
                    let x = f.sx(v);
                    let _ = write!(
                        o,
                        "<text x=\"{x:.1}\" y=\"{}\" class=\"xl\">{}{unit}</text>",
                        H - B + 16.0,
                        label(v)
                    );
                }
            }
            XAxis::Percentile => {
                let mut n = 0;
                while f64::from(n) <= f.x1 {
                    let x = f.sx(f64::from(n));
                    let text = if n == 0 {
                        "0%".to_string()
                    } else {
                        format!("{}%", 100.0 - 100.0 / 10f64.powi(n))
                    };
                    let _ = write!(
                        o,
                        "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\"/><text x=\"{x:.1}\" y=\"{}\" class=\"xl\">{text}</text>",
                        f.top,
                        H - B,
                        H - B + 16.0
                    );
                    n += 1;
                }
            }
        }
    }

    /// One polyline per series with drawable points, on its own axis.
    fn lines(&self, o: &mut String, f: &Frame) {
        for s in &self.series {
            let line: Vec<String> = s
                .points
                .iter()
                .filter(|p| self.drawable(p))
                .map(|&(x, y)| {
                    format!(
                        "{:.1},{:.1}",
                        f.sx(x),
                        if s.right { f.rsy(y) } else { f.sy(y) }
                    )
                })
                .collect();
            if line.is_empty() {
                continue;
            }
            let dash = if s.dashed {
                " stroke-dasharray=\"5 4\""
            } else {
                ""
            };
            let _ = write!(
                o,
                "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{dash} points=\"{}\"/>",
                escape(&s.name),
                s.color,
                line.join(" ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 437.0, 5);
        assert!(
            t.windows(2).all(|w| (w[1] - w[0] - 100.0).abs() < 1e-9),
            "{t:?}"
        );
    }

    #[test]
    fn points_land_inside_the_plot_area() {
        let c = Chart {
            title: "t",
            y_label: "ms",
            x: XAxis::Seconds,
            log_y: false,
            x_range: None,
            series: vec![Series {
                name: "a".into(),
                points: vec![(0.0, 1.0), (10.0, 5.0)],
                color: "#000",
                dashed: false,
                right: false,
            }],
        };
        let svg = c.render();
        let pts = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        for p in pts.split(' ') {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((L..=W - R).contains(&x) && (T..=H - B).contains(&y), "{p}");
        }
        // Many long names wrap the legend onto more rows, and the plot moves down below them.
        let many = Chart {
            title: "t",
            y_label: "ms",
            x: XAxis::Seconds,
            log_y: false,
            x_range: None,
            series: (0..8)
                .map(|i| Series {
                    name: format!("operation.number_{i}"),
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                    color: "#000",
                    dashed: false,
                    right: false,
                })
                .collect(),
        }
        .render();
        let legend: Vec<&str> = many
            .split("<text x=\"")
            .skip(1)
            .filter(|t| t.contains("class=\"lg\""))
            .collect();
        let ys: Vec<f64> = legend
            .iter()
            .map(|t| {
                t.split("y=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(ys.len(), 8);
        assert!(ys.iter().any(|y| *y > ys[0]), "{ys:?}");
        for text in legend {
            let x: f64 = text.split('"').next().unwrap().parse().unwrap();
            assert!(x < W - R, "legend text starts at {x}");
        }
        assert!(
            Chart {
                title: "e",
                y_label: "",
                x: XAxis::Seconds,
                log_y: true,
                x_range: None,
                series: vec![]
            }
            .render()
            .contains("no samples")
        );
    }
}
