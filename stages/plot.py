"""The pictures: the tutorial's loss curve (artifacts/loss.png) and the hidden layer as a heatmap
(artifacts/activations.png), drawn from the logs the train and activations stages wrote.

Needs no torch, and draws on matplotlib's Figure directly: pyplot's window machinery is not needed
to write a PNG.
"""

import csv

from matplotlib.figure import Figure

from stages.common import UserError, atomic_output, run_stage

LOSS_FILE = "artifacts/loss.tsv"
ACTIVATIONS_FILE = "artifacts/activations.csv"
LOSS_PNG = "artifacts/loss.png"
ACTIVATIONS_PNG = "artifacts/activations.png"


def read_table(path, delimiter, stage):
    try:
        with open(path, encoding="utf-8", newline="") as file:
            return list(csv.DictReader(file, delimiter=delimiter))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro {stage}`") from None


def read_losses(path=LOSS_FILE):
    rows = read_table(path, "\t", "train")
    try:
        return [int(row["epoch"]) for row in rows], [float(row["loss"]) for row in rows]
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: expected tab-separated columns step, epoch, loss ({error!r})") from None


def read_activations(path=ACTIVATIONS_FILE):
    """(inputs as (x1, x2) labels, unit names, rows of hidden values)."""
    rows = read_table(path, ",", "activations")
    try:
        units = [name for name in rows[0] if name.startswith("h")]
        inputs = [f"({row['x1']}, {row['x2']})" for row in rows]
        return inputs, units, [[float(row[unit]) for unit in units] for row in rows]
    except (IndexError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: expected comma-separated columns x1, x2, h0, h1, ... ({error!r})") from None


def save_png(fig, path):
    with atomic_output(path) as file:
        fig.savefig(file, format="png", dpi=100, metadata={"Software": None})  # no version stamp: same bytes


def loss_figure(epochs, losses):
    steps_per_epoch = epochs.count(1)
    # One point per optimizer step, placed at its fraction of an epoch, so the x axis really is epochs.
    x = [(i + 1) / steps_per_epoch for i in range(len(losses))]
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.subplots()
    ax.plot(x, losses)
    ax.set_title("Loss Variation over increasing epochs")
    ax.set_xlabel("epochs")
    ax.set_ylabel("loss value")
    return fig


def activations_figure(inputs, units, values):
    fig = Figure(figsize=(1.2 + 0.6 * len(units), 1.5 + 0.4 * len(inputs)), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_title("Hidden layer activations (ReLU outputs)")
    ax.set_xlabel("hidden unit")
    ax.set_ylabel("input (x1, x2)")
    ax.set_xticks(range(len(units)), units)
    ax.set_yticks(range(len(inputs)), inputs)
    fig.colorbar(image, ax=ax)
    return fig


def main():
    epochs, losses = read_losses()
    inputs, units, values = read_activations()
    save_png(loss_figure(epochs, losses), LOSS_PNG)
    save_png(activations_figure(inputs, units, values), ACTIVATIONS_PNG)
    print(f"plot: {len(losses)} losses -> {LOSS_PNG}, {len(inputs)}x{len(units)} activations -> {ACTIVATIONS_PNG}")


if __name__ == "__main__":
    run_stage(main)
