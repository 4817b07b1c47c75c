//! The semantic checks of a scenario's sections, each turning one part of the typed model into
//! plan values and adding every problem it finds, located, to the run's list.

use std::time::Duration;

use super::Errors;
use crate::model::{self, LoadModel, Scenario};
use crate::threshold::Threshold;

/// The stages as (end since the start of the load, level): agents, or uploads per second for
/// `arrival_rate`; each stage's level checked against the model and the fleet.
pub(super) fn stages(e: &mut Errors, s: &Scenario, agents_max: u32) -> Vec<(Duration, f64)> {
    let model = s.load.model;
    let mut end = Duration::ZERO;
    let mut stages = Vec::new();
    let errors_before = e.list.len();
    for stage in &s.load.stages {
        end += e.duration(&stage.duration, "stage duration");
        let level = match (model, &stage.agents, &stage.rate) {
            (LoadModel::ArrivalRate, _, Some(rate)) => {
                if let Some(a) = &stage.agents {
                    e.at(a.span(), "an arrival_rate stage sets `rate`, not `agents` (agents come from fleet.agents)");
                }
                e.rate(rate)
            }
            (LoadModel::ArrivalRate, _, None) => {
                e.at(
                    stage.duration.span(),
                    "this arrival_rate stage has no `rate` (like rate = \"200/s\")",
                );
                0.0
            }
            (_, agents, rate) => {
                if let Some(r) = rate {
                    e.at(r.span(), format!("`rate` belongs to load.model = \"arrival_rate\"; the {model:?} model's stages set `agents`").to_lowercase());
                }
                match agents {
                    Some(a) => {
                        let n = *a.get_ref();
                        if n > agents_max {
                            e.at(a.span(), format!("this stage asks for {n} agents but fleet.agents is {agents_max}"));
                        }
                        f64::from(n)
                    }
                    None => {
                        if rate.is_none() {
                            e.at(stage.duration.span(), "this stage has no `agents`");
                        }
                        0.0
                    }
                }
            }
        };
        stages.push((end, level));
    }
    if !s.load.stages.is_empty() && end.is_zero() && e.list.len() == errors_before {
        e.at(
            s.load.stages[0].duration.span(),
            "the stages last no time at all",
        );
    }
    stages
}

/// `think_time` and `iterations`, which belong to the `closed` model only.
pub(super) fn closed_loop(e: &mut Errors, s: &Scenario) -> (Duration, Option<u32>) {
    let model = s.load.model;
    let think_time = s
        .workload
        .think_time
        .as_ref()
        .map_or(Duration::ZERO, |t| e.duration(t, "workload.think_time"));
    if let Some(t) = s
        .workload
        .think_time
        .as_ref()
        .filter(|_| model != LoadModel::Closed)
    {
        e.at(
            t.span(),
            "think_time applies to load.model = \"closed\" only",
        );
    }
    let iterations = s.workload.iterations.as_ref().and_then(|n| {
        if model != LoadModel::Closed {
            e.at(
                n.span(),
                "iterations applies to load.model = \"closed\" only",
            );
        } else if *n.get_ref() == 0 {
            e.at(
                n.span(),
                "workload.iterations must be at least 1 (leave it out for no limit)",
            );
        }
        Some(*n.get_ref()).filter(|n| *n > 0)
    });
    (think_time, iterations)
}

/// The sample and upload intervals, and the rows one upload carries.
pub(super) fn batch(e: &mut Errors, w: &model::Workload) -> (Duration, Duration, u32) {
    let sample = e.duration(&w.sample_interval, "workload.sample_interval");
    let upload = e.duration(&w.upload_interval, "workload.upload_interval");
    let mut batch_rows = 0;
    if !sample.is_zero() && !upload.is_zero() {
        if upload < sample {
            e.at(
                w.upload_interval.span(),
                "upload_interval is shorter than sample_interval: every upload would be empty",
            );
        } else {
            batch_rows = (upload.as_secs_f64() / sample.as_secs_f64()).round() as u32;
            if batch_rows > 1000 {
                e.at(w.upload_interval.span(), format!("one upload would carry {batch_rows} rows; the Data API returns at most 1000 per request and large bodies hurt, so keep upload / sample <= 1000"));
            }
        }
    } else if !w.sample_interval.get_ref().is_empty()
        && sample.is_zero()
        && humantime::parse_duration(w.sample_interval.get_ref()).is_ok()
    {
        e.at(
            w.sample_interval.span(),
            "sample_interval must be longer than zero",
        );
    }
    (sample, upload, batch_rows)
}

/// k6's spellings of the object form's keys, accepted beside ours.
const K6_KEYS: [&str; 2] = ["abortOnFail", "delayAbortEval"];

/// A key of a threshold's table under our name or k6's (not both).
fn either<'a>(t: &'a toml::Table, ours: &str, k6: &str) -> Result<Option<&'a toml::Value>, String> {
    match (t.get(ours), t.get(k6)) {
        (Some(_), Some(_)) => Err(format!(
            "{ours} and {k6} are the same setting (k6 spells it {k6}): give one"
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// `abort_on_fail` and `delay_abort_eval` of a threshold's table (or k6's `abortOnFail` and
/// `delayAbortEval`).
fn abort_keys(t: &toml::Table) -> Result<(bool, Duration), String> {
    let abort = match either(t, "abort_on_fail", "abortOnFail")? {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err("abort_on_fail must be true or false".into()),
    };
    let delay = match either(t, "delay_abort_eval", "delayAbortEval")?
        .map(|v| v.as_str().map(humantime::parse_duration))
    {
        None => Duration::ZERO,
        Some(Some(Ok(d))) => d,
        Some(_) => return Err("delay_abort_eval must be a duration like \"10s\"".into()),
    };
    Ok((abort, delay))
}

/// Every threshold of `[thresholds]`, k6's string or object form, each located when wrong.
pub(super) fn thresholds(e: &mut Errors, s: &Scenario) -> Vec<Threshold> {
    let mut thresholds = Vec::new();
    for (op, exprs) in &s.thresholds {
        if !crate::OPERATIONS.contains(&op.get_ref().as_str()) {
            e.at(
                op.span(),
                format!(
                    "unknown operation {:?}: expected one of {:?}",
                    op.get_ref(),
                    crate::OPERATIONS
                ),
            );
            continue;
        }
        for entry in exprs {
            let (expr, abort, delay) = match entry.get_ref() {
                toml::Value::String(s) => (s.clone(), false, Duration::ZERO),
                toml::Value::Table(t) => {
                    let keys = ["threshold", "abort_on_fail", "delay_abort_eval"];
                    if let Some(k) = t
                        .keys()
                        .find(|k| !keys.contains(&k.as_str()) && !K6_KEYS.contains(&k.as_str()))
                    {
                        e.at(entry.span(), format!("unknown key {k:?} in a threshold: expected threshold, abort_on_fail (k6: abortOnFail), delay_abort_eval (k6: delayAbortEval)"));
                        continue;
                    }
                    let Some(expr) = t.get("threshold").and_then(|v| v.as_str()) else {
                        e.at(
                            entry.span(),
                            "this threshold has no `threshold = \"…\"` expression",
                        );
                        continue;
                    };
                    let (abort, delay) = match abort_keys(t) {
                        Ok(found) => found,
                        Err(msg) => {
                            e.at(entry.span(), msg);
                            continue;
                        }
                    };
                    (expr.to_string(), abort, delay)
                }
                _ => {
                    e.at(entry.span(), "a threshold is a string like \"p(99) < 250ms\" or a table like { threshold = \"error_rate < 1%\", abort_on_fail = true }");
                    continue;
                }
            };
            match Threshold::parse(op.get_ref(), &expr) {
                Ok(mut t) => {
                    t.abort_on_fail = abort;
                    t.delay_abort_eval = delay;
                    thresholds.push(t);
                }
                Err(msg) => e.at(entry.span(), msg),
            }
        }
    }
    thresholds
}

/// `[workload.replay]`: the traces exist, the shares and the time scale make sense.
pub(super) fn replay(e: &mut Errors, w: &model::Workload) -> Option<crate::plan::ReplayPlan> {
    w.replay.as_ref().map(|r| {
        if r.traces.is_empty() {
            e.at(0..0, "workload.replay.traces is empty: list at least one trace file");
        }
        for t in &r.traces {
            if !std::path::Path::new(t.get_ref()).is_file() {
                e.at(t.span(), format!("workload.replay.traces: no file {:?} (paths are relative to the current directory)", t.get_ref()));
            }
        }
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        if !(fraction(r.share) && fraction(r.jitter) && r.time_scale > 0.0 && r.time_scale.is_finite()) {
            e.at(r.traces.first().map_or(0..0, |t| t.span()), "workload.replay: share and jitter must be between 0 and 1, time_scale above 0");
        }
        crate::plan::ReplayPlan {
            traces: r.traces.iter().map(|t| t.get_ref().into()).collect(),
            share: r.share,
            time_scale: r.time_scale,
            offsets: r.offsets,
            jitter: r.jitter,
        }
    })
}
