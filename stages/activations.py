"""Tutorial step 6: the hidden layer's values, read by running the first two layers of the trained model.

model[:2] is the Sequential's own slice (Linear, ReLU): the same values as calling the layers by hand
or a forward that also returns the hidden layer (tests/test_activations.py shows all three agree).
Writes artifacts/activations.csv: a row per training input (the first MAX_ROWS when data.synthetic
makes more), columns x1, x2, h0..h{hidden-1}. The plot stage draws it as a heatmap.
"""

import csv

import torch

from stages.common import atomic_output, run_stage
from stages.data import TRAIN_FILE, load_pairs
from stages.model import load_model, make_deterministic
from stages.params import load_params

CSV_FILE = "artifacts/activations.csv"
MAX_ROWS = 64


def hidden_activations(model, x):
    with torch.no_grad():
        return model[:2](x)


def main():
    params = load_params()
    # A few rows through a tiny network: the CPU is exact and fast, whatever train.device says.
    cpu = torch.device("cpu")
    make_deterministic(params.seed, params.train.threads, cpu)
    model = load_model(params.model.hidden, cpu)
    x = torch.from_numpy(load_pairs(TRAIN_FILE)[0][:MAX_ROWS].copy())
    values = hidden_activations(model, x)

    with atomic_output(CSV_FILE, "w") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["x1", "x2", *(f"h{i}" for i in range(values.shape[1]))])
        for (x1, x2), row in zip(x.tolist(), values.tolist(), strict=True):
            writer.writerow([f"{x1:g}", f"{x2:g}", *(f"{v:.6f}" for v in row)])
    print(f"activations: {tuple(values.shape)} hidden values -> {CSV_FILE}")


if __name__ == "__main__":
    run_stage(main)
