#!/usr/bin/env python3
"""Resident memory of idle agents (issue 5: 100,000 idle agents in under 200 MiB, <= 2 KiB each).

Starts `fleetbench sink`, then `fleetbench run` against it with N agents that are provisioned
(admin user, password sign-in with a GoTrue-sized JWT, a device), hold their tokens, telemetry
state and schedule, and wait for an upload due once an hour. The run process's VmRSS is sampled
every 250 ms from /proc; the idle figure is the median RSS over the hold, after provisioning.
The same is done with 1 agent in the same run of this script, and the per-agent cost is the
difference divided by N.

Usage: python3 benches/idle_agents.py [--agents 100000] [--hold 40] [--out DIR]
(needs `cargo build --release -p fleetbench`).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "fleetbench")

SCENARIO = """name = "idle"
[fleet]
agents = {n}
provision_concurrency = 256
[[load.stages]]
duration = "0s"
agents = {n}
[[load.stages]]
duration = "{hold}s"
agents = {n}
[workload]
sample_interval = "1h"
upload_interval = "1h"
ingest = {{ rest = 1.0 }}
"""


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def measure(n, hold, sink_url, workdir):
    scenario = os.path.join(workdir, f"idle-{n}.toml")
    with open(scenario, "w") as f:
        f.write(SCENARIO.format(n=n, hold=hold))
    env = dict(os.environ, SUPABASE_URL=sink_url, SUPABASE_ANON_KEY="x", SUPABASE_SERVICE_ROLE_KEY="x")
    proc = subprocess.Popen(
        [BIN, "run", scenario, "--out", os.path.join(workdir, f"run-{n}")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    loaded = threading.Event()

    def watch_stderr():
        for line in proc.stderr:
            if " agents " in line and "/" in line and line.startswith("run:") and "provisioning" not in line:
                loaded.set()

    threading.Thread(target=watch_stderr, daemon=True).start()
    samples = []  # (seconds, rss KiB, load phase?)
    start = time.monotonic()
    while proc.poll() is None:
        r = rss_kib(proc.pid)
        if r is not None:
            samples.append((time.monotonic() - start, r, loaded.is_set()))
        time.sleep(0.25)
    proc.wait()
    hold = [r for _, r, phase in samples if phase]
    # Drop the first and last 10 % of the hold (edges of provisioning and shutdown).
    cut = len(hold) // 10
    steady = hold[cut: len(hold) - cut] or hold
    return {
        "agents": n,
        "exit": proc.returncode,
        "peak_rss_kib": max(r for _, r, _ in samples),
        "idle_rss_kib": statistics.median(steady) if steady else None,
        "samples": samples,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=100_000)
    ap.add_argument("--hold", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        sink = subprocess.Popen([BIN, "sink", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = sink.stdout.readline().strip()
        try:
            one = measure(1, args.hold, url, work)
            many = measure(args.agents, args.hold, url, work)
        finally:
            sink.terminate()
            sink.wait()
    per_agent = (many["idle_rss_kib"] - one["idle_rss_kib"]) / args.agents
    summary = {
        "agents": args.agents,
        "idle_rss_mib": many["idle_rss_kib"] / 1024,
        "peak_rss_mib": many["peak_rss_kib"] / 1024,
        "baseline_1_agent_rss_mib": one["idle_rss_kib"] / 1024,
        "per_agent_kib": per_agent,
        "target": "100,000 idle agents < 200 MiB resident, <= 2 KiB each",
        "met": many["idle_rss_kib"] / 1024 < 200 and per_agent <= 2.0,
        "exit_codes": [one["exit"], many["exit"]],
        "peers_measured_elsewhere_kib_per_user": {"goose 0.19": "120-160", "k6": "120-160", "locust": "11-16"},
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        with open(os.path.join(args.out, "rss.csv"), "w") as f:
            f.write("agents,seconds,rss_kib,load_phase\n")
            for run in (one, many):
                for t, r, phase in run["samples"]:
                    f.write(f"{run['agents']},{t:.2f},{r},{int(phase)}\n")


if __name__ == "__main__":
    main()
