"""Versioned model artifacts: dvc.yaml's `mymodel` (type model), versions registered as GTO Git tags and pushed to a
DVC remote, then fetched by name with `dvc artifacts get` into an empty folder that is no repository at all."""

import pytest

from tests.conftest import clone_repo, run, set_params

pytestmark = pytest.mark.slow  # real dvc in temp clones: seconds a test


def test_registered_versions_are_fetched_by_name_from_the_remote(tmp_path):
    repo = clone_repo(tmp_path / "addnet")
    run(["dvc", "repro"], repo)
    storage = tmp_path / "model-storage"
    run(["dvc", "remote", "add", "-d", "-f", "storage", str(storage)], repo)
    # Committed before tagging: whoever fetches a version reads the remote's URL from the tagged commit's
    # .dvc/config, as they read the model's md5 from its dvc.lock.
    run(["git", "commit", "-qam", "Model storage: a folder"], repo)
    result = run(["gto", "register", "mymodel", "--version", "v1.0.0"], repo)
    assert "Created git tag 'mymodel@v1.0.0' that registers version" in result.stdout
    run(["dvc", "push"], repo)
    v1_0 = (repo / "artifacts/mymodel.pth").read_bytes()

    # A second version, registered by hand: an annotated tag named in GTO's form (a lightweight tag is not seen).
    set_params(repo, **{"train.epochs": 60})
    run(["dvc", "repro"], repo)
    run(["git", "commit", "-qam", "60 epochs"], repo)
    run(["git", "tag", "-a", "mymodel@v1.1.0", "-m", "mymodel v1.1.0: 60 epochs"], repo)
    run(["dvc", "push"], repo)
    v1_1 = (repo / "artifacts/mymodel.pth").read_bytes()
    assert v1_1 != v1_0

    empty = tmp_path / "empty"
    empty.mkdir()
    # A file:// URL is cloned like any Git URL, into a temp folder with an empty cache: the model has to come
    # from the remote. (A plain path is opened in place, with that clone's own cache and current config.)
    url = repo.as_uri()
    result = run(["dvc", "artifacts", "get", url, "mymodel"], empty)
    assert "Downloaded 1 file(s) to 'mymodel.pth'" in result.stdout
    assert (empty / "mymodel.pth").read_bytes() == v1_1  # no --rev: the highest version
    run(["dvc", "artifacts", "get", url, "mymodel", "--rev", "v1.0.0", "-o", "v1.0.0.pth"], empty)
    assert (empty / "v1.0.0.pth").read_bytes() == v1_0
    assert sorted(path.name for path in empty.iterdir()) == ["mymodel.pth", "v1.0.0.pth"]  # and nothing else
