"""The tutorial's loss plot: artifacts/loss.tsv -> artifacts/loss.png. Needs no torch."""

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stages.common import UserError, atomic_output, run_stage  # noqa: E402

LOSS_FILE = "artifacts/loss.tsv"
PNG_FILE = "artifacts/loss.png"


def read_losses(path=LOSS_FILE):
    try:
        with open(path, encoding="utf-8", newline="") as file:
            rows = list(csv.DictReader(file, delimiter="\t"))
        return [int(row["epoch"]) for row in rows], [float(row["loss"]) for row in rows]
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro train`") from None
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: expected tab-separated columns step, epoch, loss ({error!r})") from None


def main():
    epochs, losses = read_losses()
    steps_per_epoch = epochs.count(1)
    # One point per optimizer step, placed at its fraction of an epoch, so the x axis really is epochs.
    x = [(i + 1) / steps_per_epoch for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, losses)
    ax.set_title("Loss Variation over increasing epochs")
    ax.set_xlabel("epochs")
    ax.set_ylabel("loss value")
    fig.tight_layout()
    with atomic_output(PNG_FILE) as file:
        fig.savefig(file, format="png", dpi=100, metadata={"Software": None})
    print(f"plot: {len(losses)} losses -> {PNG_FILE}")


if __name__ == "__main__":
    run_stage(main)
