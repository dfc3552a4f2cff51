"""Preemption: SIGTERM stops the train stage mid-epoch with a checkpoint, and the next `dvc repro` resumes from it to
the very bytes of a run that was never stopped (the whole dvc.lock), with one process and with two under torchrun.
A checkpoint of other params, or of any other shape, is ignored with one line."""

import math
import subprocess
import time

import pytest
import torch
import yaml

from stages import checkpoint
from stages.checkpoint import CHECKPOINT_FILE, TrainingState, load
from stages.data import TRAIN_FILE
from stages.model import build_model
from stages.params import load_params
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_checkpoint_of_other_params_is_ignored_with_one_line(tmp_path, monkeypatch):
    repo = clone_repo(tmp_path / "repo")
    run(["dvc", "repro", "prepare"], repo)
    monkeypatch.chdir(repo)
    made_with = checkpoint.fingerprint(load_params(), torch.device("cpu"), TRAIN_FILE)
    checkpoint.save(default_state(), made_with)  # what stopping the default run at its first step saves
    set_params(repo, **{"train.lr": 0.002})
    result = run(["dvc", "repro"], repo)
    output = result.stdout + result.stderr
    assert "train: ignoring checkpoints/train.pt: it was made with train.lr 0.001, now 0.002; starting from step 0" in (
        output
    ), output
    assert "resuming" not in output and not (repo / CHECKPOINT_FILE).exists()


def default_state():
    torch.manual_seed(0)
    model = build_model(8)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    return TrainingState(model, optimizer, torch.Generator().manual_seed(0), epochs=50, steps_per_epoch=2)


FINGERPRINT = {"train.lr": 0.001, "data/train.npy md5": "0" * 32}


def a_real_checkpoint(**changes):
    """What a stop at step 3 saves, with `changes` made to it (None removes a key)."""
    saved = {"fingerprint": FINGERPRINT, **default_state().state_dict()}
    saved.update(step=3, losses=torch.ones(3))
    for key, value in changes.items():
        if value is None:
            del saved[key]
        else:
            saved[key] = value
    return saved


WRONG_CHECKPOINTS = {
    "a bare tensor": (torch.zeros(3), "not a checkpoint of this stage"),
    "a list": ([1, 2, 3], "not a checkpoint of this stage"),
    "fingerprint None": ({"fingerprint": None}, "not a checkpoint of this stage"),
    "only the fingerprint": ({"fingerprint": FINGERPRINT}, "holds ['fingerprint'], expected"),
    "a fingerprint of strings": (a_real_checkpoint(fingerprint={"train.lr": "0.001"}), "made with train.lr '0.001'"),
    "no model": (a_real_checkpoint(model=None), "expected ['generator', 'losses', 'model'"),
    "a model of another width": (
        a_real_checkpoint(model=build_model(4).state_dict()),
        "its 0.weight is torch.float32 (4, 2)",
    ),
    "float64 weights": (
        a_real_checkpoint(model={k: v.double() for k, v in build_model(8).state_dict().items()}),
        "its 0.weight is a torch.float64 tensor, expected torch.float32 (8, 2)",
    ),
    "a NaN weight": (
        a_real_checkpoint(model={k: v * math.nan for k, v in build_model(8).state_dict().items()}),
        "its 0.weight holds a value that is not finite",
    ),
    "a step past the end": (a_real_checkpoint(step=101), "its step is 101, expected an integer from 0 to 100"),
    "a step of text": (a_real_checkpoint(step="3"), "its step is '3'"),
    "losses of another length": (a_real_checkpoint(losses=torch.ones(4)), "its losses is torch.float32 (4,)"),
    "a short generator state": (a_real_checkpoint(generator=torch.zeros(5, dtype=torch.uint8)), "its generator is"),
    "a meta weight": (
        a_real_checkpoint(model={k: v.to("meta") for k, v in build_model(8).state_dict().items()}),
        "its 0.weight is a meta (no data) tensor, expected torch.float32 (8, 2)",
    ),
    "sparse losses": (
        a_real_checkpoint(losses=torch.ones(3).to_sparse()),
        "its losses is a torch.sparse_coo tensor, expected torch.float32 (3,)",
    ),
    "a NaN loss": (a_real_checkpoint(losses=torch.tensor([1.0, math.nan, 1.0])), "its losses holds a value that is"),
    "an optimizer with momentum": (
        a_real_checkpoint(optimizer={"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9}]}),
        "its optimizer state is not that of this run's SGD",
    ),
}


@pytest.mark.parametrize("case", WRONG_CHECKPOINTS)
def test_a_checkpoint_of_the_wrong_shape_is_ignored_with_one_line(tmp_path, capsys, case):
    content, words = WRONG_CHECKPOINTS[case]
    path = tmp_path / "train.pt"
    torch.save(content, path)
    state = default_state()
    before = state.state_dict()
    assert load(FINGERPRINT, state, path) is None
    line = capsys.readouterr().err
    assert line.startswith(f"train: ignoring {path}: ") and words in line and line.endswith("; starting from step 0\n")
    assert line.count("\n") == 1, line
    assert state.step == 0 and all(torch.equal(before["model"][k], v) for k, v in state.state_dict()["model"].items())


def test_a_real_checkpoint_loads_and_restores(tmp_path):
    torch.save(a_real_checkpoint(), tmp_path / "train.pt")
    state = default_state()
    saved = load(FINGERPRINT, state, tmp_path / "train.pt")
    state.load_state_dict(saved)
    assert state.step == 3 and torch.equal(state.losses[:3], torch.ones(3))
