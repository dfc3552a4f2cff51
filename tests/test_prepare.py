import torch

from stages import prepare
from tests.conftest import set_params


def test_default_data_is_the_tutorial_pairs_and_their_sums(workdir):
    prepare.main()
    train = torch.load("data/train.pt", weights_only=True)
    val = torch.load("data/val.pt", weights_only=True)
    assert train["x"].dtype == train["y"].dtype == torch.float32
    assert train["x"].tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert train["y"].tolist() == [[3], [7], [11], [15]]
    assert val["x"].tolist() == [[8, 9], [10, 11], [1.5, 2.5]]
    assert val["y"].tolist() == [[17], [21], [4]]


def test_synthetic_pairs_are_uniform_in_range_seeded_and_summed(workdir):
    set_params(workdir, **{"data.synthetic": {"n": 10_000, "low": -5, "high": 5}})
    prepare.main()
    first = (workdir / "data/train.pt").read_bytes()
    train = torch.load("data/train.pt", weights_only=True)
    x, y = train["x"], train["y"]
    assert x.shape == (10_000, 2) and y.shape == (10_000, 1)
    assert x.min() >= -5 and x.max() < 5
    assert abs(x.mean().item()) < 0.1
    assert torch.equal(y, x.sum(dim=1, keepdim=True))
    prepare.main()
    assert (workdir / "data/train.pt").read_bytes() == first
    set_params(workdir, seed=1)
    prepare.main()
    assert (workdir / "data/train.pt").read_bytes() != first
