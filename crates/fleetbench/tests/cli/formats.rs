//! The formats users' tools read, checked with those tools: `junit.xml` with junitparser,
//! `histograms.hlog` with HdrHistogram's own Python decoder (independent of the Rust crate that
//! wrote it), the man page with groff, the bash completions with bash; and the terminal: the
//! per-operation table with units, `--json`, `--quiet`, colour only without `NO_COLOR` (under a
//! pseudo-terminal, as a user sees it), `--version` with the commit.

use super::*;

fn readers() -> PathBuf {
    let paths = StackPaths {
        home: workspace_root().join(".fleetbench"),
        instance: tempfile::tempdir().unwrap().keep(),
    };
    fleetbench_stack::install::ensure_readers(&paths, &mut |l| eprintln!("[readers] {l}"))
        .expect("installing the readers")
}

/// A 3 s run of 8 agents against a 2 ms sink: one threshold holds, one cannot.
const SCENARIO: &str = "name = \"formats\"\n[fleet]\nagents = 8\n[load]\ngrace = \"2s\"\n\
    [[load.stages]]\nduration = \"0s\"\nagents = 8\n[[load.stages]]\nduration = \"3s\"\nagents = 8\n\
    [workload]\nsample_interval = \"100ms\"\nupload_interval = \"200ms\"\ningest = { rest = 1.0 }\n\
    [thresholds]\n\"rest.insert_metrics\" = [\"p(99) < 5s\", \"p(50) < 1us\"]\n";

/// Runs [`SCENARIO`] against `url` with `extra` flags: (exit code, stdout, stderr, run dir).
fn run_formats(url: &str, dir: &Path, extra: &[&str]) -> (Option<i32>, String, String, PathBuf) {
    let scenario = dir.join("formats.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let out = dir.join(format!("run{}", extra.join("")));
    let o = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .env("SUPABASE_URL", url)
        .env("SUPABASE_ANON_KEY", "anon")
        .env("SUPABASE_SERVICE_ROLE_KEY", "service")
        .env_remove("SUPABASE_DB_URL")
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        out,
    )
}

/// What a Python snippet printed as JSON.
fn python_json(python: &Path, code: &str, arg: &Path) -> serde_json::Value {
    let o = Command::new(python)
        .args(["-c", code])
        .arg(arg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

const JUNIT: &str = r#"
import json, sys
from junitparser import JUnitXml, Failure, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
cases = []
for suite in xml:
    for c in suite:
        r = [{"type": x.type, "message": x.message, "failure": isinstance(x, Failure)} for x in c.result]
        cases.append({"classname": c.classname, "name": c.name, "time": c.time, "result": r})
    stamp = suite.timestamp
print(json.dumps({"tests": xml.tests, "failures": xml.failures, "timestamp": stamp, "cases": cases}))
"#;

/// Each `Tag=…` line of the log decoded by HdrHistogram's Python implementation: per tag, the
/// windows' counts added up and, for the whole-run totals, the count and p50/p99/max.
const HLOG: &str = r#"
import json, sys
from hdrh.histogram import HdrHistogram
lines = open(sys.argv[1]).read().splitlines()
out = {"first": lines[0], "legend": None, "windows": {}, "totals": {}}
for i, line in enumerate(lines):
    if line.startswith('"StartTimestamp"'):
        out["legend"] = i
    if not line.startswith("Tag="):
        continue
    tag, start, length, mx, payload = line[4:].split(",", 4)
    h = HdrHistogram.decode(payload)
    if tag.endswith("/service/total") or (tag.endswith("/service")):
        continue
    if tag.endswith("/total"):
        out["totals"][tag[:-6]] = {"count": h.get_total_count(),
            "p50": h.get_value_at_percentile(50), "p99": h.get_value_at_percentile(99),
            "max": h.get_max_value()}
    else:
        out["windows"][tag] = out["windows"].get(tag, 0) + h.get_total_count()
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_and_hlog_read_by_their_own_tools_and_the_terminal_table() {
    let python = tokio::task::spawn_blocking(readers).await.unwrap();
    let (url, _sink) = sink("2ms").await;
    let dir = tempfile::tempdir().unwrap();
    let (d, u) = (dir.path().to_path_buf(), url.clone());
    let (code, stdout, stderr, out) = tokio::task::spawn_blocking(move || run_formats(&u, &d, &[]))
        .await
        .unwrap();
    assert_eq!(code, Some(99), "{stderr}");
    assert_eq!(stdout.trim(), out.join("index.html").display().to_string());
    let summary = complete_run_dir(&out, "formats");
    let op = &summary["operations"]["rest.insert_metrics"];
    let count = op["count"].as_u64().unwrap();
    assert!(count > 50, "{op}");

    // The terminal: a table row for the operation with its count and units, thresholds with units.
    let row = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("rest.insert_metrics "))
        .unwrap_or_else(|| panic!("no table row in:\n{stderr}"));
    assert!(
        row.contains(&format!(" {count} ")) && row.contains("/s"),
        "{row}"
    );
    assert!(row.contains(" ms") || row.contains(" µs"), "{row}");
    let failed = stderr.lines().find(|l| l.contains("p(50) < 1us")).unwrap();
    assert!(
        failed.contains("FAIL") && failed.contains(" ms"),
        "{failed}"
    );

    // junitparser: a case per threshold, the delivery case and the abort case; typed failures.
    let j = python_json(&python, JUNIT, &out.join("junit.xml"));
    assert_eq!(j["tests"], 4, "{j}");
    assert_eq!(j["failures"], 1, "{j}");
    assert_eq!(j["timestamp"].as_str().unwrap().len(), 19, "{j}");
    let failing: Vec<&serde_json::Value> = j["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["result"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(failing.len(), 1, "{j}");
    assert_eq!(failing[0]["name"], "p(50) < 1us");
    assert_eq!(failing[0]["result"][0]["type"], "threshold");
    assert!(
        failing[0]["result"][0]["message"]
            .as_str()
            .unwrap()
            .contains(" ms")
    );
    let load_s = summary["load_phase"]["duration_s"].as_f64().unwrap();
    assert!(
        (failing[0]["time"].as_f64().unwrap() - load_s).abs() < 0.01,
        "{j}"
    );

    // HdrHistogram's own decoder reads the same counts and percentiles the summary reports.
    let h = python_json(&python, HLOG, &out.join("histograms.hlog"));
    assert_eq!(h["first"], "#[Histogram log format version 1.3]", "{h}");
    assert!(h["legend"].as_u64().is_some(), "{h}");
    assert_eq!(h["windows"]["rest.insert_metrics"].as_u64(), Some(count));
    let total = &h["totals"]["rest.insert_metrics"];
    assert_eq!(total["count"].as_u64(), Some(count));
    for (p, key) in [("p50", "p50"), ("p99", "p99"), ("max", "max")] {
        let decoded_ms = total[key].as_f64().unwrap() / 1000.0;
        let reported = op["latency_ms"][p].as_f64().unwrap();
        assert!(
            (decoded_ms - reported).abs() <= reported * 0.001 + 0.001,
            "{p}: decoded {decoded_ms} ms, summary {reported} ms"
        );
    }
    // rate_per_s is over the load phase.
    let rate = op["rate_per_s"].as_f64().unwrap();
    assert!(
        (rate - count as f64 / load_s).abs() < 1e-6,
        "{rate} vs {count}/{load_s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_quiet_and_colour_as_asked() {
    let (url, _sink) = sink("2ms").await;
    let dir = tempfile::tempdir().unwrap();
    let (d, u) = (dir.path().to_path_buf(), url.clone());
    let (code, stdout, stderr, out) =
        tokio::task::spawn_blocking(move || run_formats(&u, &d, &["--json", "--quiet"]))
            .await
            .unwrap();
    assert_eq!(code, Some(99), "{stderr}");
    // --json: the summary on stdout, the same as the file.
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed, complete_run_dir(&out, "json"));
    // --quiet: no table, no progress, no run lines; the failure is still said.
    assert!(
        !stderr.contains("operation ") && !stderr.contains("run: "),
        "{stderr}"
    );
    assert!(stderr.contains("thresholds crossed"), "{stderr}");

    // Under a pseudo-terminal: colour unless NO_COLOR is set.
    for (no_color, coloured) in [(false, true), (true, false)] {
        let scenario = dir.path().join("formats.toml");
        let cmd = format!(
            "{} run {} --out {}",
            env!("CARGO_BIN_EXE_fleetbench"),
            scenario.display(),
            dir.path().join(format!("tty-{no_color}")).display()
        );
        let mut script = Command::new("script");
        script
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .env("SUPABASE_URL", &url)
            .env("SUPABASE_ANON_KEY", "anon")
            .env("SUPABASE_SERVICE_ROLE_KEY", "service")
            .env("TERM", "xterm")
            .env_remove("SUPABASE_DB_URL")
            .env_remove("CLICOLOR_FORCE");
        if no_color {
            script.env("NO_COLOR", "1");
        } else {
            script.env_remove("NO_COLOR");
        }
        let o = tokio::task::spawn_blocking(move || script.output().unwrap())
            .await
            .unwrap();
        let seen = String::from_utf8_lossy(&o.stdout);
        assert!(seen.contains("p(50) < 1us"), "{seen}");
        assert_eq!(
            seen.contains("\x1b[3"),
            coloured,
            "NO_COLOR={no_color}: {seen}"
        );
    }
}

#[test]
fn man_page_completions_and_version() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    // --version names the commit this checkout is at.
    let head = head_commit();
    let version = run(&["--version"]);
    assert!(version.contains(&head), "{version} vs {head}");

    // The man page: groff formats it without a warning, and it names every command.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("fleetbench.1");
    std::fs::write(&page, run(&["man"])).unwrap();
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        groff.status.success() && groff.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&groff.stderr)
    );
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(
        text.starts_with(".ie") || text.contains(".TH fleetbench 1"),
        "{text:.300}"
    );
    for command in ["run", "merge", "compare", "capacity", "completions", "man"] {
        assert!(
            text.contains(&format!("fleetbench\\-{command}")) || text.contains(command),
            "{command}"
        );
    }

    // bash reads the completion script, and completing `fleetbench ru` offers `run`.
    let script = dir.path().join("fleetbench.bash");
    std::fs::write(&script, run(&["completions", "bash"])).unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && COMP_WORDS=(fleetbench ru) COMP_CWORD=1 && _fleetbench fleetbench ru fleetbench && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&o.stdout);
    assert!(
        offered.lines().any(|l| l == "run"),
        "{offered}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every run directory committed under `reports/benchmarks/` (one with an `index.html`) holds its
/// saved data, and `fleetbench report` draws its page again from it (with today's page code): every
/// operation with its count, and the Server section when the run kept the server's series.
#[test]
fn committed_benchmark_runs_redraw_as_they_were() {
    let root = workspace_root().join("reports/benchmarks");
    let mut redrawn = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("index.html").is_file() || !dir.join("summary.json").is_file() {
            continue;
        }
        for saved in ["histograms.hlog", "timeline.json", "scenario.toml"] {
            assert!(
                dir.join(saved).is_file(),
                "{}: a run directory without {saved} cannot be redrawn",
                dir.display()
            );
        }
        let copy = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, copy.path().join(f.file_name().unwrap())).unwrap();
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
            .arg("report")
            .arg(copy.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let page = std::fs::read_to_string(copy.path().join("index.html")).unwrap();
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        for (op, figures) in summary["operations"].as_object().unwrap() {
            let row = format!("<td>{op}</td><td>{}</td>", figures["count"]);
            assert!(page.contains(&row), "{}: no row {row}", dir.display());
        }
        assert_eq!(
            page.contains("<h2>Server</h2>"),
            dir.join("server.json").is_file(),
            "{}",
            dir.display()
        );
        redrawn += 1;
    }
    assert!(
        redrawn >= 1,
        "no committed run directory under {}",
        root.display()
    );
}
