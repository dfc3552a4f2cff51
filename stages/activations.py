"""Tutorial step 6: the hidden layer's values, read by running the first two layers of the trained model.

model[:2] is the Sequential's own slice (Linear, ReLU): the same values as calling the layers by hand
or a forward that also returns the hidden layer (tests/test_activations.py shows all three agree).
Writes artifacts/activations.csv (a row per training input, columns h0..h{hidden-1}; the first
MAX_ROWS inputs when data.synthetic makes more) and a heatmap, artifacts/activations.png.
"""

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from stages.common import atomic_output, run_stage  # noqa: E402
from stages.model import load_model, load_tensors, make_deterministic  # noqa: E402
from stages.params import load_params  # noqa: E402

TRAIN_FILE = "data/train.pt"
CSV_FILE = "artifacts/activations.csv"
PNG_FILE = "artifacts/activations.png"
MAX_ROWS = 64


def hidden_activations(model, x):
    with torch.no_grad():
        return model[:2](x)


def heatmap(values, inputs):
    rows, units = values.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * units, 1.5 + 0.4 * rows))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_title("Hidden layer activations (ReLU outputs)")
    ax.set_xlabel("hidden unit")
    ax.set_ylabel("input (x1, x2)")
    ax.set_xticks(range(units), [f"h{i}" for i in range(units)])
    ax.set_yticks(range(rows), [f"({a:g}, {b:g})" for a, b in inputs])
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def main():
    params = load_params()
    make_deterministic(params.seed, params.train.threads)
    # A few rows through a tiny network: the CPU is exact and fast, whatever train.device says.
    model = load_model(params.model.hidden, torch.device("cpu"))
    x = load_tensors(TRAIN_FILE)["x"][:MAX_ROWS]
    values = hidden_activations(model, x)

    with atomic_output(CSV_FILE, "w") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow([f"h{i}" for i in range(values.shape[1])])
        writer.writerows([[f"{v:.6f}" for v in row] for row in values.tolist()])
    fig = heatmap(values.numpy(), x.tolist())
    with atomic_output(PNG_FILE) as file:
        fig.savefig(file, format="png", dpi=100, metadata={"Software": None})
    print(f"activations: {tuple(values.shape)} hidden values -> {CSV_FILE}, {PNG_FILE}")


if __name__ == "__main__":
    run_stage(main)
