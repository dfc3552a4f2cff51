"""The tutorial's training idiom beside addnet's train stage loop, on the same data and model, in one process.

    python -m tools.bench                   # the three sizes of docs/performance.md, on the CPU
    python -m tools.bench --device cuda     # the same on a GPU
    python -m tools.bench --tiny            # a seconds-long smoke run (the tests use it)

Prints a table (µs per step, samples/s, the speed-up, peak memory) and writes it to build/bench.md. Then two
tables measured in fresh processes: the train loop at 10k, 100k and 1M steps (peak RSS and µs/step must not grow
with the step count), and what pinning the CPU code paths costs (stages/cpu.py; pinned vs ADDNET_CPU_PIN=off).
"""

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from stages.checkpoint import TrainingState
from stages.model import build_model
from stages.train import fit, make_step, train_step
from tools import tutorial
from tools.machine import caller_environment, cpu_name

SIZES = [  # (pairs, batch size, epochs)
    (4, 2, 50),  # the tutorial's own size
    (1_000_000, 1024, 1),
    (1_000_000, 65536, 1),
]
TINY_SIZES = [(4, 2, 5), (20_000, 1024, 1), (20_000, 8192, 1)]


def tutorial_loop(model, x, y, epochs, batch_size, lr, generator):
    # As the tutorial writes it: no generator, so the DataLoader seeds each epoch's order from the global RNG.
    dl = DataLoader(tutorial.MyDataset(x, y, x.device), batch_size=batch_size, shuffle=True)
    return tutorial.train(model, dl, epochs, lr)


def addnet_loop(model, x, y, epochs, batch_size, lr, generator, cuda_graphs=False):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    state = TrainingState(model, optimizer, generator, epochs=epochs, steps_per_epoch=math.ceil(len(x) / batch_size))
    step = make_step(model, optimizer, x, y, batch_size, cuda_graphs)
    return fit(state, x, y, batch_size=batch_size, shuffle=True, step=step)


def graphed_loop(model, x, y, epochs, batch_size, lr, generator):
    return addnet_loop(model, x, y, epochs, batch_size, lr, generator, cuda_graphs=True)


def floor_loop(model, x, y, epochs, batch_size, lr, generator):
    """What no loop can avoid: the eager step alone, always on the first batch, no data handling, no loss log."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    xb, yb = x[:batch_size], y[:batch_size]
    steps = epochs * math.ceil(len(x) / batch_size)
    for _ in range(steps):
        train_step(model, optimizer, nn.MSELoss(), xb, yb)
    return range(steps)


class PeakMemory:
    """Peak memory of the block: GPU bytes allocated on CUDA, else the process's peak RSS (reset first)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident size
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            status = Path("/proc/self/status").read_text()
            self.mib = int(status.split("VmHWM:")[1].split()[0]) / 1024


def run_once(loop, x, y, epochs, batch_size, device):
    """(seconds, steps, peak MiB) of one training run from fresh, identically seeded weights."""
    torch.manual_seed(0)
    model = build_model(8).to(device)
    generator = torch.Generator().manual_seed(0)  # the train stage draws its shuffle on the CPU
    with PeakMemory(device) as peak:
        start = time.perf_counter()
        steps = len(loop(model, x, y, epochs, batch_size, 1e-3, generator))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, steps, peak.mib


def measure(loops, x, y, epochs, batch_size, device):
    """Each loop's best of several runs, the loops taking turns so that a slow spell of the machine hits all.

    Runs of a second or less are noisy here (±15%), so those get more tries; the tutorial's long runs fewer.
    """
    runs = {name: [run_once(loop, x, y, epochs, batch_size, device)] for name, loop in loops.items()}
    tries = {name: 25 if first[0] < 0.2 else 9 if first[0] < 5 else 3 for name, (first,) in runs.items()}
    while any(len(runs[name]) < tries[name] for name in loops):
        for name, loop in loops.items():
            if len(runs[name]) < tries[name]:
                runs[name].append(run_once(loop, x, y, epochs, batch_size, device))
    results = {}
    for name, measured in runs.items():
        seconds, steps, _ = min(measured)
        peak = max(mib for _, _, mib in measured)
        results[name] = {
            "us_per_step": seconds / steps * 1e6,
            "samples_per_s": epochs * len(x) / seconds,
            "peak_mib": peak,
        }
    return results


LOOPS = {"tutorial": tutorial_loop, "addnet": addnet_loop, "eager floor": floor_loop}
STEP_COUNTS = [10_000, 100_000, 1_000_000]  # batch 2 over 20,000 pairs: only the epochs grow
PIN_SIZES = [(4, 2, 50), (1_000_000, 1024, 1)]


def child_run(n, batch_size, epochs):
    """In a fresh process: one addnet_loop run; prints µs/step and the process's peak RSS in MiB."""
    torch.set_num_threads(1)
    x = torch.empty(n, 2).uniform_(0, 10, generator=torch.Generator().manual_seed(0))
    y = x.sum(dim=1, keepdim=True)
    addnet_loop(build_model(8), x[:4096], y[:4096], 1, batch_size, 1e-3, torch.Generator())  # warm up
    seconds, steps, _ = run_once(addnet_loop, x, y, epochs, batch_size, torch.device("cpu"))
    peak = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    print(f"{seconds / steps * 1e6} {peak}")


def in_fresh_process(n, batch_size, epochs, **env):
    command = [sys.executable, "-m", "tools.bench", "--child", str(n), str(batch_size), str(epochs)]
    # caller_environment(): importing `stages` pinned MKL and ATen in os.environ, which an unpinned child would inherit.
    out = subprocess.run(
        command, env={**caller_environment(), **env}, capture_output=True, text=True, check=True
    ).stdout
    us_per_step, peak_mib = map(float, out.split())
    return us_per_step, peak_mib


def step_count_rows(step_counts, pairs):
    """The loop's memory and step time at growing step counts: more epochs over the same pairs, batch 2."""
    rows = ["", "| steps | µs/step | peak RSS MiB |", "|---:|---:|---:|"]
    for steps in step_counts:
        us_per_step, peak = in_fresh_process(pairs, 2, steps // (pairs // 2))
        rows.append(f"| {steps:,} | {us_per_step:,.1f} | {peak:,.0f} |")
        print(rows[-1], flush=True)
    return rows


def pin_cost_rows(sizes, turns):
    """µs/step with the CPU code paths pinned (the stages' default) and left to MKL and ATen, taking turns."""
    rows = ["", "| pairs | batch | pinned µs/step | unpinned µs/step | cost of the pin |", "|---:|---:|---:|---:|---:|"]
    for n, batch_size, epochs in sizes:
        pinned, unpinned = [], []
        for _ in range(turns):
            pinned.append(in_fresh_process(n, batch_size, epochs)[0])
            unpinned.append(in_fresh_process(n, batch_size, epochs, ADDNET_CPU_PIN="off")[0])
        cost = min(pinned) / min(unpinned)
        rows.append(f"| {n:,} | {batch_size:,} | {min(pinned):,.1f} | {min(unpinned):,.1f} | {cost:.2f}× |")
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default="build/bench.md")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_run(*args.child)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_name()}, {os.cpu_count()} cores"
    lines = [
        f"addnet bench: torch {torch.__version__}, {device} ({where}), {args.threads} thread(s)",
        "",
        "| pairs | batch | epochs | loop | µs/step | samples/s | peak MiB | speed-up |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for n, batch_size, epochs in TINY_SIZES if args.tiny else SIZES:
        generator = torch.Generator().manual_seed(0)
        x = torch.empty(n, 2).uniform_(0, 10, generator=generator)
        x = (torch.tensor([[1.0, 2], [3, 4], [5, 6], [7, 8]]) if n == 4 else x).to(device)
        y = x.sum(dim=1, keepdim=True)
        loops = {**LOOPS, "addnet, CUDA graph": graphed_loop} if device.type == "cuda" else LOOPS
        for loop in loops.values():
            loop(build_model(8).to(device), x[:4096], y[:4096], 1, batch_size, 1e-3, torch.Generator())  # warm up
        results = measure(loops, x, y, epochs, batch_size, device)
        for name, result in results.items():
            speedup = results["tutorial"]["us_per_step"] / result["us_per_step"]
            row = (
                f"| {n:,} | {batch_size:,} | {epochs} | {name} | {result['us_per_step']:,.1f} | "
                f"{result['samples_per_s']:,.0f} | {result['peak_mib']:,.0f} | {speedup:.2f}× |"
            )
            lines.append(row)
            print(row, flush=True)

    if device.type == "cpu":
        lines += step_count_rows([1_000, 10_000], 2_000) if args.tiny else step_count_rows(STEP_COUNTS, 20_000)
        lines += pin_cost_rows([(4, 2, 5)] if args.tiny else PIN_SIZES, turns=1 if args.tiny else 5)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
