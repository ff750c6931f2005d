"""How long `px-hub` takes to answer when it does no work: `--help`, a subcommand's `--help`, and an argument error
(`prune --sparsity 2`), each a fresh process of the console script; plus `python -c "import px_hub"` (the full
library, what a real command loads once its arguments are valid). Medians of --repeats runs; the machine's load
average is printed with them, since a loaded machine makes every figure larger.

    .venv/bin/python benchmarks/bench_cli_startup.py [--repeats 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CASES = {
    "px-hub --help": ["--help"],
    "px-hub prune --help": ["prune", "--help"],
    "px-hub prune --sparsity 2 (argument error)": ["prune", "--sparsity", "2"],
    "px-hub methods": ["methods"],
}


def _time(cmd: list[str], env: dict) -> tuple[float, int]:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, cwd=REPO)
    return time.perf_counter() - t, r.returncode


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    exe = pathlib.Path(sys.executable).with_name("px-hub")
    if not exe.exists():
        sys.exit(f"{exe} not found; run scripts/setup-env.sh")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cases = {name: [str(exe), *a] for name, a in CASES.items()}
    cases["python -c 'import px_hub' (full library)"] = [sys.executable, "-c", "import px_hub"]
    load = os.getloadavg()
    print(f"{args.repeats} runs each, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'command':<48} {'median s':>9} {'min s':>7} {'max s':>7} {'exit':>5}")
    out = {"repeats": args.repeats, "cpus": os.cpu_count(), "loadavg_before": load, "cases": {}}
    for name, cmd in cases.items():
        _time(cmd, env)  # warm the page cache
        runs = [_time(cmd, env) for _ in range(args.repeats)]
        ts = [t for t, _ in runs]
        out["cases"][name] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
                              "exit_code": runs[-1][1]}
        print(f"{name:<48} {statistics.median(ts):>9.3f} {min(ts):>7.3f} {max(ts):>7.3f} {runs[-1][1]:>5}")
    out["loadavg_after"] = os.getloadavg()
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
