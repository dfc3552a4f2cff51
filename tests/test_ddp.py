"""train.nproc: 2 runs the train stage under torchrun with DistributedDataParallel (gloo on the CPU)."""

import re
import shutil

import torch

from tests.conftest import ROOT, run, set_params

UNEVEN = {"data.synthetic": {"n": 1000, "low": 0, "high": 10}, "train.batch_size": 96, "train.epochs": 3}


def train(workdir, nproc):
    set_params(workdir, **{"train.nproc": nproc})
    result = run(["python", "-m", "stages.train"], workdir, PYTHONPATH=str(ROOT))
    return result, {name: (workdir / "artifacts" / name).read_bytes() for name in ("mymodel.pth", "loss.tsv")}


def test_two_gloo_ranks_match_one_process_and_each_other(tmp_path):
    shutil.copy2(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, **UNEVEN)  # 1000 rows in batches of 96: the last batch (40 rows) splits 20/20
    run(["python", "-m", "stages.prepare"], tmp_path, PYTHONPATH=str(ROOT))

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
    shutil.copy2(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, **{"train.lr": 10, "train.nproc": 2})
    run(["python", "-m", "stages.prepare"], tmp_path, PYTHONPATH=str(ROOT))
    result = run(["python", "-m", "stages.train"], tmp_path, check=False, PYTHONPATH=str(ROOT))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(r"^train\[rank [01]\]: error: loss became inf at step \d+", result.stderr, re.M), result.stderr
    assert re.search(r"^train: error: rank [01] of 2 failed with exit code -?\d+", result.stderr, re.M), result.stderr
    assert not (tmp_path / "artifacts" / "mymodel.pth").exists()
