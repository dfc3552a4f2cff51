"""Step 1 of the tutorial: the inputs and their targets, as float32.

data/train.npy holds data.x with data.y, or, when data.synthetic.n > 0, that many pairs drawn
uniformly from [low, high) with the params seed (as float32, so a draw may round to high), each
with its sum; data/val.npy holds evaluate.points and their sums. Each is a table with a row per
pair: x1, x2, target (stages/data.py). Nothing here needs torch.
"""

import numpy as np

from stages.common import run_stage
from stages.data import TRAIN_FILE, VAL_FILE, save_pairs
from stages.params import load_params


def table(x, y=None):
    """Rows of x1, x2 and y (the sum x1 + x2 of the float32 inputs when y is not given)."""
    rows = np.empty((len(x), 3), dtype=np.float32)
    rows[:, :2] = x
    rows[:, 2] = np.add(rows[:, 0], rows[:, 1]) if y is None else np.ravel(y)
    return rows


def training_pairs(params):
    synthetic = params.data.synthetic
    if synthetic.n == 0:
        return table(params.data.x, params.data.y)
    x = np.random.default_rng(params.seed).random((synthetic.n, 2), dtype=np.float32)
    x *= synthetic.high - synthetic.low  # in place: 10 million pairs never need a float64 copy
    x += synthetic.low
    return table(x)


def main():
    params = load_params()
    train = training_pairs(params)
    save_pairs(TRAIN_FILE, train)
    val = table(params.evaluate.points)
    save_pairs(VAL_FILE, val)
    print(f"prepare: {len(train)} training pairs -> {TRAIN_FILE}, {len(val)} unseen points -> {VAL_FILE}")


if __name__ == "__main__":
    run_stage(main)
