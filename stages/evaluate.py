"""Step 5 of the tutorial: load mymodel.pth into a fresh network and predict pairs it never saw.

Writes artifacts/predictions.csv (x1, x2, target, prediction) and artifacts/metrics.json:
final_loss (MSE over the whole training set), mae and max_abs_error (over evaluate.points).
"""

import csv
import json

import torch
from torch import nn

from stages.common import atomic_output, run_stage
from stages.model import load_model, load_tensors, make_deterministic, pick_device
from stages.params import load_params

TRAIN_FILE = "data/train.pt"
VAL_FILE = "data/val.pt"
PREDICTIONS_FILE = "artifacts/predictions.csv"
METRICS_FILE = "artifacts/metrics.json"


def main():
    params = load_params()
    device = pick_device(params.train.device)
    make_deterministic(params.seed, params.train.threads)
    model = load_model(params.model.hidden, device)
    train, val = load_tensors(TRAIN_FILE, device), load_tensors(VAL_FILE, device)

    with torch.no_grad():
        final_loss = nn.functional.mse_loss(model(train["x"]), train["y"]).item()
        predictions = model(val["x"])
    errors = (predictions - val["y"]).abs()
    metrics = {
        "final_loss": round(final_loss, 6),
        "mae": round(errors.mean().item(), 6),
        "max_abs_error": round(errors.max().item(), 6),
    }

    with atomic_output(PREDICTIONS_FILE, "w") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["x1", "x2", "target", "prediction"])
        for (x1, x2), target, prediction in zip(
            val["x"].tolist(), val["y"].flatten().tolist(), predictions.flatten().tolist(), strict=True
        ):
            writer.writerow([f"{x1:g}", f"{x2:g}", f"{target:g}", f"{prediction:.6f}"])
    with atomic_output(METRICS_FILE, "w") as file:
        json.dump(metrics, file, indent=2)
        file.write("\n")
    print(f"evaluate: {json.dumps(metrics)}")


if __name__ == "__main__":
    run_stage(main)
