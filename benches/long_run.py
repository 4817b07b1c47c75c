#!/usr/bin/env python3
"""Long runs compressed: the harness's resident memory through the load, the end-of-run merge and the
writing of the run directory, for runs of growing length, with and without live export, and for
`fleetbench merge` of N shards of one run (issue 30). Not part of CI.

Hours are compressed with tiny windows: at `--window 20ms`, 120 s of load make 6,000 windows per
operation, what 100 minutes make at the default 1 s. Each `fleetbench run` runs against
`fleetbench sink` on 127.0.0.1 and is sampled from /proc every 50 ms: VmRSS, and the kernel's own
peak resident set at its exit (wait4's ru_maxrss, which catches a peak between two samples). A sample is "load" while the
run's load phase lasts (its start and length from summary.json, on the wall clock the samples
share) and "after" once it has ended: the merge of the workers' windows, the probes' and
collectors' samples, and the run directory. The figure the issue asks for is after / load.

Then SHARDS shards of the longest run side by side (`--shard I/N`, one run id, one start), and
`fleetbench merge` of them sampled the same way, beside the merge of one shard alone.

Usage: python3 benches/long_run.py [--agents 200] [--seconds 30,60,120] [--window 20ms]
                                   [--shards 8] [--no-export] [--out DIR]
The real soak: --seconds 3600 --window 1s --shards 1 --no-export.
(needs `cargo build --release -p fleetbench`; FLEETBENCH_BIN names another build)
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FLEETBENCH_BIN", os.path.join(ROOT, "target", "release", "fleetbench"))


def kib(pid, field):
    """A /proc/PID/status figure in KiB, or None once the process is gone."""
    try:
        m = re.search(field + r":\s+(\d+)", open(f"/proc/{pid}/status").read())
        return int(m.group(1)) if m else None
    except (FileNotFoundError, ProcessLookupError):
        return None


def sampled(argv, env):
    """Runs argv, sampling its memory every 50 ms: (exit code, stderr, samples, peak KiB). The peak
    is the kernel's own account of the child's largest resident set (wait4's ru_maxrss), which a
    sample can miss when the process ends between two."""
    p = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err, out = [], []
    readers = [threading.Thread(target=lambda: err.extend(p.stderr), daemon=True),
               threading.Thread(target=lambda: out.extend(p.stdout), daemon=True)]
    for r in readers:
        r.start()
    samples = []
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        rss = kib(p.pid, "VmRSS")
        if rss:
            samples.append((time.time(), rss))
        time.sleep(0.05)
    for r in readers:
        r.join(timeout=5)
    return p.returncode, "".join(err), samples, usage.ru_maxrss


def scenario(path, agents, seconds, window):
    with open(path, "w") as f:
        f.write(f"""name = "long-run"
description = "{agents} agents, {seconds} s at {window} windows"
[fleet]
agents = {agents}
[[load.stages]]
duration = "0s"
agents = {agents}
[[load.stages]]
duration = "{seconds}s"
agents = {agents}
[workload]
sample_interval = "100ms"
upload_interval = "1s"
ingest = {{ rest = 1.0 }}
[output]
cleanup = false
window = "{window}"
""")


def window_s(spec):
    """`20ms` or `1s` in seconds."""
    return float(spec[:-2]) / 1000 if spec.endswith("ms") else float(spec.rstrip("s"))


def wall(rfc3339):
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def one_run(env, work, agents, seconds, window, extra, label):
    path = os.path.join(work, f"{label}.toml")
    scenario(path, agents, seconds, window)
    out = os.path.join(work, label)
    code, err, samples, hwm = sampled([BIN, "run", path, "--out", out, "--quiet", *extra], env)
    summary = json.load(open(os.path.join(out, "summary.json")))
    start = wall(summary["load_phase"]["started_at"])
    end = start + summary["load_phase"]["duration_s"]
    load = [r for t, r in samples if start + 1 <= t <= end]
    after = [r for t, r in samples if t > end]
    ops = summary["operations"]["rest.insert_metrics"]
    return {
        "label": label, "seconds": seconds, "window": window, "agents": agents, "exit": code,
        "windows_per_operation": round(seconds / window_s(window)),
        "load_peak_mib": round(max(load) / 1024, 1), "load_last_mib": round(load[-1] / 1024, 1),
        "after_load_peak_mib": round(max(after or [0]) / 1024, 1),
        "peak_mib": round(hwm / 1024, 1),
        "after_over_load": round(max(after or [0]) / max(load), 2),
        "peak_over_load": round(hwm / max(load), 2),
        "uploads": ops["count"], "late": summary["late"], "dropped": summary["dropped"],
        "p99_ms": ops["latency_ms"]["p99"], "samples": len(samples), "stderr_tail": err[-2000:],
    }, out


def shards(env, work, agents, seconds, window, n):
    path = os.path.join(work, "sharded.toml")
    scenario(path, agents, seconds, window)
    run_id = str(uuid.uuid4())
    start = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    procs = []
    for i in range(n):
        out = os.path.join(work, f"shard-{i}")
        procs.append((out, subprocess.Popen(
            [BIN, "run", path, "--shard", f"{i}/{n}", "--run-id", run_id, "--start-at", start,
             "--out", out, "--quiet"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    dirs = []
    for out, p in procs:
        _, err = p.communicate()
        if p.returncode not in (0, 99):
            raise SystemExit(f"shard {out} exited {p.returncode}: {err[-2000:]}")
        dirs.append(out)
    rows = []
    # The peer: one shard's directory read and drawn again (`report`), beside the merge of all.
    for label, argv in [("report of 1 shard", ["report", dirs[0]]),
                        (f"merge of {n} shards", ["merge", *dirs, "--out", os.path.join(work, "merged")])]:
        code, err, samples, hwm = sampled([BIN, *argv, "--quiet"], env)
        if label.startswith("report"):
            summary = {}
        else:
            summary = json.load(open(os.path.join(work, "merged", "summary.json")))
        rows.append({
            "label": label, "exit": code, "peak_mib": round(hwm / 1024, 1),
            "seconds": round(samples[-1][0] - samples[0][0], 2) if samples else 0.0,
            "uploads": summary.get("operations", {}).get("rest.insert_metrics", {}).get("count"),
            "stderr_tail": err[-1000:],
        })
    shard_uploads = sum(json.load(open(os.path.join(d, "summary.json")))["operations"]["rest.insert_metrics"]["count"] for d in dirs)
    rows.append({"label": "uploads summed over the shards' own summaries", "uploads": shard_uploads})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--seconds", default="30,60,120")
    ap.add_argument("--window", default="20ms")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--no-export", action="store_true", help="skip the run with live export")
    ap.add_argument("--shards-only", action="store_true", help="only the shards and their merge")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sink = subprocess.Popen([BIN, "sink", "--latency", "uniform:1ms..5ms"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    env = dict(os.environ)
    env["SUPABASE_URL"] = sink.stdout.readline().strip()
    env["SUPABASE_ANON_KEY"] = env["SUPABASE_SERVICE_ROLE_KEY"] = "long-run"
    env["FLEETBENCH_ALLOW_HOSTS"] = "127.0.0.1"
    for k in ["SUPABASE_DB_URL", "SUPABASE_DB_SESSION_URL"]:
        env.pop(k, None)
    lengths = [int(s) for s in args.seconds.split(",")]
    results = {"runs": [], "merge": []}
    try:
        with tempfile.TemporaryDirectory() as work:
            for s in ([] if args.shards_only else lengths):
                r, _ = one_run(env, work, args.agents, s, args.window, [], f"run-{s}s")
                results["runs"].append(r)
                print({k: v for k, v in r.items() if k != "stderr_tail"}, flush=True)
            if not (args.no_export or args.shards_only):
                closed = ["--prometheus-remote-write", "http://127.0.0.1:9/api/v1/write"]
                r, _ = one_run(env, work, args.agents, lengths[-1], args.window, closed, f"export-{lengths[-1]}s")
                results["runs"].append(r)
                print({k: v for k, v in r.items() if k != "stderr_tail"}, flush=True)
            if args.shards > 1:
                results["merge"] = shards(env, work, args.agents, lengths[-1], args.window, args.shards)
            for m in results["merge"]:
                print({k: v for k, v in m.items() if k != "stderr_tail"}, flush=True)
    finally:
        sink.terminate()
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
