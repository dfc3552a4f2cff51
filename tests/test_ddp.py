"""train.nproc: 2 runs the train stage under torchrun with DistributedDataParallel (gloo on the CPU)."""

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, child_pids, file_size_limit, prepared, run, set_params, stage, start_stage

pytestmark = pytest.mark.slow  # every test starts torchrun and its ranks

UNEVEN = {"data.synthetic": {"n": 1000, "low": 0, "high": 10}, "train.batch_size": 96, "train.epochs": 3}


def train(workdir, nproc):
    set_params(workdir, **{"train.nproc": nproc})
    result = stage("train", workdir)
    return result, {name: (workdir / "artifacts" / name).read_bytes() for name in ("mymodel.pth", "loss.tsv")}


def test_two_gloo_ranks_match_one_process_and_each_other(tmp_path):
    prepared(tmp_path, **UNEVEN)  # 1000 rows in batches of 96: the last batch (40 rows) splits 20/20

    _, single = train(tmp_path, 1)
    result, ddp = train(tmp_path, 2)
    assert "torchrun --standalone --nproc_per_node=2" in result.stdout and "x 2" in result.stdout
    _, ddp_again = train(tmp_path, 2)
    assert ddp == ddp_again  # two DDP runs: byte-identical

    load = lambda raw: torch.load(__import__("io").BytesIO(raw), weights_only=True)  # noqa: E731
    one, two = load(single["mymodel.pth"]), load(ddp["mymodel.pth"])
    assert list(one) == list(two)
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    losses = [
        [float(line.split("\t")[2]) for line in raw.decode().splitlines()[1:]]
        for raw in (single["loss.tsv"], ddp["loss.tsv"])
    ]
    assert len(losses[0]) == len(losses[1]) == 3 * 11
    assert max(abs(a - b) / max(abs(a), 1e-6) for a, b in zip(*losses, strict=True)) < 1e-4


def test_a_failing_rank_ends_the_stage_with_clear_lines_and_no_traceback(tmp_path):
    prepared(tmp_path, **{"train.lr": 10, "train.nproc": 2})
    result = stage("train", tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(r"^train\[rank [01]\]: error: loss became (inf|nan) at step \d+", result.stderr, re.M), (
        result.stderr
    )
    assert re.search(r"^train: error: rank [01] of 2 failed with exit code -?\d+", result.stderr, re.M), result.stderr
    assert not (tmp_path / "artifacts" / "mymodel.pth").exists()
    # A rank's own error ends the run at once: torchrun's restarts (train.max_restarts) exit before training again.
    assert result.stdout.count(" steps of batch ") == 1, result.stdout


def test_an_output_that_cannot_be_written_under_torchrun_is_one_line_and_trains_once(tmp_path):
    prepared(tmp_path, **{"train.nproc": 2})
    result = stage("train", tmp_path, check=False, preexec_fn=file_size_limit(2048))  # the model is 2.4 KB
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("cannot write artifacts/mymodel.pth: File too large; nothing was replaced") == 1, (
        result.stderr
    )
    assert result.stdout.count(" steps of batch ") == 1, result.stdout
    assert not (tmp_path / "artifacts" / "mymodel.pth").exists()


LONG = {
    "data.synthetic": {"n": 4_000, "low": 0, "high": 10},
    "train.batch_size": 8,
    "train.epochs": 3,
    "train.nproc": 2,
}


def wait_until_training(process):
    for line in process.stdout:
        if " steps of batch " in line:
            return
    raise AssertionError(process.stderr.read())


def test_sigterm_under_torchrun_ends_like_one_process_and_leaves_no_rank(tmp_path):
    prepared(tmp_path, **LONG)
    process = start_stage("train", tmp_path)
    wait_until_training(process)
    ranks = child_pids(process.pid)
    assert len(ranks) == 2
    process.terminate()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("train: epoch")]
    assert len(lines) == 1 and lines[0].startswith("train: stopped by SIGTERM; "), err
    assert "Traceback" not in err
    assert "checkpoints/train.pt holds the steps done" in lines[0]
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks)  # torchrun stopped its ranks before exiting
    assert not (tmp_path / "artifacts").exists()


def test_a_killed_rank_is_restarted_and_resumes_to_the_undisturbed_bytes(tmp_path):
    prepared(tmp_path, **LONG, **{"train.checkpoint_every_s": 1})
    stage("train", tmp_path)
    undisturbed = [(tmp_path / "artifacts" / name).read_bytes() for name in ("mymodel.pth", "loss.tsv")]
    shutil.rmtree(tmp_path / "artifacts")

    process = start_stage("train", tmp_path)
    wait_until_training(process)
    deadline = time.monotonic() + 60
    while not (tmp_path / "checkpoints/train.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run(["kill", "-KILL", str(child_pids(process.pid)[-1])], check=True)  # the last rank started: rank 1
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert re.search(r"^train: resuming at epoch \d+, step [\d,]+ of 1,500$", out, re.M), out
    assert "Traceback" not in err, err
    assert [(tmp_path / "artifacts" / name).read_bytes() for name in ("mymodel.pth", "loss.tsv")] == undisturbed


def test_a_world_size_other_than_train_nproc_is_one_line(tmp_path):
    prepared(tmp_path)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "stages.train"], tmp_path, check=False,
                 PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo")  # fmt: skip
    assert result.returncode != 0
    assert "error: params.yaml: train.nproc is 1 but torchrun started 2 processes (WORLD_SIZE)" in result.stderr
    # (torchrun's own failure report follows: the user started torchrun, not the stage)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_more_processes_than_gpus_is_one_line(tmp_path):
    gpus = torch.cuda.device_count()
    prepared(tmp_path, **{"train.nproc": gpus + 1, "train.device": "auto"})
    every_gpu = ",".join(map(str, range(gpus)))  # conftest's env() hides CUDA; this test needs it
    result = stage("train", tmp_path, check=False, CUDA_VISIBLE_DEVICES=every_gpu)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"train.nproc is {gpus + 1} but this machine has {gpus} CUDA device(s)" in result.stderr
