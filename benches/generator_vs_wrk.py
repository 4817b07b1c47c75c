#!/usr/bin/env python3
"""Requests per second of the fleet generator against wrk (issue 5: at least 0.8x wrk with the same
connection count, in the same run, generator pinned to one core and the sink to the other).

`fleetbench sink` (no added latency) runs pinned to CPU 1. On CPU 0, in turns:
- fleetbench: a `closed` scenario of C agents sharing C connections, each uploading one telemetry
  row again as soon as the last upload ends, for D seconds. Rate = uploads started in the D seconds
  (the `rest.insert_metrics` count of summary.json; at most C finish in the grace after) / D.
- wrk (Debian package, one thread, C connections, D seconds) sending byte-identical requests: the
  sink records one of fleetbench's inserts (method, path, headers, body) and a Lua script replays it.
Rounds alternate the two tools so that drift affects both. Ratios are per round, then the median.

Usage: python3 benches/generator_vs_wrk.py [--connections 16,64,256] [--seconds 10] [--rounds 3]
       [--out DIR]   (builds `cargo build --release -p fleetbench` first)
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "fleetbench")

SCENARIO = """name = "generator"
[fleet]
agents = {c}
connections = {c}
provision_concurrency = 64
[load]
model = "closed"
grace = "5s"
[[load.stages]]
duration = "0s"
agents = {c}
[[load.stages]]
duration = "{d}s"
agents = {c}
[workload]
sample_interval = "1s"
upload_interval = "1s"
"""


def lua_string(s):
    return "\"" + "".join(c if c.isalnum() or c in " -_.,:;/=+{}[]()@!?#$%^&*'|~`<>" else "\\%d" % ord(c) for c in s) + "\""


def wrk_script(request, path):
    lines = [f"wrk.method = {lua_string(request['method'])}", f"wrk.path = {lua_string(request['path'])}"]
    for k, v in sorted(request["headers"].items()):
        lines.append(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}")
    lines.append(f"wrk.body = {lua_string(request['body'])}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_fleetbench(c, d, url, work, tag):
    scenario = os.path.join(work, f"gen-{c}.toml")
    with open(scenario, "w") as f:
        f.write(SCENARIO.format(c=c, d=d))
    out = os.path.join(work, f"run-{tag}")
    env = dict(os.environ, SUPABASE_URL=url, SUPABASE_ANON_KEY="bench-anon-key", SUPABASE_SERVICE_ROLE_KEY="bench-service-key")
    p = subprocess.run(["taskset", "-c", "0", BIN, "run", scenario, "--out", out], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"fleetbench run failed ({p.returncode}):\n{p.stderr}")
    s = json.load(open(os.path.join(out, "summary.json")))
    op = s["operations"]["rest.insert_metrics"]
    if op["errors"]:
        sys.exit(f"fleetbench saw {op['errors']} errors: {op['errors_by_kind']}")
    return {"requests": op["count"], "rate": op["count"] / d, "p50_ms": op["service_ms"]["p50"], "p99_ms": op["service_ms"]["p99"]}


def run_wrk(c, d, url, script):
    p = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{c}", f"-d{d}s", "-s", script, url + "/rest/v1/system_metrics"],
                       capture_output=True, text=True, check=True)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", p.stdout).group(1))
    done = int(re.search(r"(\d+) requests in", p.stdout).group(1))
    if "Non-2xx" in p.stdout or "Socket errors" in p.stdout:
        sys.exit(f"wrk saw errors:\n{p.stdout}")
    return {"requests": done, "rate": rate, "output": p.stdout}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", default="16,64,256")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "fleetbench"], cwd=ROOT, check=True)
    conns = [int(c) for c in args.connections.split(",")]
    raw, table = [], []
    with tempfile.TemporaryDirectory() as work:
        sink = subprocess.Popen(["taskset", "-c", "1", BIN, "sink", "--listen", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = sink.stdout.readline().strip()
        script = os.path.join(work, "insert.lua")
        try:
            for c in conns:
                ratios = []
                for r in range(args.rounds):
                    fb = run_fleetbench(c, args.seconds, url, work, f"{c}-{r}")
                    request = json.load(urllib.request.urlopen(url + "/_sink/insert"))
                    wrk_script(request, script)
                    wk = run_wrk(c, args.seconds, url, script)
                    ratio = fb["rate"] / wk["rate"]
                    ratios.append(ratio)
                    raw.append({"connections": c, "round": r, "fleetbench_rps": round(fb["rate"]), "wrk_rps": round(wk["rate"]),
                                "ratio": round(ratio, 3), "fleetbench_service_p50_ms": fb["p50_ms"], "fleetbench_service_p99_ms": fb["p99_ms"],
                                "request_bytes": len(request["body"]) + sum(len(k) + len(v) + 4 for k, v in request["headers"].items())})
                    print(f"c={c:4d} round {r}: fleetbench {fb['rate']:9.0f}/s  wrk {wk['rate']:9.0f}/s  ratio {ratio:.3f}", flush=True)
                table.append({"connections": c, "median_ratio": round(statistics.median(ratios), 3),
                              "fleetbench_median_rps": round(statistics.median(x["fleetbench_rps"] for x in raw if x["connections"] == c)),
                              "wrk_median_rps": round(statistics.median(x["wrk_rps"] for x in raw if x["connections"] == c))})
        finally:
            sink.terminate()
            sink.wait()
    summary = {"target": "fleetbench >= 0.8 x wrk requests/s, same connections, same run, pinned cores",
               "met": all(t["median_ratio"] >= 0.8 for t in table), "seconds": args.seconds, "rounds": args.rounds,
               "by_connections": table, "example_request": {k: v for k, v in request.items() if k != "body"} | {"body_bytes": len(request["body"])}}
    print(json.dumps(summary, indent=2))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        with open(os.path.join(args.out, "raw.csv"), "w") as f:
            keys = list(raw[0].keys())
            f.write(",".join(keys) + "\n")
            for row in raw:
                f.write(",".join(str(row[k]) for k in keys) + "\n")


if __name__ == "__main__":
    main()
