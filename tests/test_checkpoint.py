"""Preemption: SIGTERM stops the train stage mid-epoch with a checkpoint, and the next `dvc repro` resumes from it to
the very bytes of a run that was never stopped (the whole dvc.lock), with one process and with two under torchrun."""

import math
import subprocess
import time

import pytest
import torch
import yaml

from stages.checkpoint import CHECKPOINT_FILE
from tests.conftest import clone_repo, env, run, set_params, stage_pid

RUNS = {  # a few seconds of training: long enough to stop in the middle of an epoch
    "1-process": {"data.synthetic": {"n": 60_000, "low": 0, "high": 10}, "train.epochs": 1},
    "2-processes": {
        "data.synthetic": {"n": 4_000, "low": 0, "high": 10},
        "train.batch_size": 8,
        "train.epochs": 3,
        "train.nproc": 2,
    },
}


def steps_per_epoch(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    return math.ceil(params["data"]["synthetic"]["n"] / params["train"]["batch_size"])


def repro_stopped_mid_training(repo):
    """`dvc repro`, and SIGTERM to the train stage's process (what a preempted machine sends) once it trains."""
    dvc = subprocess.Popen(
        ["dvc", "repro"], cwd=repo, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in dvc.stdout:
        lines.append(line)
        if " steps of batch " in line:  # the stage's first line: it is training now
            break
    time.sleep(2)
    stage = stage_pid(dvc.pid, "train")
    assert stage, "no `python -m stages.train` under dvc:\n" + "".join(lines)
    subprocess.run(["kill", "-TERM", str(stage)], check=True)
    lines += dvc.stdout.readlines()
    assert dvc.wait(timeout=120) != 0, "".join(lines)
    return "".join(lines)


@pytest.mark.parametrize("name", RUNS)
def test_a_stopped_run_resumes_to_the_bytes_of_an_unstopped_one(tmp_path, name):
    stopped, unstopped = clone_repo(tmp_path / "stopped"), clone_repo(tmp_path / "unstopped")
    for repo in (stopped, unstopped):
        set_params(repo, **RUNS[name])

    output = repro_stopped_mid_training(stopped)
    assert "train: stopped by SIGTERM" in output and "the next `dvc repro` resumes from it" in output, output
    state = torch.load(stopped / CHECKPOINT_FILE, weights_only=True)
    assert state["step"] > 0 and not (stopped / "artifacts/mymodel.pth").exists()

    resumed = run(["dvc", "repro"], stopped).stdout
    assert f"train: resuming at epoch {state['step'] // steps_per_epoch(stopped) + 1}, step {state['step']:,} of" in (
        resumed
    ), resumed
    assert not (stopped / CHECKPOINT_FILE).exists()  # removed after the run succeeded

    run(["dvc", "repro"], unstopped)
    assert (stopped / "dvc.lock").read_text() == (unstopped / "dvc.lock").read_text()  # every output's md5
    assert (
        run(["git", "status", "--porcelain", "dvc.lock"], stopped).stdout
        == run(["git", "status", "--porcelain", "dvc.lock"], unstopped).stdout
    )


def test_a_checkpoint_of_other_params_is_ignored_with_one_line(tmp_path):
    repo = clone_repo(tmp_path / "repo")
    set_params(repo, **RUNS["1-process"])
    repro_stopped_mid_training(repo)
    set_params(repo, **{"train.lr": 0.002})
    result = run(["dvc", "repro"], repo)
    output = result.stdout + result.stderr
    assert "train: ignoring checkpoints/train.pt: it was made with train.lr 0.001, now 0.002; starting from step 0" in (
        output
    ), output
    assert "resuming" not in output and not (repo / CHECKPOINT_FILE).exists()
