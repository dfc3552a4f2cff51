"""The train stage's checkpoint: enough state to go on from a stop as if it never happened, to the byte.

TrainingState is what a run has done so far (the model, the optimizer, the shuffle generator, the steps and
their losses), captured with state_dict() and restored with load_state_dict(), as PyTorch's own objects are.
A checkpoint file holds that state and a fingerprint of everything that decides the result; a run resumes
from it only when the fingerprint matches. It lives in checkpoints/, which git ignores and dvc.yaml does not
declare: DVC deletes a declared output before its stage runs (unless `persist: true`) and fails a stage whose
declared output is missing afterwards, and this file must survive a failed run and be gone after a good one.
"""

import hashlib
import math
import os
import sys
from pathlib import Path

import torch

from stages.common import UserError, atomic_output, file_md5
from stages.cpu import code_paths
from stages.model import load_tensors, short_repr, unlike_a_plain_tensor

CHECKPOINT_FILE = "checkpoints/train.pt"
TRAIN_DATA_MD5 = "data/train.npy md5"  # the fingerprint's key for the data
BUILD_KEYS = ("device", "torch", "code paths", "stages/*.py md5")  # the fingerprint's keys that are not inputs


class TrainingState:
    """The steps a run has taken and what they changed: the one thing a checkpoint saves and restores."""

    def __init__(self, model, optimizer, generator, *, epochs, steps_per_epoch):
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.epochs, self.steps_per_epoch, self.total = epochs, steps_per_epoch, epochs * steps_per_epoch
        self.step = 0  # steps taken; their losses are in losses[:step] once the supervisor has synced them
        device = next(model.parameters()).device
        self.losses = torch.empty(self.total, device=device)  # one buffer: memory does not grow with the steps
        self.epoch_start = generator.get_state()

    @property
    def epoch(self):
        """The epoch the next step belongs to, counted from 1."""
        return self.step // self.steps_per_epoch + 1

    def epoch_of(self, step):
        """The epoch, counted from 1, of step number `step` (counted from 1)."""
        return math.ceil(step / self.steps_per_epoch)

    @property
    def steps_into_epoch(self):
        return self.step % self.steps_per_epoch

    def start_epoch(self):
        # A checkpoint saves the generator as it stood when this epoch drew its order, so a resumed run draws it again.
        self.epoch_start = self.generator.get_state()

    def _network(self):
        return getattr(self.model, "module", self.model)  # the model inside DistributedDataParallel

    def state_dict(self):
        at_epoch_end = self.step % self.steps_per_epoch == 0  # the generator already stands at the next epoch's start
        return {
            "step": self.step,
            "generator": self.generator.get_state() if at_epoch_end else self.epoch_start,
            "model": {name: value.cpu() for name, value in self._network().state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "losses": self.losses[: self.step].clone().cpu(),  # a copy: a view would save the whole buffer
        }

    def load_state_dict(self, state):
        """Restore a state_dict(); a state of another shape raises ValueError before anything is changed."""
        if problem := self.mismatch(state):
            raise ValueError(problem)
        self._network().load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step = state["step"]
        self.losses[: self.step] = state["losses"].to(self.losses.device)

    def mismatch(self, state):
        """What keeps `state` (read from a file: anything) from being a state_dict() of this run, or None."""
        own = self.state_dict()
        if not isinstance(state, dict) or set(state) - {"fingerprint"} != set(own):
            found = short_repr(sorted(map(str, state)), most=60) if isinstance(state, dict) else type(state).__name__
            return f"holds {found}, expected {sorted(own)}"
        step = state["step"]
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= self.total:
            shown = short_repr(step, most=60, bare_names=False)
            return f"its step is {shown}, expected an integer from 0 to {self.total}"
        tensors = {"generator": own["generator"], "losses": torch.empty(step), **own["model"]}
        found = {"generator": state["generator"], "losses": state["losses"]}
        if isinstance(state["model"], dict) and set(state["model"]) == set(own["model"]):
            found.update(state["model"])
        else:
            return f"its model is not a state_dict of {', '.join(own['model'])}"
        for name, expected in tensors.items():
            value = found[name]
            wanted = f"expected {expected.dtype} {tuple(expected.shape)}"
            if problem := unlike_a_plain_tensor(value, expected.dtype):
                return f"its {name} is {problem}, {wanted}"
            if value.shape != expected.shape:
                return f"its {name} is {value.dtype} {tuple(value.shape)}, {wanted}"
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f"its {name} holds a value that is not finite"
        try:
            torch.Generator().set_state(state["generator"])
        except RuntimeError:
            return "its generator state is not one torch's CPU generator accepts"
        # Plain SGD keeps no per-parameter state; its param_groups are the settings the fingerprint covers.
        if not _same(state["optimizer"], own["optimizer"]):
            return "its optimizer state is not that of this run's SGD"
        return None


def fingerprint(params, device, data_path):
    """What decides the result: the params the train stage reads, the data's md5, the torch build, the code paths."""
    cfg = params.train
    return {
        "seed": params.seed,
        "model.hidden": params.model.hidden,
        **{f"train.{key}": getattr(cfg, key) for key in ("epochs", "batch_size", "shuffle", "lr", "threads", "nproc")},
        "train.cuda_graphs": cfg.cuda_graphs and device.type == "cuda",
        "device": device.type,
        TRAIN_DATA_MD5: file_md5(data_path),
        "torch": str(torch.__version__),
        "code paths": code_paths() if device.type == "cpu" else torch.version.cuda,
        "stages/*.py md5": code_md5(),
    }


def code_md5():
    """The pipeline's code: a checkpoint made by other code is not resumed, even where the params match."""
    digest = hashlib.md5(usedforsecurity=False)
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def save(state, fingerprint, path=CHECKPOINT_FILE):
    with atomic_output(path, output=False) as file:
        torch.save({"fingerprint": fingerprint, **state.state_dict()}, file)


def _ignore(path, why):
    print(f"train: ignoring {path}: {why}; starting from step 0", file=sys.stderr)


def load(expected, state, path=CHECKPOINT_FILE):
    """The checkpoint at `path` if it was made with `expected` (a fingerprint) and fits `state` (a TrainingState),
    else None, with one line why. A checkpoint is a cache: whatever the file holds, the worst it does is be ignored.
    """
    if not os.path.exists(path):
        return None
    try:
        saved = load_tensors(path)  # the stages' one safe torch.load: tensors and plain values only
    except UserError as error:
        return _ignore(path, str(error).removeprefix(f"{path}: "))
    made_with = saved.get("fingerprint") if isinstance(saved, dict) else None
    if not isinstance(made_with, dict):
        return _ignore(path, "not a checkpoint of this stage (it has no fingerprint)")
    for key, value in expected.items():
        if key not in made_with or not _same(made_with[key], value):
            made = short_repr(made_with.get(key), most=60, bare_names=False)
            return _ignore(path, f"it was made with {key} {made}, now {value!r}")
    if problem := state.mismatch(saved):
        return _ignore(path, problem)
    return saved


def _same(saved, expected):
    """Equal, and of the same types all the way down: a saved '0.001' is not the lr 0.001, nor True the shuffle 1."""
    if type(saved) is not type(expected):
        return False
    if isinstance(expected, dict):
        return saved.keys() == expected.keys() and all(_same(saved[key], expected[key]) for key in expected)
    if isinstance(expected, (list, tuple)):
        return len(saved) == len(expected) and all(map(_same, saved, expected))
    if isinstance(expected, torch.Tensor):
        return saved.dtype == expected.dtype and saved.shape == expected.shape and torch.equal(saved, expected)
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(saved)
    return saved == expected


def remove(*paths):
    for path in paths:
        Path(path).unlink(missing_ok=True)  # two machines sharing a folder may both remove it
