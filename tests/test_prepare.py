import numpy as np

from stages import prepare
from stages.data import load_pairs
from tests.conftest import set_params


def test_default_data_is_the_tutorial_pairs_and_their_sums(workdir):
    prepare.main()
    x, y = load_pairs("data/train.npy")
    assert x.dtype == y.dtype == np.float32
    assert x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert y.tolist() == [[3], [7], [11], [15]]
    val_x, val_y = load_pairs("data/val.npy")
    assert val_x.tolist() == [[8, 9], [10, 11], [1.5, 2.5]]
    assert val_y.tolist() == [[17], [21], [4]]


def test_synthetic_pairs_are_uniform_in_range_seeded_and_summed(workdir):
    set_params(workdir, **{"data.synthetic": {"n": 10_000, "low": -5, "high": 5}})
    prepare.main()
    first = (workdir / "data/train.npy").read_bytes()
    x, y = load_pairs("data/train.npy")
    assert x.shape == (10_000, 2) and y.shape == (10_000, 1)
    assert x.min() >= -5 and x.max() < 5
    assert abs(x.mean()) < 0.1
    assert np.array_equal(y, x.sum(axis=1, keepdims=True))
    prepare.main()
    assert (workdir / "data/train.npy").read_bytes() == first
    set_params(workdir, seed=1)
    prepare.main()
    assert (workdir / "data/train.npy").read_bytes() != first
