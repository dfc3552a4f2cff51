"""Step 1 of the tutorial: the inputs and their sums as float32 tensors.

data/train.pt holds {"x": (n, 2), "y": (n, 1)}: data.x/data.y, or data.synthetic.n pairs drawn
uniformly from [low, high) when n > 0. data/val.pt holds evaluate.points and their sums.
"""

import torch

from stages.common import atomic_output, run_stage
from stages.params import load_params

TRAIN_FILE = "data/train.pt"
VAL_FILE = "data/val.pt"


def training_pairs(params):
    synthetic = params.data.synthetic
    if synthetic.n == 0:
        return torch.tensor(params.data.x), torch.tensor(params.data.y)
    generator = torch.Generator().manual_seed(params.seed)
    x = torch.empty(synthetic.n, 2).uniform_(synthetic.low, synthetic.high, generator=generator)
    return x, x.sum(dim=1, keepdim=True)


def save(tensors, path):
    with atomic_output(path) as file:
        torch.save(tensors, file)


def main():
    params = load_params()
    x, y = training_pairs(params)
    save({"x": x, "y": y}, TRAIN_FILE)
    points = torch.tensor(params.evaluate.points)
    save({"x": points, "y": points.sum(dim=1, keepdim=True)}, VAL_FILE)
    print(f"prepare: {len(x)} training pairs -> {TRAIN_FILE}, {len(points)} unseen points -> {VAL_FILE}")


if __name__ == "__main__":
    run_stage(main)
