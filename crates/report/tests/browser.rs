//! The page in a real browser (Debian `chromium`, headless): it renders, logs no console error,
//! makes no network request of its own (every request goes to a proxy this test runs, and a page
//! that does reach out is caught the same way), and a screenshot is left for the test log. A golden
//! file locks the page's structure (headings, table columns, charts and their series);
//! `UPDATE_GOLDEN=1` rewrites it.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use fleetbench_metrics::{Aggregate, Outcome, Sample, Summary};
use fleetbench_report::LoadShape;

/// A deterministic run: two operations over 12 windows, a failing threshold, some errors.
fn page() -> String {
    let mut agg = Aggregate::new(1_000_000);
    for i in 0..1_200u64 {
        let op = if i % 4 == 0 {
            "auth.refresh"
        } else {
            "rest.insert_metrics"
        };
        let at = i * 10_000;
        agg.add(&Sample {
            operation: op,
            intended_us: at,
            sent_us: at + (i % 7) * 100,
            done_us: at + 2_000 + (i * 37 % 9_000),
            outcome: if i % 97 == 0 {
                Outcome::Error("http_429".into())
            } else {
                Outcome::Ok
            },
            rows: 10,
            bytes: 400,
        });
    }
    let thresholds = vec![
        fleetbench_scenario::Threshold::parse("rest.insert_metrics", "p(99) < 5ms").unwrap(),
        fleetbench_scenario::Threshold::parse("rest.insert_metrics", "error_rate < 5%").unwrap(),
    ];
    let facts = common::facts("browser", "browser", 12.0);
    let summary = Summary::new(&agg, facts, &thresholds);
    let load = LoadShape {
        unit: "active agents".into(),
        points: vec![(0.0, 0.0), (2.0, 40.0), (12.0, 40.0)],
        gauges: (0..13)
            .map(|t| (f64::from(t), f64::from(40.min(20 * t)), 3.0))
            .collect(),
    };
    fleetbench_report::html(&summary, &agg, &load)
}

fn chromium() -> &'static str {
    let found = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        // The project installs what its tests need, as the stack installs PgBouncer.
        let status = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get (Debian) to install chromium");
        assert!(status.success(), "apt-get install chromium failed");
    }
    "chromium"
}

/// Opens `file` headless with every request sent to a local proxy; (stderr, DOM, requests seen).
fn open(file: &Path, screenshot: Option<&Path>) -> (String, String, Vec<String>) {
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = proxy.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in proxy.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut head = [0u8; 512];
            let n = conn.read(&mut head).unwrap_or(0);
            let line = String::from_utf8_lossy(&head[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            // Chromium opens spare connections to its proxy ahead of need and may close one
            // unused: a connection that sends no request line asked for nothing.
            if !line.is_empty() {
                log.lock().unwrap().push(line);
            }
        }
    });
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        format!("--proxy-server=http://127.0.0.1:{port}"),
        "--proxy-bypass-list=<-loopback>".into(),
        "--enable-logging=stderr".into(),
        "--v=0".into(),
        "--window-size=1200,2400".into(),
    ];
    match screenshot {
        Some(png) => args.push(format!("--screenshot={}", png.display())),
        None => args.push("--dump-dom".into()),
    }
    args.push(format!("file://{}", file.display()));
    let out = Command::new(chromium())
        .args(&args)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = seen.lock().unwrap().clone();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        requests,
    )
}

/// Requests that are not the browser's own housekeeping (its clock, accounts and update hosts).
fn from_the_page(requests: &[String]) -> Vec<String> {
    let own = ["google.com", "googleapis.com", "gvt1.com", "gstatic.com"];
    requests
        .iter()
        .filter(|r| !own.iter().any(|h| r.contains(h)))
        .cloned()
        .collect()
}

#[test]
fn the_page_renders_in_chromium_without_errors_or_requests() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.html");
    let html = page();
    std::fs::write(&file, &html).unwrap();
    let (stderr, dom, requests) = open(&file, None);
    assert!(
        !stderr.contains("CONSOLE") && !stderr.contains("Uncaught"),
        "console output:\n{stderr}"
    );
    assert_eq!(
        from_the_page(&requests),
        Vec::<String>::new(),
        "the page made requests"
    );
    // The browser built every chart with its lines.
    assert_eq!(
        dom.matches("<svg class=\"chart\"").count(),
        2 + 2 * 2,
        "{dom}"
    );
    assert!(dom.matches("<polyline").count() >= 10);
    // A screenshot for the test log.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let _ = open(&file, Some(&shots));
    let png = std::fs::read(&shots).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
    println!("screenshot: {}", shots.display());

    // The check can fail: the same page with one external image is caught by the proxy.
    let leaky = dir.path().join("leaky.html");
    std::fs::write(
        &leaky,
        html.replace(
            "</body>",
            "<img src=\"http://fleetbench-canary.test/x.png\"></body>",
        ),
    )
    .unwrap();
    let (_, _, requests) = open(&leaky, None);
    assert!(
        from_the_page(&requests)
            .iter()
            .any(|r| r.contains("fleetbench-canary.test")),
        "{requests:?}"
    );
}

/// Headings, table columns, chart titles and series, one per line.
fn structure(html: &str) -> String {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let tag: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let text = |r: &str| {
            r.split_once('>')
                .map(|(_, t)| t.split('<').next().unwrap_or("").trim().to_string())
                .unwrap_or_default()
        };
        match tag.as_str() {
            "h1" | "h2" | "h3" => out.push(format!("{tag}: {}", text(rest))),
            "th" => out.push(format!("  th: {}", text(rest))),
            "title" => out.push(format!("title: {}", text(rest))),
            "polyline" => {
                let name = rest
                    .split("data-series=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("");
                out.push(format!("  series: {name}"));
            }
            _ => {}
        }
    }
    out.join("\n") + "\n"
}

#[test]
fn the_structure_matches_the_golden_file() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/structure.txt");
    let now = structure(&page());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &now).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .expect("tests/golden/structure.txt (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        now, want,
        "the page's structure changed; if that is intended, run with UPDATE_GOLDEN=1 and commit the file"
    );
}
