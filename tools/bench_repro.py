"""A cold `dvc repro -f` of the default pipeline beside the tutorial's code run as one script, side by side.

    python -m tools.bench_repro             # 3 timed runs of each, taking turns, after one warm-up run each
    python -m tools.bench_repro --runs 1    # the smoke run the tests use

Both run as fresh processes in a throwaway copy of this checkout (your outputs and dvc.lock stay as they
are). Prints each one's best and median wall time and the ratio, and writes them to build/bench_repro.md.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.checkout import copy_checkout

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "tutorial as one script": [sys.executable, "-m", "tools.tutorial"],
    "dvc repro -f (5 stages)": [str(Path(sys.executable).parent / "dvc"), "repro", "-f", "--quiet"],
}


def wall_time(command, cwd):
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="build/bench_repro.md")
    args = parser.parse_args()

    seconds = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="addnet-bench-") as tmp:
        checkout = Path(tmp)
        copy_checkout(checkout)
        for command in COMMANDS.values():  # warm-up: the OS file cache, .pyc files, matplotlib's font cache
            wall_time(command, checkout)
        for _ in range(args.runs):
            for name, command in COMMANDS.items():
                seconds[name].append(wall_time(command, checkout))
                print(f"  {name}: {seconds[name][-1]:.2f} s", flush=True)

    tutorial, repro = (min(times) for times in seconds.values())
    tutorial_median, repro_median = (statistics.median(times) for times in seconds.values())
    lines = [
        f"addnet cold-repro bench: {os.cpu_count()} CPU(s), best and median of {args.runs} run(s), taking turns",
        "",
        "| command | best s | median s |",
        "|---|---:|---:|",
        *(f"| {name} | {min(t):.2f} | {statistics.median(t):.2f} |" for name, t in seconds.items()),
        "",
        f"ratio (best): {repro / tutorial:.2f}x, (median): {repro_median / tutorial_median:.2f}x",
    ]
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
