"""The float32 checks at their edges: a pair passes exactly when prepare would store a finite target."""

import numpy as np
import pytest

from stages import prepare
from stages.common import UserError
from stages.params import FLOAT32_MAX, load_params
from tests.conftest import set_params

HALF = 2.0**127 - 2.0**103  # FLOAT32_MAX / 2, itself a float32

PAIRS = [
    (HALF, HALF),  # sums to FLOAT32_MAX exactly
    (FLOAT32_MAX, 1e31),  # under half a float32 step (2**103) above the top: rounds down to FLOAT32_MAX
    (FLOAT32_MAX, 1.1e31),  # over half a step: rounds up to inf
    (-FLOAT32_MAX, -FLOAT32_MAX),
    (FLOAT32_MAX, -FLOAT32_MAX),
]


@pytest.mark.parametrize("pair", PAIRS)
def test_a_pair_passes_exactly_when_its_float32_sum_is_finite(workdir, pair):
    set_params(workdir, **{"evaluate.points": [list(pair)]})
    with np.errstate(over="ignore"):
        finite = np.isfinite(np.float32(pair[0]) + np.float32(pair[1]))  # what prepare's np.add gives
    if not finite:
        with pytest.raises(UserError, match=r"evaluate.points .*row 0 is .*, whose sum \(its target\) is beyond"):
            load_params()
        return
    prepare.main()
    assert np.isfinite(np.load(workdir / "data/val.npy")).all()


def test_a_value_just_past_float32s_top_is_refused_even_where_the_cast_would_round_it_down(workdir):
    # numpy would store FLOAT32_MAX * (1 + 1e-9) as FLOAT32_MAX; the rule is simply |v| <= FLOAT32_MAX.
    set_params(workdir, **{"evaluate.points": [[FLOAT32_MAX * (1 + 1e-9), 0]]})
    with pytest.raises(UserError, match=r"row 0 holds 3.40282346\d*e\+38, beyond float32's range"):
        load_params()
