"""The train stage's checkpoint: enough state to go on from a stop as if it never happened, to the byte.

It holds the weights, the optimizer's state, the shuffle generator's state at the start of the epoch it
stopped in (that epoch's order is drawn again from it), the steps done, their losses, and a fingerprint of
everything that decides the result. It lives in checkpoints/, which git ignores and dvc.yaml does not
declare: DVC deletes a declared output before its stage runs (unless `persist: true`) and fails a stage
whose declared output is missing afterwards, and this file must survive a failed run and be gone after a
good one. The train stage writes it on a clock and when stopped, and removes it after a successful run.
"""

import hashlib
import os
import sys
from pathlib import Path

import torch

from stages.common import UserError, atomic_output, file_md5
from stages.cpu import describe
from stages.model import load_tensors

CHECKPOINT_FILE = "checkpoints/train.pt"


def fingerprint(params, device, data_path):
    """What decides the result: the params the train stage reads, the data's md5, the torch build, the code paths."""
    cfg = params.train
    return {
        "seed": params.seed,
        "model.hidden": params.model.hidden,
        **{f"train.{key}": getattr(cfg, key) for key in ("epochs", "batch_size", "shuffle", "lr", "threads", "nproc")},
        "train.cuda_graphs": cfg.cuda_graphs and device.type == "cuda",
        "device": device.type,
        "data/train.npy md5": file_md5(data_path),
        "torch": str(torch.__version__),
        "code paths": describe() if device.type == "cpu" else torch.version.cuda,
        "stages/*.py md5": code_md5(),
    }


def code_md5():
    """The pipeline's code: a checkpoint made by other code is not resumed, even where the params match."""
    digest = hashlib.md5(usedforsecurity=False)
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def save(state, path=CHECKPOINT_FILE):
    with atomic_output(path, output=False) as file:
        torch.save(state, file)


def load(expected, path=CHECKPOINT_FILE):
    """The checkpoint at `path` if it was made with `expected` (a fingerprint), else None, with one line why."""
    if not os.path.exists(path):
        return None
    try:
        state = load_tensors(path)  # the stages' one safe torch.load: tensors and plain values only
        made_with = state["fingerprint"]
    except (UserError, KeyError, TypeError) as error:  # a checkpoint is a cache: an unreadable one is ignored
        why = error if isinstance(error, UserError) else f"{path}: not a checkpoint of this stage"
        print(f"train: ignoring {why}; starting from step 0", file=sys.stderr)
        return None
    changed = [key for key in expected if made_with.get(key) != expected[key]]
    if changed:
        key = changed[0]
        print(
            f"train: ignoring {path}: it was made with {key} {made_with.get(key)!r}, now {expected[key]!r}; "
            "starting from step 0",
            file=sys.stderr,
        )
        return None
    return state


def remove(*paths):
    for path in paths:
        Path(path).unlink(missing_ok=True)  # two machines sharing a folder may both remove it
