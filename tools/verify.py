"""`make verify`: does this machine reproduce the committed run, and if not byte for byte, how close is it?

    python -m tools.verify           # clone HEAD to a temp folder, `dvc repro -f` there, compare, clean up
    python -m tools.verify --keep    # the same, and leave the clone for a look

On x86-64 with AVX2 the stages pin the CPU code paths (stages/cpu.py), so a run here gives exactly the bytes
in HEAD's dvc.lock. On CUDA, ARM, macOS or another torch build the last bits legitimately differ; then a
byte check says nothing and this tool measures instead. It runs the pipeline in a fresh clone of HEAD (your
workspace, its outputs and its .dvc/cache are never touched; CUDA is used when you have it) and compares each
output with the committed run: an md5 equal to dvc.lock is "identical"; otherwise the numbers in the text
outputs (git-tracked) must lie within TOLERANCES, the columns that are inputs or step numbers must match
exactly, model_summary.txt must match as text and data/*.npy must be identical (NumPy's float32 arithmetic
is exact everywhere). mymodel.pth and the PNGs may differ: the predictions, activations and loss.tsv judge
them. Exit 0: everything identical or within tolerance; 1: something is not; 2: a user error (one line).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from dvc.utils.serialize import parse_yaml

from stages.common import UserError, file_md5, run_stage  # importing `stages` pins the CPU code paths as in a stage

# A number passes when |candidate - committed| <= abs + rel * |committed| (numpy.isclose). Each comment gives
# the cross-platform noise measured against the committed run on a 2-core AMD EPYC, torch 2.13.0+cpu, with
# ADDNET_CPU_PIN=off ATEN_CPU_CAPABILITY=default (ATen's no-SIMD kernels; the only setting tried that changed
# any byte: docs/reproducibility.md). Each bound is ~100x that noise and at least 7x below a 1% change.
TOLERANCES = {
    # noise: max rel 1.2e-05 (step 70, loss 0.060), max abs 8e-06 (step 13, loss 43.8). Late steps' losses are
    # squares of small errors, so their relative noise is the largest of all the outputs.
    "artifacts/loss.tsv": {"rel": 1e-3, "abs": 1e-5},
    # noise: 0 in the file (6 decimals); unrounded, final_loss moved 1.7e-07 abs, 1.6e-06 rel, mae 1e-06 rel
    "artifacts/metrics.json": {"rel": 1e-4, "abs": 1e-5},
    # noise: max abs 2e-06 (two steps of the printed %.6f), max rel 2.2e-07
    "artifacts/predictions.csv": {"rel": 2e-5, "abs": 1e-5},
    # noise: max abs 3e-06, max rel 1.1e-06 (h3 row 4); committed zeros (ReLU) stayed 0, abs judges them
    "artifacts/activations.csv": {"rel": 1e-4, "abs": 3e-5},
}
EXACT_COLUMNS = {  # columns that are inputs or counters: any difference is a real change
    "artifacts/loss.tsv": ("step", "epoch"),
    "artifacts/predictions.csv": ("x1", "x2", "target"),
    "artifacts/activations.csv": ("x1", "x2"),
}
SAME_TEXT = ("artifacts/model_summary.txt",)
JUDGED_ELSEWHERE = {
    "artifacts/mymodel.pth": "judged by predictions/activations",
    "artifacts/loss.png": "drawn from loss.tsv",
    "artifacts/activations.png": "drawn from activations.csv",
}
REFERENCES = (*TOLERANCES, *SAME_TEXT)  # the committed text outputs the comparison reads


class Row(NamedTuple):
    output: str
    result: str
    tolerance: str
    ok: bool


def read_lock(text):
    """dvc.lock's text -> {output path: md5}, in stage order."""
    stages = (parse_yaml(text, "dvc.lock") or {}).get("stages", {})  # DVC's own parser, as DVC wrote it
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def numbers(path, text):
    """An output's text -> (what must match exactly, {label: number})."""
    if path.endswith(".json"):
        metrics = json.loads(text)
        return sorted(metrics), {key: float(value) for key, value in metrics.items()}
    header, *rows = (line.split("\t" if path.endswith(".tsv") else ",") for line in text.splitlines())
    exact = [i for i, name in enumerate(header) if name in EXACT_COLUMNS[path]]
    values = {
        f"{name} row {n}": float(value)
        for n, row in enumerate(rows, start=1)
        for name, value in zip(header, row, strict=True)
        if name not in EXACT_COLUMNS[path]
    }
    return [header, *([row[i] for i in exact] for row in rows)], values


def within(path, reference, candidate):
    """(result, ok) for a numeric output whose bytes differ from the committed ones."""
    tol = TOLERANCES[path]
    try:
        (ref_exact, ref), (new_exact, new) = numbers(path, reference), numbers(path, candidate)
    except (ValueError, TypeError, AttributeError) as error:  # a ragged row, a word where a number goes
        return f"not readable as numbers ({error})", False
    if ref_exact != new_exact or ref.keys() != new.keys() or not ref:
        what = "keys" if path.endswith(".json") else f"rows or columns {','.join(EXACT_COLUMNS[path])}"
        return f"{what} differ from the committed run", False
    labels = list(ref)
    b, a = np.array([ref[k] for k in labels]), np.array([new[k] for k in labels])
    diff, bound = np.abs(a - b), tol["abs"] + tol["rel"] * np.abs(b)
    rel = np.divide(diff, np.abs(b), out=np.zeros_like(diff), where=b != 0)  # a committed 0 is judged by abs
    worst = labels[int(np.argmax(np.where(np.isnan(diff), np.inf, diff / bound)))]
    return f"max abs {diff.max():.2g}, max rel {rel.max():.2g} (worst: {worst})", bool(np.all(diff <= bound))


def rule(path):
    """The tolerance column: what an output must meet when its bytes differ."""
    if path in TOLERANCES:
        return f"rel {TOLERANCES[path]['rel']:.0e}, abs {TOLERANCES[path]['abs']:.0e}"
    return "same text" if path in SAME_TEXT else "any" if path in JUDGED_ELSEWHERE else "identical"


def compare(references, candidate_dir, lock):
    """Every output of a run in `candidate_dir` against the committed run: a Row each, in dvc.lock's order.

    references: {path: committed text} of the text outputs; lock: {path: md5} from the committed dvc.lock.
    """
    rows = []
    for path, committed_md5 in lock.items():
        file = Path(candidate_dir, path)
        if not file.is_file():
            result, ok = "missing", False
        elif file_md5(file) == committed_md5:
            result, ok = "identical", True
        elif path in JUDGED_ELSEWHERE:
            result, ok = f"differs ({JUDGED_ELSEWHERE[path]})", True
        elif path in REFERENCES and path not in references:
            result, ok = "differs; HEAD has no committed text of it to compare with", False
        elif path in TOLERANCES:
            result, ok = within(path, references[path], file.read_text(encoding="utf-8", errors="replace"))
        elif path in SAME_TEXT:
            ok = file.read_text(encoding="utf-8", errors="replace") == references[path]
            result = "same text" if ok else "text differs"
        else:  # data/*.npy, and any output without a rule here
            result, ok = "differs", False
        rows.append(Row(path, result, rule(path), ok))
    return rows


def platform_line():
    import torch

    from stages.cpu import code_paths
    from tools.machine import cpu_name

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"platform: {cpu_name()}, {platform.machine()}, {code_paths()}, torch {torch.__version__} ({build}){gpu}"


def git(*args, cwd=None):
    if not shutil.which("git"):
        raise UserError("git not found on PATH")
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[0]
        raise UserError(f"git {args[0]}: {first}")
    return result.stdout.strip()


def run_head(root, clone):
    """Clone HEAD of `root` into `clone`, run `dvc repro -f` there; return (references, lock, commit, seconds)."""
    git("clone", "-q", root, str(clone))
    commit = git("rev-parse", "--short", "HEAD", cwd=clone)
    if not (clone / "dvc.lock").is_file():
        raise UserError(f"HEAD ({commit}) has no dvc.lock: commit a run first (`dvc repro`, then git commit)")
    lock = read_lock((clone / "dvc.lock").read_text(encoding="utf-8"))
    references = {p: (clone / p).read_text("utf-8", errors="replace") for p in REFERENCES if (clone / p).is_file()}
    bin_dir = Path(sys.executable).parent  # the venv's: its dvc, and its python for the stages
    dvc = shutil.which("dvc", path=str(bin_dir))
    if not dvc:
        raise UserError(f"no dvc beside {sys.executable}; run `make verify`, which sets up .venv")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    print(f"verify: running `dvc repro -f` in a clone of HEAD ({commit}) at {clone} ...", file=sys.stderr)
    start = time.perf_counter()
    repro = subprocess.run([dvc, "repro", "-f"], cwd=clone, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if repro.returncode != 0:
        lines = [line.strip() for line in repro.stderr.splitlines() if line.strip()] or ["(no output)"]
        cause = next((line for line in lines if ": error: " in line), lines[-1])
        raise UserError(f"`dvc repro -f` failed in the clone of HEAD ({commit}), exit {repro.returncode}: {cause}")
    return references, lock, commit, seconds


def print_table(rows):
    table = [("output", "result", "tolerance", "verdict"), *((*row[:3], "ok" if row.ok else "FAIL") for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[3])


def main():
    parser = argparse.ArgumentParser(prog="python -m tools.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temp clone (its path is printed)")
    args = parser.parse_args()
    root = git("rev-parse", "--show-toplevel")  # not in a git repo: one line, before torch loads
    print(platform_line(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="addnet-verify-"))
    try:
        references, lock, commit, seconds = run_head(root, tmp / "repo")
        rows = compare(references, tmp / "repo", lock)
    finally:
        if args.keep:
            print(f"verify: the clone is kept at {tmp / 'repo'}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    failed = [row.output for row in rows if not row.ok]
    same = sum(row.result == "identical" for row in rows)
    allowed = sum(row.result.startswith("differs (") for row in rows)
    verdict = f"FAIL ({', '.join(failed)})" if failed else "OK"
    print(
        f"verify: {verdict}: {same} identical, {len(rows) - same - allowed - len(failed)} within tolerance, "
        f"{allowed} allowed to differ, {len(failed)} failed; HEAD {commit}, dvc repro -f took {seconds:.1f} s"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    run_stage(main)
