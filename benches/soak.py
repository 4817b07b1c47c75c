#!/usr/bin/env python3
"""Soak: the harness's own memory, sockets, threads and tasks through a long steady run (issue 9:
minutes long, a few thousand agents, RSS growth under 5 % after warm-up, no leaked sockets or
tasks). Not part of CI.

Starts `fleetbench sink` on 127.0.0.1 (unless SUPABASE_URL is set: then that target, with its keys
from the environment) and runs a steady fleet of N agents uploading a 10-row batch every 5 s for
the given minutes, sampling the `fleetbench run` process every 5 s from /proc: resident memory
(VmRSS), open file descriptors, sockets among them, threads; and the runtime's live tasks from the
run's own progress line. Warm-up is the first fifth of the hold. Growth = last sample against the
first after warm-up (and the highest against it).

Usage: python3 benches/soak.py [--agents 3000] [--minutes 10] [--out DIR]
(needs `cargo build --release -p fleetbench`)
"""

import argparse
import json
import os
import re
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "fleetbench")


def proc_figures(pid):
    """(rss KiB, fds, sockets, threads) of a live process, or None once it is gone."""
    try:
        status = open(f"/proc/{pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        fds = 0
        sockets = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    sockets += 1
            except OSError:
                pass
        return rss, fds, sockets, threads
    except (FileNotFoundError, ProcessLookupError, AttributeError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    hold_s = int(args.minutes * 60)
    env = dict(os.environ)
    sink = None
    if not env.get("SUPABASE_URL"):
        sink = subprocess.Popen([BIN, "sink", "--latency", "uniform:1ms..5ms"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        env["SUPABASE_URL"] = sink.stdout.readline().strip()
        env["SUPABASE_ANON_KEY"] = "soak"
        env["SUPABASE_SERVICE_ROLE_KEY"] = "soak"
        env.pop("SUPABASE_DB_URL", None)
    with tempfile.TemporaryDirectory() as work:
        scenario = os.path.join(work, "soak.toml")
        with open(scenario, "w") as f:
            f.write(f"""name = "soak"
description = "{args.agents} agents, a 10-row batch every 5 s, {hold_s} s"
[fleet]
agents = {args.agents}
[[load.stages]]
duration = "30s"
agents = {args.agents}
[[load.stages]]
duration = "{hold_s}s"
agents = {args.agents}
[workload]
sample_interval = "500ms"
upload_interval = "5s"
ingest = {{ rest = 1.0 }}
[output]
cleanup = false
""")
        run_dir = os.path.join(work, "run")
        run = subprocess.Popen([BIN, "run", scenario, "--out", run_dir], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tasks = {"now": None}
        lines = []

        def read_progress():
            for line in run.stderr:
                lines.append(line)
                m = re.search(r"tasks (\d+)", line)
                if m:
                    tasks["now"] = int(m.group(1))

        reader = threading.Thread(target=read_progress, daemon=True)
        reader.start()
        samples = []
        t0 = time.time()
        while run.poll() is None:
            f = proc_figures(run.pid)
            if f:
                samples.append({"t_s": round(time.time() - t0, 1), "rss_kib": f[0], "fds": f[1],
                                "sockets": f[2], "threads": f[3], "tasks": tasks["now"]})
            time.sleep(5)
        reader.join(timeout=5)
        if sink:
            sink.terminate()
        summary_path = os.path.join(run_dir, "summary.json")
        summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    # The hold starts after provisioning and the 30 s ramp; warm-up is its first fifth.
    load_at = next((s["t_s"] for s in samples if s["tasks"] is not None), samples[0]["t_s"])
    warm = load_at + 30 + hold_s / 5
    steady = [s for s in samples if s["t_s"] >= warm and s["tasks"] is not None]
    first, last = steady[0], steady[-1]
    peak = max(s["rss_kib"] for s in steady)
    growth = (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"] * 100
    peak_growth = (peak - first["rss_kib"]) / first["rss_kib"] * 100
    ops = summary.get("operations", {}).get("rest.insert_metrics", {})
    result = {
        "agents": args.agents, "hold_s": hold_s, "target": "fleetbench sink" if sink else "SUPABASE_URL",
        "warm_up_ends_s": warm,
        "rss_mib_after_warm_up": round(first["rss_kib"] / 1024, 1), "rss_mib_last": round(last["rss_kib"] / 1024, 1),
        "rss_mib_peak": round(peak / 1024, 1), "rss_growth_pct": round(growth, 2), "rss_peak_growth_pct": round(peak_growth, 2),
        "fds_after_warm_up": first["fds"], "fds_last": last["fds"], "fds_max": max(s["fds"] for s in steady),
        "sockets_after_warm_up": first["sockets"], "sockets_last": last["sockets"], "sockets_max": max(s["sockets"] for s in steady),
        "threads_after_warm_up": first["threads"], "threads_last": last["threads"],
        "tasks_after_warm_up": first["tasks"], "tasks_last": last["tasks"], "tasks_max": max(s["tasks"] for s in steady),
        "uploads": ops.get("count"), "upload_errors": ops.get("errors"), "rows": ops.get("rows"),
        "upload_p99_ms": ops.get("latency_ms", {}).get("p99"), "exit": run.returncode,
    }
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "samples.json"), "w") as f:
            json.dump(samples, f, indent=1)
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.out, "run-stderr.txt"), "w") as f:
            f.writelines(lines)


if __name__ == "__main__":
    main()
