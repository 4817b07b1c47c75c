//! Threshold expressions in k6's syntax, per operation: `p(99) < 250ms`, `avg <= 1s`, `max < 2s`,
//! `error_rate < 0.1%`, `rate > 50/s`, `count >= 100`, `loss == 0`. Latencies are in milliseconds
//! when no unit is given (as in k6); `error_rate` and `loss` are fractions, or percentages with `%`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A latency percentile (0–100].
    Percentile(f64),
    Avg,
    Min,
    Max,
    Med,
    /// Failed requests / requests.
    ErrorRate,
    /// Completed requests per second over the run.
    Rate,
    Count,
    /// Expected events that never arrived / expected events.
    Loss,
}

impl Metric {
    pub fn is_latency(self) -> bool {
        matches!(
            self,
            Metric::Percentile(_) | Metric::Avg | Metric::Min | Metric::Max | Metric::Med
        )
    }

    /// `value`, in this metric's unit, as a reader reads it: `7.64 ms`, `0.12 %`, `54.2/s`, `1234`.
    pub fn show(self, value: f64) -> String {
        match self {
            _ if self.is_latency() => crate::threshold::show_ms(value),
            Metric::ErrorRate | Metric::Loss => format!("{:.3} %", value * 100.0),
            Metric::Rate => format!("{value:.1}/s"),
            _ => format!("{value:.0}"),
        }
    }
}

/// Milliseconds with a unit that keeps three significant digits: `850 µs`, `7.64 ms`, `2.35 s`.
pub fn show_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Cmp {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Cmp {
    pub fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Cmp::Lt => observed < limit,
            Cmp::Le => observed <= limit,
            Cmp::Gt => observed > limit,
            Cmp::Ge => observed >= limit,
            Cmp::Eq => (observed - limit).abs() < 1e-12,
            Cmp::Ne => (observed - limit).abs() >= 1e-12,
        }
    }
}

/// One parsed threshold on one operation. `value` is in the metric's unit: milliseconds for
/// latencies, a fraction for rates of failure, per second for `rate`, a number for `count`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub operation: String,
    pub expr: String,
    pub metric: Metric,
    pub cmp: Cmp,
    pub value: f64,
    /// Evaluated every second during the run as well; crossing it stops the run (k6's
    /// `abortOnFail`), once `delay_abort_eval` of the load phase has passed.
    pub abort_on_fail: bool,
    pub delay_abort_eval: std::time::Duration,
}

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a non-negative number"))
}

impl Threshold {
    pub fn parse(operation: &str, expr: &str) -> Result<Threshold, String> {
        let ops = ["<=", ">=", "==", "!=", "<", ">"];
        let (at, op) = ops
            .iter()
            .filter_map(|op| expr.find(op).map(|i| (i, *op)))
            .min_by_key(|(i, op)| (*i, std::cmp::Reverse(op.len())))
            .ok_or_else(|| {
                format!("threshold {expr:?} has no comparison (one of < <= > >= == !=)")
            })?;
        let cmp = match op {
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            "==" => Cmp::Eq,
            _ => Cmp::Ne,
        };
        let lhs = expr[..at].trim();
        let rhs = expr[at + op.len()..].trim();
        let metric = match lhs {
            "avg" => Metric::Avg,
            "min" => Metric::Min,
            "max" => Metric::Max,
            "med" => Metric::Med,
            "error_rate" => Metric::ErrorRate,
            "rate" => Metric::Rate,
            "count" => Metric::Count,
            "loss" => Metric::Loss,
            p if p.starts_with("p(") && p.ends_with(')') => {
                let n = number(&p[2..p.len() - 1])?;
                if n <= 0.0 || n > 100.0 {
                    return Err(format!("percentile {n} is outside (0, 100]"));
                }
                Metric::Percentile(n)
            }
            other => {
                return Err(format!(
                    "unknown threshold metric {other:?}: expected p(N), avg, min, max, med, error_rate, rate, count or loss"
                ));
            }
        };
        let value = if metric.is_latency() {
            if let Some(v) = rhs.strip_suffix("ms") {
                number(v)?
            } else if let Some(v) = rhs.strip_suffix("us").or_else(|| rhs.strip_suffix("µs")) {
                number(v)? / 1000.0
            } else if let Some(v) = rhs.strip_suffix('s') {
                number(v)? * 1000.0
            } else {
                number(rhs)?
            }
        } else if matches!(metric, Metric::ErrorRate | Metric::Loss) {
            match rhs.strip_suffix('%') {
                Some(v) => number(v)? / 100.0,
                None => number(rhs)?,
            }
        } else if metric == Metric::Rate {
            number(rhs.strip_suffix("/s").unwrap_or(rhs))?
        } else {
            number(rhs)?
        };
        Ok(Threshold {
            operation: operation.to_string(),
            expr: expr.to_string(),
            metric,
            cmp,
            value,
            abort_on_fail: false,
            delay_abort_eval: std::time::Duration::ZERO,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k6_expressions() {
        let t = Threshold::parse("rest.insert_metrics", "p(99) < 250ms").unwrap();
        assert_eq!(
            (t.metric, t.cmp, t.value),
            (Metric::Percentile(99.0), Cmp::Lt, 250.0)
        );
        let t = Threshold::parse("x", "p(99.9)<=1.5s").unwrap();
        assert_eq!(
            (t.metric, t.cmp, t.value),
            (Metric::Percentile(99.9), Cmp::Le, 1500.0)
        );
        assert_eq!(Threshold::parse("x", "avg < 20").unwrap().value, 20.0);
        assert_eq!(
            Threshold::parse("x", "error_rate < 0.1%").unwrap().value,
            0.001
        );
        assert_eq!(Threshold::parse("x", "loss == 0").unwrap().cmp, Cmp::Eq);
        assert_eq!(Threshold::parse("x", "rate >= 50/s").unwrap().value, 50.0);
        assert_eq!(Metric::Percentile(99.0).show(7.639), "7.64 ms");
        assert_eq!(Metric::Max.show(0.85), "850 µs");
        assert_eq!(Metric::Avg.show(2345.0), "2.35 s");
        assert_eq!(Metric::ErrorRate.show(0.0012), "0.120 %");
        assert_eq!(Metric::Rate.show(54.25), "54.2/s");
        assert_eq!(Metric::Count.show(1234.0), "1234");
        for bad in [
            "p(99) 250",
            "p(101) < 1s",
            "p95 < 1s",
            "avg < fast",
            "error_rate < -1",
        ] {
            assert!(Threshold::parse("x", bad).is_err(), "{bad}");
        }
    }
}
