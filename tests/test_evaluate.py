import csv
import json

from stages import evaluate, prepare, train


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
    metrics = json.loads((workdir / "artifacts/metrics.json").read_text())
    errors = [abs(float(r["prediction"]) - float(r["target"])) for r in rows]
    assert metrics["mae"] == round(sum(errors) / 3, 6) or abs(metrics["mae"] - sum(errors) / 3) < 1e-5
    assert abs(metrics["max_abs_error"] - max(errors)) < 1e-5
    assert 0 <= metrics["final_loss"] < 0.5
