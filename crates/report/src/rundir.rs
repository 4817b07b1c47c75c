//! The run directory (INTERFACE.md): `scenario.toml` as resolved, `summary.json`,
//! `histograms.hlog`, `timeline.json` (with the log, the run's saved data), `junit.xml` (a test
//! case per threshold, probe, delivery and abort), `server.json` (the target's Metrics API through
//! the run, when it has one), `summary.md` (for a CI job summary) and `index.html`. [`read`] loads the saved data back; [`rerender`] draws the
//! page again from it and [`merge`] adds shard runs into one, exactly (HdrHistograms add without
//! loss). Nothing here holds a secret: the target URL is redacted before it reaches the summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fleetbench_metrics::summary::{RunFacts, TargetFacts};
use fleetbench_metrics::{Aggregate, Summary};

use fleetbench_metrics::server::ServerSeries;

use crate::LoadShape;

type Result<T> = std::result::Result<T, String>;

fn context<T, E: std::fmt::Display>(
    r: std::result::Result<T, E>,
    what: impl Fn() -> String,
) -> Result<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Writes every file of the run directory `dir`. Each file is written under a temporary name and
/// renamed into place, `summary.json` last: a reader (or a CI step after a kill) sees each file
/// whole or not at all, and a `summary.json` only beside the files it describes.
pub fn write(
    dir: &Path,
    resolved_toml: &str,
    summary: &Summary,
    agg: &Aggregate,
    load: &LoadShape,
    server: Option<&ServerSeries>,
    started: SystemTime,
) -> Result<()> {
    put(dir, "scenario.toml", resolved_toml.as_bytes())?;
    // The two files that grow with the run's length are written as their windows are read.
    put_with(dir, "histograms.hlog", |out| {
        fleetbench_metrics::hlog::write(out, agg, started)
    })?;
    put_with(dir, "timeline.json", |out| {
        let load = fleetbench_metrics::hlog::LoadFields {
            load_unit: &load.unit,
            load_points: &load.points,
            gauges: &load.gauges,
        };
        fleetbench_metrics::hlog::write_timeline(out, agg, load)
    })?;
    if let Some(series) = server {
        put(dir, "server.json", &json_line(series, dir, "server.json")?)?;
    }
    put(dir, "junit.xml", crate::junit::junit(summary).as_bytes())?;
    put(
        dir,
        "summary.md",
        crate::markdown::markdown(summary).as_bytes(),
    )?;
    let page = crate::html_with(summary, agg, load, server, None);
    put(dir, "index.html", page.as_bytes())?;
    let pretty = context(serde_json::to_string_pretty(summary), || {
        format!("writing {}", dir.join("summary.json").display())
    })?;
    put(dir, "summary.json", (pretty + "\n").as_bytes())
}

/// `value` as one line of JSON.
fn json_line<T: serde::Serialize>(value: &T, dir: &Path, name: &str) -> Result<Vec<u8>> {
    let mut out = context(serde_json::to_vec(value), || {
        format!("writing {}", dir.join(name).display())
    })?;
    out.push(b'\n');
    Ok(out)
}

/// Writes `dir/name` whole: to a temporary name beside it, then renamed over it (a rename within
/// a directory is atomic).
fn put(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    put_with(dir, name, |out| out.write_all(bytes))
}

/// [`put`], the contents written by `write` through a buffer.
fn put_with(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let (tmp, path) = (dir.join(format!(".{name}.tmp")), dir.join(name));
    let written = std::fs::File::create(&tmp).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        write(&mut out)?;
        out.into_inner().map(drop).map_err(|e| e.into_error())
    });
    context(written, || format!("writing {}", tmp.display()))?;
    context(std::fs::rename(&tmp, &path), || {
        format!("renaming {} to {}", tmp.display(), path.display())
    })
}

/// A run directory's saved data.
pub struct Saved {
    pub summary: Summary,
    pub agg: Aggregate,
    pub load: LoadShape,
    /// `server.json`, when the target had a Metrics API.
    pub server: Option<ServerSeries>,
    pub scenario_toml: String,
    /// The interval log's start time.
    pub started: SystemTime,
}

/// The bytes of file `name` of run directory `dir`.
fn bytes(dir: &Path, name: &str) -> Result<Vec<u8>> {
    std::fs::read(dir.join(name)).map_err(|e| {
        format!(
            "{}: {e}; a run directory holds summary.json, timeline.json and histograms.hlog",
            dir.join(name).display()
        )
    })
}

/// A JSON file of run directory `dir`.
fn json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T> {
    context(serde_json::from_slice(&bytes(dir, name)?), || {
        dir.join(name).display().to_string()
    })
}

/// Loads the saved data of run directory `dir`.
pub fn read(dir: &Path) -> Result<Saved> {
    let summary: Summary = json(dir, "summary.json")?;
    let timeline: fleetbench_metrics::hlog::Timeline = json(dir, "timeline.json")?;
    // The interval log is read as it streams in, never held whole.
    let path = dir.join("histograms.hlog");
    let file = std::fs::File::open(&path).map_err(|e| {
        format!(
            "{}: {e}; a run directory holds summary.json, timeline.json and histograms.hlog",
            path.display()
        )
    })?;
    let (agg, started) = fleetbench_metrics::hlog::read(std::io::BufReader::new(file), &timeline)?;
    let scenario_toml =
        String::from_utf8_lossy(&bytes(dir, "scenario.toml").unwrap_or_default()).into_owned();
    let server = if dir.join("server.json").exists() {
        Some(json(dir, "server.json")?)
    } else {
        None
    };
    Ok(Saved {
        summary,
        agg,
        load: LoadShape {
            unit: timeline.load_unit,
            points: timeline.load_points,
            gauges: timeline.gauges,
        },
        server,
        scenario_toml,
        started: SystemTime::UNIX_EPOCH + started,
    })
}

/// Writes `dir`'s index.html from its saved data and an optional baseline comparison.
fn draw(
    dir: &Path,
    saved: &Saved,
    baseline: Option<&crate::compare::Comparison>,
) -> Result<PathBuf> {
    let html = crate::html_with(
        &saved.summary,
        &saved.agg,
        &saved.load,
        saved.server.as_ref(),
        baseline,
    );
    put(dir, "index.html", html.as_bytes())?;
    Ok(dir.join("index.html"))
}

/// `fleetbench report RUN_DIR`: index.html again, from the run's saved data alone (with its
/// baseline comparison, `compare.json`, when `fleetbench compare` left one).
pub fn rerender(dir: &Path) -> Result<PathBuf> {
    let saved = read(dir)?;
    let baseline: Option<crate::compare::Comparison> = if dir.join("compare.json").exists() {
        Some(json(dir, "compare.json")?)
    } else {
        None
    };
    draw(dir, &saved, baseline.as_ref())
}

/// `fleetbench compare BASELINE_DIR RUN_DIR`: the comparison, also kept as `RUN_DIR/compare.json`
/// and shown in `RUN_DIR/index.html`.
pub fn compare_dirs(
    base: &Path,
    run: &Path,
    tol: crate::compare::Tolerance,
) -> Result<crate::compare::Comparison> {
    let baseline: Summary = json(base, "summary.json")?;
    let saved = read(run)?;
    let mut c = crate::compare::compare(&baseline, &saved.summary, tol);
    if base.join("server.json").exists()
        && let Some(now) = &saved.server
    {
        let before: ServerSeries = json(base, "server.json")?;
        c.server = crate::compare::server_changes(&before, now);
    }
    let out = context(serde_json::to_string_pretty(&c), || "compare.json".into())?;
    context(std::fs::write(run.join("compare.json"), out + "\n"), || {
        format!("writing {}", run.join("compare.json").display())
    })?;
    draw(run, &saved, Some(&c))?;
    Ok(c)
}

/// The sum of piecewise-linear load shapes (shards run side by side).
fn add_loads(loads: &[&LoadShape]) -> LoadShape {
    let at = |l: &LoadShape, x: f64| -> f64 {
        let p = &l.points;
        match p.iter().position(|q| q.0 >= x) {
            None => p.last().map_or(0.0, |q| q.1),
            Some(0) => p.first().map_or(0.0, |q| if q.0 == x { q.1 } else { 0.0 }),
            Some(i) => {
                let (a, b) = (p[i - 1], p[i]);
                if b.0 > a.0 {
                    a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0)
                } else {
                    b.1
                }
            }
        }
    };
    let mut xs: Vec<f64> = loads
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    // Gauges were sampled once a window by each shard: the i-th samples add up.
    let longest = loads.iter().map(|l| l.gauges.len()).max().unwrap_or(0);
    let gauges = (0..longest)
        .map(|i| {
            let t = loads
                .iter()
                .find_map(|l| l.gauges.get(i).map(|g| g.0))
                .unwrap_or(0.0);
            let sum = |f: fn(&(f64, f64, f64)) -> f64| {
                loads
                    .iter()
                    .filter_map(|l| l.gauges.get(i))
                    .map(f)
                    .sum::<f64>()
            };
            (t, sum(|g| g.1), sum(|g| g.2))
        })
        .collect();
    LoadShape {
        unit: loads.first().map_or_else(String::new, |l| l.unit.clone()),
        points: xs
            .iter()
            .map(|&x| (x, loads.iter().map(|l| at(l, x)).sum()))
            .collect(),
        gauges,
    }
}

/// Shard runs (`--shard I/N`) merge only as a whole run: one run id, each shard of its count
/// exactly once; the error names the foreign, repeated or missing shard. Runs that are not shards
/// merge as they are.
fn check_shards(summaries: &[Summary], dirs: &[PathBuf]) -> Result<()> {
    let Some((first, first_dir)) = summaries.iter().zip(dirs).find(|(s, _)| s.shard.is_some())
    else {
        return Ok(());
    };
    let (run, count) = (&first.run_id, first.shard.map_or(0, |s| s.count));
    // Every shard's directory is given once: a count beyond the directories given is a missing
    // shard (or a crafted file), said without listing billions.
    if count as usize > summaries.len() {
        return Err(format!(
            "run {run}: {count} shards (from {}), but {} run directories given: merge every shard's run directory",
            first_dir.display(),
            summaries.len()
        ));
    }
    let mut seen: Vec<Option<&PathBuf>> = vec![None; count as usize];
    for (s, dir) in summaries.iter().zip(dirs) {
        let Some(shard) = s.shard else {
            return Err(format!(
                "{}: a whole run, but {} is a shard of run {run}: only the shards of one run merge",
                dir.display(),
                first_dir.display()
            ));
        };
        if &s.run_id != run || shard.count != count || shard.index >= count {
            return Err(format!(
                "{}: shard {}/{} of run {}, foreign to run {run} ({count} shards, from {})",
                dir.display(),
                shard.index,
                shard.count,
                s.run_id,
                first_dir.display()
            ));
        }
        if let Some(twin) = seen[shard.index as usize].replace(dir) {
            return Err(format!(
                "{} and {} are both shard {}/{count} of run {run}",
                twin.display(),
                dir.display(),
                shard.index
            ));
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| seen[*i as usize].is_none())
        .map(|i| format!("{i}/{count}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "run {run}: shard {} missing ({} of {count} given): merge every shard's run directory",
        missing.join(", "),
        summaries.len()
    ))
}

/// Why shard `b` (in `dir`) cannot merge with the first shard `a`: another scenario, another
/// build, a start a window or more apart (windows align by each shard's start).
fn check_alike(a: &Summary, b: &Summary, dir: &Path, window_us: u64) -> Result<()> {
    if a.scenario != b.scenario {
        return Err(format!(
            "{}: a shard of scenario {:?}, but the first shard ran {:?}: only shards of one scenario merge",
            dir.display(),
            b.scenario,
            a.scenario
        ));
    }
    if a.environment.fleetbench_version != b.environment.fleetbench_version
        || a.environment.git_commit != b.environment.git_commit
    {
        return Err(format!(
            "{}: made by fleetbench {} ({}), but the first shard by {} ({}): shards must come from one build",
            dir.display(),
            b.environment.fleetbench_version,
            b.environment.git_commit,
            a.environment.fleetbench_version,
            a.environment.git_commit
        ));
    }
    let start = |s: &Summary| {
        chrono::DateTime::parse_from_rfc3339(&s.started_at).map_or(0, |t| t.timestamp_micros())
    };
    // Slightly different clocks, under a window, are absorbed.
    let apart = (start(b) - start(a)).unsigned_abs();
    if apart >= window_us {
        return Err(format!(
            "{}: started {:.3} s apart from the first shard (windows are {:.3} s): run shards with the same --start-at",
            dir.display(),
            apart as f64 / 1e6,
            window_us as f64 / 1e6
        ));
    }
    Ok(())
}

/// A shard's run directory once its aggregate has been added in: what the merged run still needs.
struct Merged {
    summary: Summary,
    load: LoadShape,
    started: SystemTime,
}

/// `fleetbench merge SHARD_DIR... --out DIR`: one run from shard runs that ran side by side
/// (windows aligned by each shard's start). Histograms add exactly, so the merged percentiles are
/// those of one run over all the shards' samples; thresholds are the first shard's, evaluated again;
/// a shard that failed on its own (a probe, its delivery, a signal, an abort) fails the merged run.
/// The shards are read one at a time and their windows stay packed, so merging holds one shard's
/// files and the merged windows, whatever the number of shards or the length of the run.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<Summary> {
    let summaries: Vec<Summary> = shards
        .iter()
        .map(|d| json(d, "summary.json"))
        .collect::<Result<_>>()?;
    check_shards(&summaries, shards)?;
    drop(summaries);
    let mut agg: Option<Aggregate> = None;
    let mut first: Option<(Summary, String, Option<ServerSeries>)> = None;
    let mut merged: Vec<Merged> = Vec::new();
    for dir in shards {
        let saved = read(dir)?;
        let window_us = saved.agg.window_us;
        let agg = agg.get_or_insert_with(|| Aggregate::new(window_us));
        if let Some((a, ..)) = &first {
            check_alike(a, &saved.summary, dir, agg.window_us)?;
        }
        if saved.agg.window_us != agg.window_us {
            return Err(format!(
                "{}: windows of {} µs, but the first shard's are {} µs; merge runs with the same output.window",
                dir.display(),
                saved.agg.window_us,
                agg.window_us
            ));
        }
        agg.merge(&saved.agg);
        if first.is_none() {
            first = Some((saved.summary.clone(), saved.scenario_toml, saved.server));
        }
        merged.push(Merged {
            summary: saved.summary,
            load: saved.load,
            started: saved.started,
        });
    }
    let (Some(agg), Some((first, scenario_toml, server))) = (agg, first) else {
        return Err("merge needs at least one shard run directory".into());
    };
    let mut summary = merged_summary(&agg, &first, &merged)?;
    let load = add_loads(&merged.iter().map(|s| &s.load).collect::<Vec<_>>());
    let started = merged
        .iter()
        .map(|s| s.started)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::ZERO);
    let toml = format!(
        "# merged from {} shard runs: {}\n{}",
        shards.len(),
        shards
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        scenario_toml
    );
    summary.attach_shard_failures(shard_failures(&merged, shards));
    context(std::fs::create_dir_all(out), || {
        format!("creating {}", out.display())
    })?;
    // Every shard scraped the same project: the first shard's series stand for the run.
    write(out, &toml, &summary, &agg, &load, server.as_ref(), started)?;
    Ok(summary)
}

/// The merged run's summary: the shards' facts put together, the first shard's thresholds judged
/// again on the merged aggregate, deliveries added up, probes attached.
fn merged_summary(agg: &Aggregate, first: &Summary, merged: &[Merged]) -> Result<Summary> {
    let thresholds = first
        .thresholds
        .iter()
        .map(|t| fleetbench_scenario::Threshold::parse(&t.operation, &t.expr))
        .collect::<Result<Vec<_>>>()?;
    let all = || merged.iter().map(|m| &m.summary);
    let facts = RunFacts {
        run_id: {
            let mut ids: Vec<&str> = all().map(|s| s.run_id.as_str()).collect();
            ids.dedup();
            ids.join("+")
        },
        scenario: first.scenario.clone(),
        started_at: all()
            .map(|s| s.started_at.clone())
            .min()
            .unwrap_or_default(),
        duration_s: all().map(|s| s.duration_s).fold(0.0, f64::max),
        // Shards start their load together (--start-at): the earliest start, the longest phase.
        load_phase: all().filter_map(|s| s.load_phase.clone()).reduce(|a, b| {
            fleetbench_metrics::summary::LoadPhase {
                started_at: a.started_at.min(b.started_at),
                duration_s: a.duration_s.max(b.duration_s),
            }
        }),
        target: TargetFacts {
            kind: first.target.kind.clone(),
            url: first.target.url.clone(),
        },
        interrupted: all().any(|s| s.interrupted),
        aborted: all().find_map(|s| s.aborted.clone()),
        environment: first.environment.clone(),
    };
    let mut summary = Summary::new(agg, facts, &thresholds);
    attach_shards(&mut summary, merged);
    Ok(summary)
}

/// What each shard ran beside the fleet, into the merged summary: the deliveries added up and
/// judged as one plan; the probes' results (they run on one shard), named by shard when they clash.
fn attach_shards(summary: &mut Summary, merged: &[Merged]) {
    let deliveries = merged.iter().filter_map(|m| m.summary.delivery.as_ref());
    let interrupted = summary.interrupted;
    if let Some(d) = fleetbench_metrics::summary::Delivery::merged(deliveries, interrupted) {
        summary.attach_delivery(d);
    }
    for (k, m) in merged.iter().enumerate() {
        for (name, p) in &m.summary.probes {
            let key = if summary.probes.contains_key(name) {
                format!("{name} (shard {k})")
            } else {
                name.clone()
            };
            summary.probes.insert(key, p.clone());
        }
    }
}

/// Each way a shard failed on its own, naming the shard (`shard I/N`, or its directory for a run
/// that was not a shard): a failed probe, its delivery short of the plan, a stop signal, an abort.
/// A shard's crossed thresholds are not among them: the merged run judges its thresholds again
/// over every shard's samples.
fn shard_failures(merged: &[Merged], dirs: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for (m, dir) in merged.iter().zip(dirs) {
        let s = &m.summary;
        let who = match s.shard {
            Some(sh) => format!("shard {}/{} ({})", sh.index, sh.count, dir.display()),
            None => dir.display().to_string(),
        };
        for (name, p) in s.probes.iter().filter(|(_, p)| p.verdict == "fail") {
            out.push(format!("{who}: probe {name} failed: {}", p.title));
        }
        for short in s.delivery.iter().flat_map(|d| &d.shortfall) {
            out.push(format!("{who}: delivered less than planned: {short}"));
        }
        if s.interrupted {
            out.push(format!("{who}: stopped by a signal before its end"));
        }
        if let Some(why) = &s.aborted {
            out.push(format!("{who}: aborted: {why}"));
        }
    }
    out
}
