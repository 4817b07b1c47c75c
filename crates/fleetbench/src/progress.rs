//! The live progress of a run: a one-line display refreshed every second on a terminal (indicatif),
//! plain lines every five seconds otherwise (CI logs); nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use fleetbench_fleet::Progress;
use indicatif::{ProgressBar, ProgressStyle};

fn line(p: &Progress, agents: u32, since: Instant, last_uploads: &mut (u64, Instant)) -> String {
    if p.load_started.load(Relaxed) == 0 {
        return format!(
            "provisioning {}/{agents} agents",
            p.provisioned.load(Relaxed)
        );
    }
    let uploads = p.uploads.load(Relaxed);
    let (prev, at) = *last_uploads;
    let rate = (uploads - prev) as f64 / at.elapsed().as_secs_f64().max(1e-3);
    *last_uploads = (uploads, Instant::now());
    let mut text = format!(
        "{:>4}s  agents {}/{agents}  uploads {uploads} ({rate:.0}/s)  rows {}  errors {}  in flight {}  backlog {}  tasks {}",
        since.elapsed().as_secs(),
        p.active.load(Relaxed),
        p.rows_written.load(Relaxed),
        p.errors.load(Relaxed),
        p.in_flight.load(Relaxed),
        p.backlog_rows.load(Relaxed),
        // The runtime's live tasks: flat through a steady run, or something leaks.
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
    );
    // The generator says so as soon as it falls behind its own schedule.
    let (late, dropped) = (p.late.load(Relaxed), p.dropped.load(Relaxed));
    if late + dropped > 0 {
        text.push_str(&format!(
            "  BEHIND SCHEDULE: {late} late, {dropped} dropped"
        ));
    }
    text
}

/// Shows progress until `done` resolves.
pub async fn show(p: Arc<Progress>, agents: u32, mut done: tokio::sync::watch::Receiver<bool>) {
    if crate::terminal::output().quiet {
        let _ = done.changed().await;
        return;
    }
    let since = Instant::now();
    let mut last = (0, Instant::now());
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = ProgressBar::new_spinner();
        b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
        b
    });
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let text = line(&p, agents, since, &mut last);
                match &bar {
                    Some(b) => b.set_message(text),
                    None => eprintln!("run: {text}"),
                }
            }
            _ = done.changed() => break,
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}
