"""Step 5 of the tutorial: load mymodel.pth into a fresh network and predict pairs it never saw.

Writes artifacts/predictions.csv (x1, x2, target, prediction) and artifacts/metrics.json:
final_loss (MSE over the whole training set), mae and max_abs_error (over evaluate.points).
"""

import csv
import json

import torch
from torch import nn

from stages.common import atomic_output, run_stage
from stages.data import TRAIN_FILE, VAL_FILE
from stages.model import load_data, load_model, make_deterministic, pick_device
from stages.params import load_params

CHUNK_ROWS = 1 << 20
PREDICTIONS_FILE = "artifacts/predictions.csv"
METRICS_FILE = "artifacts/metrics.json"


def main():
    params = load_params()
    device = pick_device(params.train.device)
    make_deterministic(params.seed, params.train.threads, device)
    model = load_model(params.model.hidden, device)
    train_x, train_y = load_data(TRAIN_FILE, device)
    val_x, val_y = load_data(VAL_FILE, device)

    with torch.no_grad():
        # In chunks: the hidden layer of 10 million rows at once would need 320 MB.
        chunks = zip(train_x.split(CHUNK_ROWS), train_y.split(CHUNK_ROWS), strict=True)
        squared_error = sum(nn.functional.mse_loss(model(x), y, reduction="sum") for x, y in chunks)
        final_loss = (squared_error / len(train_x)).item()
        predictions = model(val_x)
    errors = (predictions - val_y).abs()
    metrics = {
        "final_loss": round(final_loss, 6),
        "mae": round(errors.mean().item(), 6),
        "max_abs_error": round(errors.max().item(), 6),
    }

    with atomic_output(PREDICTIONS_FILE, "w") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["x1", "x2", "target", "prediction"])
        for (x1, x2), target, prediction in zip(
            val_x.tolist(), val_y.flatten().tolist(), predictions.flatten().tolist(), strict=True
        ):
            writer.writerow([f"{x1:g}", f"{x2:g}", f"{target:g}", f"{prediction:.6f}"])
    with atomic_output(METRICS_FILE, "w") as file:
        json.dump(metrics, file, indent=2)
        file.write("\n")
    print(f"evaluate: {json.dumps(metrics)}")


if __name__ == "__main__":
    run_stage(main)
