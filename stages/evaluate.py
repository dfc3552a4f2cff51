"""Step 5 of the tutorial: load mymodel.pth into a fresh network and predict pairs it never saw.

Writes artifacts/predictions.csv (x1, x2, target, prediction) and artifacts/metrics.json:
final_loss (MSE over the whole training set), mae and max_abs_error (over evaluate.points).
"""

import csv
import json
import math
import sys

import torch
from torch import nn

from stages.common import atomic_output, run_stage
from stages.data import TRAIN_FILE, VAL_FILE
from stages.model import load_data, load_model, make_deterministic, pick_device
from stages.params import load_params

CHUNK_VALUES = 8 << 20  # hidden values per chunk: 32 MB of float32, 1M rows of the tutorial's 8 units
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
        # In chunks: the hidden layer of 10 million rows at once would need 320 MB (more for a wider layer).
        rows = max(1, CHUNK_VALUES // params.model.hidden)
        chunks = zip(train_x.split(rows), train_y.split(rows), strict=True)
        squared_error = sum(nn.functional.mse_loss(model(x), y, reduction="sum") for x, y in chunks)
        final_loss = (squared_error / len(train_x)).item()
        predictions = model(val_x)
    errors = (predictions - val_y).abs()
    metrics = {
        "final_loss": round(final_loss, 6),
        "mae": round(errors.mean().item(), 6),
        "max_abs_error": round(errors.max().item(), 6),
    }
    # A model with finite weights can still overflow float32 on large inputs. JSON has no inf or NaN (Python's
    # bare NaN/Infinity are rejected by strict readers: JavaScript, jq), so such a metric is written as null with a
    # warning: the run still finishes, its predictions.csv shows the overflow, and `dvc exp show` shows the null.
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    if bad:
        metrics.update(dict.fromkeys(bad))
        print(
            f"evaluate: warning: {', '.join(f'{name} is {value}' for name, value in bad.items())}: the model's "
            f"outputs overflow float32; written as null in {METRICS_FILE}",
            file=sys.stderr,
        )

    with atomic_output(PREDICTIONS_FILE, "w") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["x1", "x2", "target", "prediction"])
        for (x1, x2), target, prediction in zip(
            val_x.tolist(), val_y.flatten().tolist(), predictions.flatten().tolist(), strict=True
        ):
            writer.writerow([f"{x1:g}", f"{x2:g}", f"{target:g}", f"{prediction:.6f}"])
    with atomic_output(METRICS_FILE, "w") as file:
        json.dump(metrics, file, indent=2, allow_nan=False)
        file.write("\n")
    print(f"evaluate: {json.dumps(metrics, allow_nan=False)}")


if __name__ == "__main__":
    run_stage(main)
