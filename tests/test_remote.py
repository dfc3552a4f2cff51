"""The default remote, a folder beside the repo: push from one clone, pull into a sibling, nothing to re-run."""

import pytest

from tests.conftest import clone_repo, run

pytestmark = pytest.mark.slow  # real dvc in temp clones: seconds a test


def test_push_then_pull_into_a_sibling_clone_runs_nothing(tmp_path):
    first = clone_repo(tmp_path / "addnet")  # .dvc/config: remote ../addnet-storage, beside the repo
    run(["dvc", "repro"], first)
    assert "pushed" in run(["dvc", "push"], first).stdout
    assert (tmp_path / "addnet-storage").is_dir()

    second = tmp_path / "addnet-2"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    run(["dvc", "pull"], second)
    model = (first / "artifacts/mymodel.pth").read_bytes()
    assert (second / "artifacts/mymodel.pth").read_bytes() == model
    out = run(["dvc", "repro"], second).stdout
    assert "Running stage" not in out and "up to date" in out

    run(["dvc", "get", str(first), "artifacts/mymodel.pth", "-o", "fetched.pth"], tmp_path)
    assert (tmp_path / "fetched.pth").read_bytes() == model
