"""Steps 2-4 of the tutorial: the network, MSELoss and SGD, trained on shuffled mini-batches.

Reads params.yaml and data/train.npy; writes artifacts/mymodel.pth (the trained state_dict),
artifacts/model_summary.txt (torchsummary's table) and artifacts/loss.tsv (the loss of every step).
"""

import contextlib
import functools
import io
import math
import os
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchsummary import summary

from stages import checkpoint, torchrun
from stages.checkpoint import TrainingState
from stages.common import atomic_output, run_stage
from stages.cpu import code_paths
from stages.data import TRAIN_FILE
from stages.fastpath import GraphedStep, gather_rows
from stages.model import MODEL_FILE, build_model, load_data, make_deterministic, pick_device
from stages.params import load_params
from stages.supervise import Supervisor

SUMMARY_FILE = "artifacts/model_summary.txt"
LOSS_FILE = "artifacts/loss.tsv"


def train_step(model, optimizer, loss_fn, xb, yb):
    """The tutorial's loop body: zero_grad -> forward -> loss -> backward -> step. The loss stays on the device."""
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    return loss.detach()


def epoch_batches(x, y, batch_size, order=None, skip=0):
    """One epoch of the tutorial's DataLoader(dataset, batch_size, shuffle=True): the rows in `order`, in batches.

    The data already sits on the device as two tensors, so the epoch's order is gathered once and every batch is
    a slice of it: the batches a RandomSampler drawing `order` gives, without a Python call and a collate per
    sample. The last batch is smaller when batch_size does not divide the rows (DataLoader's drop_last=False).
    `skip` leaves out the batches a resumed epoch already took.
    """
    if order is not None:
        x, y = gather_rows(x, order), gather_rows(y, order)
    for first in range(skip * batch_size, len(x), batch_size):
        yield x[first : first + batch_size], y[first : first + batch_size]


def fit(state, x, y, *, batch_size, shuffle, step, supervisor=None):
    """The tutorial's loop: every epoch, every batch, one step. Returns the loss of every step.

    `state` (a TrainingState) holds the model, the optimizer, the shuffle generator and the number of epochs, and
    counts the steps, so a run restored from a checkpoint goes on where it stopped. `supervisor` keeps the losses
    and syncs about once a second: NaN checks, progress, checkpoints, stop signals (stages/supervise.py).
    """
    supervisor = supervisor or Supervisor(state, batch_size=batch_size)
    with supervisor.watching():
        for _ in range(state.epoch, state.epochs + 1):
            state.start_epoch()
            # Drawn on the CPU: CUDA's randperm gives another order from the same seed, and then a GPU run would
            # train on other batches than the committed CPU run, not just round differently.
            order = torch.randperm(len(x), generator=state.generator).to(x.device) if shuffle else None
            for xb, yb in epoch_batches(x, y, batch_size, order, skip=state.steps_into_epoch):
                supervisor.record(step(xb, yb))
    return state.losses


def make_step(model, optimizer, x, y, batch_size, cuda_graphs, rank=0, world=1):
    """train_step with its model, optimizer and loss: as DDP's share of a batch, or replayed as a CUDA graph."""
    loss_fn = nn.MSELoss()
    if world > 1:
        return functools.partial(torchrun.ddp_step, model, optimizer, loss_fn, rank=rank, world=world)
    step = functools.partial(train_step, model, optimizer, loss_fn)
    if cuda_graphs and x.is_cuda:
        return GraphedStep(step, model, x[:batch_size], y[:batch_size])
    return step


def summary_text(model, device):
    # torchsummary feeds the model torch.rand(...): fork the RNG so it cannot shift the training draws.
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()) as text:
        summary(model, input_size=(2,), device=device.type)
    return text.getvalue()


def main():
    params = load_params()
    cfg = params.train
    world = int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun, here or on several machines
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    torchrun.check_processes(cfg, world)
    if cfg.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return torchrun.launch_torchrun(cfg.nproc, cfg.max_restarts)
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    make_deterministic(params.seed, cfg.threads, device)

    with torchrun.process_group(device, world):
        model, model_summary, state, speed = train(params, device, rank, local_rank, world)
        if local_rank == 0:  # every rank holds the same weights and losses: the first on each machine writes them
            write_outputs(model, model_summary, state)
    if rank == 0:
        print(f"train: {speed}, final loss {float(state.losses[-1]):.6g}")


def train(params, device, rank, local_rank, world):
    cfg = params.train
    x, y = load_data(TRAIN_FILE, device)
    model = build_model(params.model.hidden).to(device)  # the same seed: the same initial weights on every rank
    model_summary = summary_text(model, device)
    fingerprint = checkpoint.fingerprint(params, device, TRAIN_FILE)
    torchrun.check_same_inputs(fingerprint, rank, world)

    trained = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(trained.parameters(), lr=cfg.lr)
    shuffle_generator = torch.Generator().manual_seed(params.seed)  # on the CPU, whatever the device (see fit)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    state = TrainingState(trained, optimizer, shuffle_generator, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch)
    saved = torchrun.from_rank_0(checkpoint.load(fingerprint, state) if rank == 0 else None, world)
    if saved is not None:
        state.load_state_dict(saved)
    supervisor = Supervisor(
        state,
        batch_size=cfg.batch_size,
        rank=rank,
        world=world,
        checkpoint_every_s=cfg.checkpoint_every_s,
        fingerprint=fingerprint,
        saves=local_rank == 0,
    )
    step = make_step(trained, optimizer, x, y, cfg.batch_size, cfg.cuda_graphs, rank, world)
    if rank == 0:
        where = f"{device} x {world}" if world > 1 else f"{device}"
        paths = f", {code_paths()}" if device.type == "cpu" else ""
        threads = torch.get_num_threads()
        print(f"train: {state.total:,} steps of batch {cfg.batch_size} on {where}, {threads} thread(s){paths}")
        if saved is not None:
            print(f"train: resuming at epoch {state.epoch}, step {state.step:,} of {state.total:,}")

    first_step, start = state.step, time.perf_counter()
    fit(state, x, y, batch_size=cfg.batch_size, shuffle=cfg.shuffle, step=step, supervisor=supervisor)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, steps = time.perf_counter() - start, state.total - first_step
    samples = steps / steps_per_epoch * len(x)
    per_step = seconds / max(steps, 1) * 1e6
    speed = f"{steps:,} steps in {seconds:.3f} s: {samples / seconds:,.0f} samples/s, {per_step:.1f} µs/step"
    return model, model_summary, state, speed


def write_outputs(model, model_summary, state):
    with atomic_output(MODEL_FILE) as file:
        torch.save(model.cpu().state_dict(), file)
    with atomic_output(SUMMARY_FILE, "w") as file:
        file.write(model_summary)
    with atomic_output(LOSS_FILE, "w") as file:
        file.write("step\tepoch\tloss\n")
        for step, value in enumerate(state.losses.cpu().tolist(), start=1):
            file.write(f"{step}\t{state.epoch_of(step)}\t{value:.8g}\n")
    checkpoint.remove(checkpoint.CHECKPOINT_FILE, torchrun.FAILED_FILE)


if __name__ == "__main__":
    run_stage(main)
