"""End to end: a fresh clone, the real `dvc`, the commands a user types, in the order they type them."""

import json

import pytest

from tests.conftest import clone_repo, run, set_params

pytestmark = pytest.mark.slow  # real dvc in temp clones: seconds a test

STAGES = ["prepare", "train", "evaluate", "activations", "plot"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return clone_repo(tmp_path_factory.mktemp("pipeline"))


def dvc(repo, *args):
    return run(["dvc", *args], repo).stdout


def test_repro_on_a_fresh_clone_reproduces_the_committed_lock_byte_for_byte(repo):
    # The text outputs come with the clone (git, cache: false): a plain repro runs what is missing.
    out = dvc(repo, "repro")
    assert all(f"Running stage '{stage}'" in out for stage in ("prepare", "train", "plot")), out
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # dvc.lock holds every output's md5: unchanged
    out = dvc(repo, "repro", "-f")  # every stage again, evaluate and activations included: the same bytes
    assert all(f"Running stage '{stage}'" in out for stage in STAGES), out
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


def test_second_repro_runs_nothing(repo):
    out = dvc(repo, "repro")
    assert "Running stage" not in out and "up to date" in out


def test_dag_shows_the_five_stages(repo):
    out = dvc(repo, "dag")
    assert all(stage in out for stage in STAGES)


def test_metrics_show(repo):
    out = dvc(repo, "metrics", "show")
    assert "mae" in out and "final_loss" in out and "max_abs_error" in out


def test_new_points_rerun_evaluation_but_never_train(repo):
    set_params(repo, **{"evaluate.points": [[8, 9], [10, 11], [1.5, 2.5], [20, 30]]})
    out = dvc(repo, "repro")
    assert "Running stage 'evaluate'" in out and "Running stage 'train'" not in out
    params = dvc(repo, "params", "diff")
    assert "evaluate.points" in params and "[20, 30]" in params
    metrics = dvc(repo, "metrics", "diff")
    assert "mae" in metrics
    run(["git", "checkout", "params.yaml"], repo)
    dvc(repo, "repro")
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


def test_editing_a_shared_module_reruns_every_stage_that_imports_it(repo):
    common = repo / "stages" / "common.py"
    original = common.read_text()
    common.write_text(original + "\n# touched\n")
    status = dvc(repo, "status")
    assert all(f"{stage}:" in status for stage in STAGES)
    model = repo / "stages" / "model.py"
    common.write_text(original)
    model.write_text(model.read_text() + "\n# touched\n")
    changed = {line.rstrip(":") for line in dvc(repo, "status").splitlines() if line.endswith(":") and line[0] != "\t"}
    assert changed == {"train", "evaluate", "activations"}
    run(["git", "checkout", "stages"], repo)


def test_plots_show_writes_an_offline_page(repo):
    out = dvc(repo, "plots", "show")
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "index.html" in out
    assert "cdn.jsdelivr" not in page and "<script src=" not in page
    assert page.count("vegaEmbed('#") == 2  # one call per vega plot: loss curve, predictions vs targets


def test_exp_run_set_param_then_exp_show(repo):
    out = dvc(repo, "exp", "run", "-S", "train.lr=0.01")
    assert "Running stage 'train'" in out
    table = json.loads(dvc(repo, "exp", "show", "--json"))
    experiments = [exp for commit in table for exp in (commit.get("experiments") or [])]
    assert experiments, table
    revs = [rev for exp in experiments for rev in exp["revs"]]
    lrs = {rev["data"]["params"]["params.yaml"]["data"]["train"]["lr"] for rev in revs}
    assert 0.01 in lrs
    assert "lr: 0.01" in (repo / "params.yaml").read_text()


def test_exp_run_with_a_tiny_lr_in_dvc_notation_trains_with_it(repo):
    dvc(repo, "exp", "run", "-S", "train.lr=0.000001")
    assert "lr: 1e-06" in (repo / "params.yaml").read_text()
    metrics = json.loads((repo / "artifacts" / "metrics.json").read_text())
    assert metrics["mae"] > 1.0  # lr 1e-6 barely trains: far worse than the default's ~0.1
