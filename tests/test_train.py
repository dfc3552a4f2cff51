import csv
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from stages import prepare, train
from stages.checkpoint import TrainingState
from stages.common import Interrupted
from stages.model import build_model, make_deterministic
from stages.supervise import Supervisor
from tests.conftest import ROOT, assert_one_clear_line, env, prepared, set_params, stage, start_stage


def read_losses(path="artifacts/loss.tsv"):
    with open(path, newline="") as file:
        return list(csv.DictReader(file, delimiter="\t"))


def test_train_writes_a_cpu_state_dict_summary_and_falling_losses(workdir):
    prepare.main()
    train.main()
    state = torch.load("artifacts/mymodel.pth", weights_only=True)
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(t.device.type == "cpu" for t in state.values())
    assert sum(t.numel() for t in state.values()) == 33

    summary = (workdir / "artifacts/model_summary.txt").read_text()
    assert "Total params: 33" in summary and "Linear-1" in summary and "ReLU-2" in summary

    rows = read_losses()
    assert len(rows) == 50 * 2  # 4 pairs in batches of 2, 50 epochs: one row per optimizer step
    assert [int(r["step"]) for r in rows] == list(range(1, 101))
    assert {int(r["epoch"]) for r in rows} == set(range(1, 51))
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-10:]) < sum(losses[:10]) / 10


def test_a_single_pair_trains_exactly_as_the_tutorial_loop_does(workdir):
    set_params(workdir, **{"data.x": [[1, 2]], "data.y": [[3]]})
    prepare.main()
    train.main()
    # The tutorial's loop written out by hand: one step of the one row per epoch.
    torch.manual_seed(0)
    model = build_model(8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])
    expected = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = torch.nn.MSELoss()(model(x), y)
        loss.backward()
        optimizer.step()
        expected.append(f"{loss.item():.8g}")
    assert [r["loss"] for r in read_losses()] == expected
    state = torch.load("artifacts/mymodel.pth", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_lr_as_dvc_writes_it_trains_with_that_lr(workdir):
    prepare.main()
    params = (workdir / "params.yaml").read_text()
    models = {}
    for written in ("1e-06", "0.000001", "0.001"):
        (workdir / "params.yaml").write_text(params.replace("lr: 0.001", f"lr: {written}"))
        train.main()
        models[written] = (workdir / "artifacts/mymodel.pth").read_bytes()
    assert models["1e-06"] == models["0.000001"] != models["0.001"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_steps_give_the_same_bytes_as_eager_steps():
    make_deterministic(0, 1, torch.device("cuda"))
    x = torch.rand(1000, 2, generator=torch.Generator().manual_seed(0)).cuda() * 10
    y = x.sum(dim=1, keepdim=True)
    results = []
    for cuda_graphs in (False, True):
        torch.manual_seed(0)
        model = build_model(8).cuda()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)  # the shuffle is drawn on the CPU, as in the train stage
        state = TrainingState(model, optimizer, generator, epochs=3, steps_per_epoch=11)
        step = train.make_step(model, optimizer, x, y, 96, cuda_graphs)  # batch 96: every epoch ends on 40 rows
        losses = train.fit(state, x, y, batch_size=96, shuffle=True, step=step)
        results.append((losses.cpu(), [p.detach().cpu() for p in model.parameters()]))
    (eager_losses, eager_weights), (graph_losses, graph_weights) = results
    assert torch.equal(eager_losses, graph_losses)
    assert all(torch.equal(a, b) for a, b in zip(eager_weights, graph_weights, strict=True))


def test_torchsummary_does_not_touch_the_global_rng():
    model = build_model(8)
    before = torch.get_rng_state()
    train.summary_text(model, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow
def test_the_first_line_reaches_a_pipe_while_the_stage_trains(tmp_path):
    # CI logs and `dvc repro | tee` are pipes: the line saying what trains must come when it starts, not at the end.
    prepared(tmp_path, **{"data.synthetic": {"n": 1_000_000, "low": 0, "high": 10}, "train.epochs": 1})
    process = start_stage("train", tmp_path)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)  # the whole run takes minutes
        assert ready and " steps of batch 2 on cpu" in process.stdout.readline() and process.poll() is None
    finally:
        process.kill()
        process.communicate()


@pytest.mark.slow
def test_a_loss_that_blows_up_early_in_a_long_epoch_is_caught_within_seconds(tmp_path):
    # One epoch of 500,000 steps (minutes of training), diverging in its first steps: a sync comes about once a second.
    prepared(tmp_path, **{"data.synthetic": {"n": 1_000_000, "low": 0, "high": 10}, "train.epochs": 1, "train.lr": 10})
    start = time.monotonic()
    result = stage("train", tmp_path, check=False)
    assert time.monotonic() - start < 30, result.stderr
    assert_one_clear_line(result, ["train.lr 10", "no model was written"])
    assert re.search(
        r"^train: error: loss became (inf|nan) at step \d{1,3} \(epoch 1\) with train.lr 10;", result.stderr
    )
    assert not (tmp_path / "artifacts/mymodel.pth").exists()


@pytest.mark.slow
def test_a_weight_that_overflows_in_the_last_update_writes_no_model(tmp_path):
    # The loss of the one step is finite (about 1e36); its update pushes a weight past float32's range.
    prepared(tmp_path, **{"data.x": [[1e18, 1e18]], "data.y": [[0]], "train.epochs": 1, "train.lr": 1e6})
    result = stage("train", tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    line = r"train: error: weights became -?inf by step 1 with train.lr 1e\+06; no model was written\. Lower train\.lr"
    assert re.fullmatch(line + r".*\n", result.stderr), result.stderr
    assert not (tmp_path / "artifacts/mymodel.pth").exists()


def peak_rss_mib_of_train(folder):
    """Run the train stage in `folder` and return its peak resident memory (the kernel's count, via wait4)."""
    process = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=folder, env=env(PYTHONPATH=str(ROOT)))
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_steps(tmp_path):
    # The losses live in one preallocated buffer (4 bytes a step); a tensor kept per step would add tens of MB here.
    prepared(tmp_path, **{"data.synthetic": {"n": 10_000, "low": 0, "high": 10}, "train.epochs": 1})
    short = peak_rss_mib_of_train(tmp_path)  # 5,000 steps
    set_params(tmp_path, **{"train.epochs": 10})
    long = peak_rss_mib_of_train(tmp_path)  # 50,000 steps
    assert long - short < 15, (short, long)


@pytest.mark.parametrize(
    ("stop_at", "shuffle"),
    [(7, True), (6, True), (15, True), (7, False)],
    ids=["mid-epoch", "epoch-boundary", "last-step", "no-shuffle"],
)
def test_a_trainer_resumed_from_its_state_gives_the_bytes_of_an_unbroken_run(tmp_path, monkeypatch, stop_at, shuffle):
    monkeypatch.chdir(tmp_path)  # a stop writes checkpoints/train.pt here
    x = torch.rand(5, 2, generator=torch.Generator().manual_seed(1)) * 10  # 3 batches of 2 an epoch, the last of 1
    y = x.sum(dim=1, keepdim=True)

    def new_state():
        torch.manual_seed(0)
        model = build_model(8)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        return TrainingState(model, optimizer, generator, epochs=5, steps_per_epoch=3)

    def fit(state, step=None):
        step = step or train.make_step(state.model, state.optimizer, x, y, 2, cuda_graphs=False)
        supervisor = Supervisor(state, fingerprint={"test": True})
        return train.fit(state, x, y, batch_size=2, shuffle=shuffle, step=step, supervisor=supervisor)

    unbroken = new_state()
    losses = fit(unbroken).clone()

    stopped = new_state()
    step = train.make_step(stopped.model, stopped.optimizer, x, y, 2, cuda_graphs=False)

    def step_then_stop(xb, yb):  # a real SIGTERM, as a preempted machine sends, during step `stop_at`
        if stopped.step == stop_at - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(xb, yb)

    with pytest.raises(Interrupted):
        fit(stopped, step_then_stop)
    assert stopped.step == stop_at
    saved = torch.load("checkpoints/train.pt", weights_only=True)

    resumed = new_state()
    resumed.load_state_dict(saved)
    assert torch.equal(fit(resumed), losses)
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.parameters(), unbroken.model.parameters(), strict=True))
