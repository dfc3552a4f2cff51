"""train.nproc > 1: the train stage under torchrun, on one machine (the stage starts it) or several (you do).

The DDP step itself (ddp_step), the process group, and what a user of torchrun needs besides: a launch that
restarts failed ranks, one line for a stop or a failure instead of torchrun's tracebacks, the process count
checked against params.yaml and the GPUs there are, and every rank checked to train on the same data.
"""

import logging
import os
import re
import signal
import socket
import sys
import time
from contextlib import contextmanager

import torch
import torch.distributed as dist

from stages import checkpoint
from stages.common import Interrupted, UserError, atomic_output, stop_received
from stages.model import pick_device

FAILED_FILE = "checkpoints/train.failed"  # a rank's user error, so torchrun's restarts do not repeat it


def ddp_step(model, optimizer, loss_fn, xb, yb, *, rank, world):
    """train_step for one of `world` ranks, on its share (a slice) of the global batch xb, yb.

    DDP averages the ranks' gradients; weighting each rank's mean loss by world * its rows / the batch's rows
    makes that average the gradient of the whole batch's mean loss, however unevenly the batch splits.
    """
    share = slice(len(xb) * rank // world, len(xb) * (rank + 1) // world)
    optimizer.zero_grad()
    prediction = model(xb[share])
    rows = len(prediction)
    # A rank with no rows still runs forward and backward: DDP's all-reduce needs every rank.
    loss = loss_fn(prediction, yb[share]) * (world * rows / len(xb)) if rows else prediction.sum()
    loss.backward()
    optimizer.step()
    return loss.detach()


@contextmanager
def process_group(device, world):
    """The block runs as one of `world` ranks (or as the one process): DDP's process group is set up around it, a
    collective that lost its peers becomes LostRank, and a user error is written down, so that torchrun's
    restarts end at once instead of failing the same way again."""
    if world == 1:
        yield
        return
    if restarted_after_user_error():
        sys.exit(2)  # its line is above
    clear_failure_mark()
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        yield
    except RuntimeError as error:
        if not LostRank.explains(error):
            raise
        if stop_received():  # the peer left because the run was stopped: that stop is the story, told once
            raise Interrupted(stop_received()) from None
        raise LostRank(error) from None
    except UserError as error:
        remember_failure(error)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def from_rank_0(value, world):
    """Rank 0's `value`, on every rank: rank 0's disk decides for every node."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box)
    return box[0]


def check_same_inputs(fingerprint, rank, world):
    """Every rank trains on the data and params rank 0 has: a node with another data/train.npy would silently
    average gradients of other data into the model. One line names the first rank that differs, and its node."""
    if world == 1:
        return
    inputs = {key: value for key, value in fingerprint.items() if key not in checkpoint.BUILD_KEYS}
    every = [None] * world
    dist.all_gather_object(every, (socket.gethostname(), inputs))
    first_node, first = every[0]
    for other_rank, (node, other) in enumerate(every):
        changed = [key for key in first if other.get(key) != first[key]]
        if changed:
            key = changed[0]
            fix = "`dvc pull` or `dvc repro prepare`" if key == checkpoint.TRAIN_DATA_MD5 else "`git pull`"
            raise UserError(
                f"rank {other_rank} (node {node}) has {key} {other[key]!r}, but rank 0 (node {first_node}) has "
                f"{first[key]!r}; every node needs the same data/train.npy and params.yaml ({fix} there); "
                "nothing was trained"
            )


def launch_torchrun(nproc, max_restarts):
    """train.nproc > 1: run this stage again as `torchrun --standalone --nproc_per_node=<nproc> -m stages.train`.

    With --max-restarts, torchrun starts every rank again after one fails; they resume from the checkpoint.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: keep gloo on loopback
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each rank pins its own threads from train.threads
    # The ranks' process group gets a store of its own each attempt: in the agent's shared store, a restarted rank
    # can read the address its dead predecessor published and fail to connect.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    for name, logger in logging.root.manager.loggerDict.items():  # each rank says its own line; torchrun's
        if name.startswith("torch.distributed") and isinstance(logger, logging.Logger):  # loggers set their own level
            logger.setLevel(logging.CRITICAL)
    args = ["--standalone", f"--nproc_per_node={nproc}", f"--max-restarts={max_restarts}", "-m", "stages.train"]
    print(f"train: torchrun {' '.join(args)}")
    os.environ["ADDNET_TORCHRUN"] = "1"  # the ranks leave the stop line to this process
    launched = time.time()
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()  # the root cause; torchrun then stops the other ranks
        raise UserError(f"rank {rank} of {nproc} failed with exit code {first.exitcode} (its line is above)") from None
    except SignalException as stop:
        path = checkpoint.CHECKPOINT_FILE
        saved = os.path.exists(path) and os.path.getmtime(path) >= launched  # this run's, not an older one
        detail = f"; {path} holds the steps done, the next `dvc repro` resumes from it"
        raise Interrupted(signal.Signals(stop.sigval).name, detail if saved else "") from None
    finally:
        del os.environ["ADDNET_TORCHRUN"]


class LostRank(UserError):
    """Another rank died (killed, preempted): worth a restart, unlike the other errors."""

    @staticmethod
    def explains(error):
        """Whether `error` is a collective that lost its peers: gloo and NCCL say so in their text."""
        text = str(error)
        return isinstance(error, dist.DistError) or any(word in text for word in ("gloo", "NCCL", "Connection"))

    def __init__(self, error):
        # gloo's text: "[path/pair.cc:537] Read error [127.0.0.1]:41884: Connection reset by peer. This is ...".
        why = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip()).split(". ")[0]
        why = why.splitlines()[0] if why else type(error).__name__
        super().__init__(
            f"lost contact with the other ranks ({why}); torchrun restarts them up to train.max_restarts times"
        )


def remember_failure(error):
    """A rank's user error, kept so that torchrun's restarts end at once instead of failing the same way again."""
    if not isinstance(error, LostRank):
        with atomic_output(FAILED_FILE, "w", output=False) as file:
            file.write(f"{error}\n")


def restarted_after_user_error():
    """True in a rank that torchrun restarted after a rank's user error of this run."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) > 0 and os.path.exists(FAILED_FILE)


def clear_failure_mark():
    """The first attempt removes an earlier run's mark (LOCAL_RANK 0, once a machine): only this run's count."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        checkpoint.remove(FAILED_FILE)


def check_processes(cfg, world):
    """train.nproc against what torchrun started and against the GPUs there are: one line, not a traceback."""
    if "LOCAL_RANK" in os.environ and world != cfg.nproc:
        raise UserError(
            f"params.yaml: train.nproc is {cfg.nproc} but torchrun started {world} processes (WORLD_SIZE); set "
            f"train.nproc: {world} so that dvc.lock records how the model was trained"
        )
    if cfg.nproc > 1 and pick_device(cfg.device).type == "cuda":
        gpus = torch.cuda.device_count()
        needed = int(os.environ.get("LOCAL_WORLD_SIZE", cfg.nproc))
        if gpus < needed:
            raise UserError(
                f"params.yaml: train.nproc is {cfg.nproc} but this machine has {gpus} CUDA device(s) for "
                f"{needed} processes (train.device: {cfg.device}); lower train.nproc or use train.device: cpu"
            )
