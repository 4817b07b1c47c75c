#!/usr/bin/env python3
"""CPU the harness uses during a steady fleet run against the embedded stack (issue 5: 10,000
agents for 5 minutes with the harness under half a core).

Runs `scenarios/steady.toml` with the fleet raised to N agents (same cadence: 10 samples uploaded
every 10 s, so N/10 uploads/s and N rows/s) against the local stack (`fleetbench stack up` first),
and samples every second, from /proc, the CPU time (user + system) of the `fleetbench run` process
and of the stack's processes (Postgres, PgBouncer, the stack daemon). The harness figure is the CPU
time used over the 5-minute hold divided by its wall time, in cores; provisioning and the ramp are
reported apart.

Usage: python3 benches/steady_cpu.py [--agents 10000] [--out DIR]
(needs `cargo build --release -p fleetbench` and a running stack)
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "fleetbench")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (FileNotFoundError, ProcessLookupError):
        return None


def stack_pids():
    """Processes of the stack: postgres, pgbouncer, deno and the stack daemon (not this run)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "postgres" in cmd or "pgbouncer" in cmd or "deno" in cmd or ("fleetbench" in cmd and " stack serve" in cmd):
            pids.append(int(d))
    return pids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    n = args.agents
    with tempfile.TemporaryDirectory() as work:
        run_dir = os.path.join(work, "run")
        cmd = [BIN, "run", os.path.join(ROOT, "scenarios", "steady.toml"), "--out", run_dir,
               "--set", f"fleet.agents={n}", "--set", f"load.stages.0.agents={n}", "--set", f"load.stages.1.agents={n}",
               "--set", "fleet.provision_concurrency=64"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        phase = {"name": "provisioning"}
        log = []

        def watch():
            for line in proc.stderr:
                log.append(line)
                if line.startswith("run:") and "provisioning" not in line and " agents " in line:
                    phase["name"] = "load"

        threading.Thread(target=watch, daemon=True).start()
        stack = stack_pids()
        samples = []  # (wall s, phase, harness cpu s, stack cpu s)
        t0 = time.monotonic()
        while proc.poll() is None:
            h = cpu_s(proc.pid)
            s = sum(filter(None, (cpu_s(p) for p in stack)))
            if h is not None:
                samples.append((time.monotonic() - t0, phase["name"], h, s))
            time.sleep(1.0)
        proc.wait()
        report = proc.stdout.read().strip()
        summary_run = json.load(open(os.path.join(run_dir, "summary.json")))
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            shutil.copy(os.path.join(run_dir, "summary.json"), os.path.join(args.out, "run-summary.json"))
            with open(os.path.join(args.out, "run.log"), "w") as f:
                f.writelines(log)
    load = [x for x in samples if x[1] == "load"]
    ramp_s = 60.0
    hold = [x for x in load if x[0] - load[0][0] >= ramp_s + 5]
    prov = [x for x in samples if x[1] == "provisioning"]

    def cores(xs, i):
        return (xs[-1][i] - xs[0][i]) / (xs[-1][0] - xs[0][0]) if len(xs) > 1 else None

    ops = summary_run["operations"]
    ins = ops.get("rest.insert_metrics", {})
    summary = {
        "agents": n,
        "exit_code": proc.returncode,
        "report": report,
        "hold_seconds": round(hold[-1][0] - hold[0][0], 1) if len(hold) > 1 else 0,
        "harness_cores_during_hold": round(cores(hold, 2), 3),
        "stack_cores_during_hold": round(cores(hold, 3), 3),
        "harness_cores_during_provisioning": round(cores(prov, 2), 3) if len(prov) > 1 else None,
        "provisioning_seconds": round(prov[-1][0], 1) if prov else None,
        "uploads": ins.get("count"), "upload_errors": ins.get("errors"), "rows": ins.get("rows"),
        "upload_latency_ms": ins.get("latency_ms"), "late": summary_run.get("late"), "dropped": summary_run.get("dropped"),
        "target": "harness < 0.5 core during a 10,000-agent steady run of 5 minutes",
    }
    summary["met"] = summary["harness_cores_during_hold"] < 0.5 and n >= 10_000
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        with open(os.path.join(args.out, "cpu.csv"), "w") as f:
            f.write("seconds,phase,harness_cpu_s,stack_cpu_s\n")
            for t, p, h, s in samples:
                f.write(f"{t:.1f},{p},{h:.2f},{s:.2f}\n")


if __name__ == "__main__":
    main()
