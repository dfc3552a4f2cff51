import csv
import json
import math

import numpy as np
import pytest
import torch

from stages import evaluate, prepare, train
from stages.model import MODEL_FILE, build_model
from tests.conftest import stage


def strict_json(text):
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse and jq do."""

    def refuse(constant):
        pytest.fail(f"metrics.json holds {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


def mse_over_the_training_set(workdir):
    """final_loss as docs/design.md defines it, computed apart from the stage: the trained model's MSE over every row of
    data/train.npy, in float64 NumPy from the saved weights."""
    table = np.load(workdir / "data/train.npy").astype(np.float64)
    weights = {name: t.double().numpy() for name, t in torch.load(workdir / MODEL_FILE).items()}
    hidden = np.maximum(table[:, :2] @ weights["0.weight"].T + weights["0.bias"], 0)
    predictions = hidden @ weights["2.weight"].T + weights["2.bias"]
    return float(np.mean((predictions[:, 0] - table[:, 2]) ** 2))


def test_predictions_on_unseen_points_are_near_their_sums(workdir):
    prepare.main()
    train.main()
    evaluate.main()
    with open("artifacts/predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["x1"], r["x2"], r["target"]) for r in rows] == [
        ("8", "9", "17"),
        ("10", "11", "21"),
        ("1.5", "2.5", "4"),
    ]
    for row in rows:
        assert abs(float(row["prediction"]) - float(row["target"])) < 1.0
    metrics = strict_json((workdir / "artifacts/metrics.json").read_text())
    errors = [abs(float(r["prediction"]) - float(r["target"])) for r in rows]
    assert metrics["mae"] == round(sum(errors) / 3, 6) or abs(metrics["mae"] - sum(errors) / 3) < 1e-5
    assert abs(metrics["max_abs_error"] - max(errors)) < 1e-5
    # Rounded to 6 places: within half of 1e-6 of the exact MSE (float32 against float64 adds ~1e-8). The last
    # batch's loss, or the MSE over the evaluate points, would be far off.
    assert metrics["final_loss"] == round(metrics["final_loss"], 6)
    assert abs(metrics["final_loss"] - mse_over_the_training_set(workdir)) <= 5.1e-7


def test_metrics_that_overflow_float32_are_null_with_one_warning(workdir):
    # Finite weights, but 3e+38 * 8 overflows float32: every prediction, and so every metric, is inf.
    prepare.main()
    huge = {name: torch.full_like(p, 3e38) for name, p in build_model(8).state_dict().items()}
    (workdir / "artifacts").mkdir()
    torch.save(huge, workdir / MODEL_FILE)
    result = stage("evaluate", workdir)
    assert result.stderr.splitlines() == [
        "evaluate: warning: final_loss is inf, mae is inf, max_abs_error is inf: the model's outputs overflow "
        "float32; written as null in artifacts/metrics.json"
    ]
    assert strict_json((workdir / "artifacts/metrics.json").read_text()) == dict.fromkeys(
        ["final_loss", "mae", "max_abs_error"]
    )
    with open(workdir / "artifacts/predictions.csv", newline="") as file:
        assert all(math.isinf(float(row["prediction"])) for row in csv.DictReader(file))
