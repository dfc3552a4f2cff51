import csv

import pytest
import torch

from stages import prepare, train
from stages.model import build_model, make_deterministic
from tests.conftest import ROOT, run, set_params


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


def test_a_single_pair_trains(workdir):
    set_params(workdir, **{"data.x": [[1, 2]], "data.y": [[3]]})
    prepare.main()
    train.main()
    assert len(read_losses()) == 50  # one step of one row per epoch


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
        generator = torch.Generator(device="cuda").manual_seed(0)
        losses = train.fit(  # batch 96: every epoch ends on an uneven batch, which runs eagerly
            model, optimizer, x, y, epochs=3, batch_size=96, shuffle=True, generator=generator, cuda_graphs=cuda_graphs
        )
        results.append((torch.stack(losses).cpu(), [p.detach().cpu() for p in model.parameters()]))
    (eager_losses, eager_weights), (graph_losses, graph_weights) = results
    assert torch.equal(eager_losses, graph_losses)
    assert all(torch.equal(a, b) for a, b in zip(eager_weights, graph_weights, strict=True))


def test_torchsummary_does_not_touch_the_global_rng():
    model = build_model(8)
    before = torch.get_rng_state()
    train.summary_text(model, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)


def test_outputs_are_byte_identical_across_runs_and_thread_settings(tmp_path):
    for name in ("params.yaml",):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    set_params(
        tmp_path, **{"data.synthetic": {"n": 20_000, "low": 0, "high": 10}, "train.batch_size": 4096, "train.epochs": 2}
    )
    digests = []
    for threads in ("1", "2"):
        run(["python", "-m", "stages.prepare"], tmp_path, PYTHONPATH=str(ROOT))
        run(
            ["python", "-m", "stages.train"],
            tmp_path,
            PYTHONPATH=str(ROOT),
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
        )
        digests.append([(tmp_path / f).read_bytes() for f in ("artifacts/mymodel.pth", "artifacts/loss.tsv")])
    assert digests[0] == digests[1]
