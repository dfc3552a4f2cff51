"""Steps 2-4 of the tutorial: the network, MSELoss and SGD, trained on shuffled mini-batches.

The tutorial feeds a Dataset through DataLoader(ds, batch_size, shuffle=True): each epoch a new random
order, cut into batches. Here the whole dataset already sits on the device as two tensors, so each
epoch draws one seeded permutation, gathers the data in that order once, and a batch is a slice of it:
the same batches a RandomSampler with that generator would give, without a Python call and a collate
per sample (README: performance).
"""

import contextlib
import functools
import io
import logging
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchsummary import summary

from stages.common import UserError, atomic_output, run_stage
from stages.data import TRAIN_FILE
from stages.model import MODEL_FILE, build_model, load_data, make_deterministic, pick_device
from stages.params import load_params

SUMMARY_FILE = "artifacts/model_summary.txt"
LOSS_FILE = "artifacts/loss.tsv"
PROGRESS_EVERY_S = 5.0
CHECK_EVERY_STEPS = 1024  # look for a NaN loss this often (at an epoch's end): each look waits for the device


def summary_text(model, device):
    # torchsummary feeds the model torch.rand(...): fork the RNG so it cannot shift the training draws.
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()) as text:
        summary(model, input_size=(2,), device=device.type)
    return text.getvalue()


def first_bad_step(losses, first_step):
    """The 1-based step of the first NaN or infinite loss among `losses`, or None; one host sync."""
    finite = torch.isfinite(torch.stack(losses))
    if bool(finite.all()):
        return None
    return first_step + int((~finite).nonzero()[0])


def shuffled(t, order):
    """The rows of `t` in `order`. A row of two float32 moves as one int64: a 1-D gather, 2.5x faster on the
    CPU than index_select over 2-wide rows (15 vs 38 ms per million), and bit for bit the same."""
    if t.dtype == torch.float32 and t.shape[1:] == (2,) and t.stride() == (2, 1) and t.storage_offset() % 2 == 0:
        return t.view(torch.int64).view(-1).index_select(0, order).view(torch.float32).view(-1, 2)
    return t.index_select(0, order)


def train_step(model, optimizer, loss_fn, xb, yb):
    """The tutorial's loop body: zero_grad -> forward -> loss -> backward -> step. The loss stays on the device."""
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    return loss.detach()


class GraphedStep:
    """train_step recorded once as a CUDA graph and replayed: 4 kernel launches a step instead of about 25.

    PyTorch's whole-network capture recipe (docs: CUDA semantics, CUDA Graphs): warm up on a side stream,
    capture one step, then copy each batch into the captured input tensors and replay. The warm-up steps
    move the weights, so they are put back before training starts (plain SGD keeps no other state, and its
    lr is recorded into the graph: a momentum or an lr schedule would need more); a batch of another size
    (an epoch's last, smaller one) runs eagerly.
    """

    def __init__(self, model, optimizer, loss_fn, xb, yb):
        self.step = functools.partial(train_step, model, optimizer, loss_fn)
        params = list(model.parameters())
        initial = [p.detach().clone() for p in params]
        self.x, self.y = xb.clone(), yb.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.step(self.x, self.y)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for param, value in zip(params, initial, strict=True):
                param.copy_(value)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self.step(self.x, self.y)
        self.grads = [p.grad for p in params]  # the captured gradient buffers: alive as long as the graph

    def __call__(self, xb, yb):
        if xb.shape != self.x.shape:
            return self.step(xb, yb)
        self.x.copy_(xb)
        self.y.copy_(yb)
        self.graph.replay()
        return self.loss.clone()


def fit(model, optimizer, x, y, *, epochs, batch_size, shuffle, generator, rank=0, world=1, cuda_graphs=False):
    """The tutorial's loop: per batch zero_grad -> forward -> loss -> backward -> step. Returns per-step losses.

    Under DistributedDataParallel (world > 1) every rank draws the same permutation (same seed, same
    generator: what DistributedSampler.set_epoch does) and takes its share of each global batch, so the
    ranks together take the same steps as one process would.
    """
    loss_fn = nn.MSELoss()
    step = functools.partial(train_step, model, optimizer, loss_fn)
    if cuda_graphs and x.is_cuda and world == 1:
        step = GraphedStep(model, optimizer, loss_fn, x[:batch_size], y[:batch_size])
    n = len(x)
    steps_per_epoch = math.ceil(n / batch_size)
    losses = []  # kept on the device: reading each loss (.item()) would stall the loop every step
    checked = 0
    start = last_report = time.perf_counter()
    for epoch in range(1, epochs + 1):
        # One gather per epoch, then every batch is a view: no indexing kernel per step.
        if shuffle:
            order = torch.randperm(n, generator=generator, device=x.device)
            xs, ys = shuffled(x, order), shuffled(y, order)
        else:
            xs, ys = x, y
        for first in range(0, n, batch_size):
            if world == 1:
                losses.append(step(xs[first : first + batch_size], ys[first : first + batch_size]))
                continue
            rows = min(batch_size, n - first)
            mine = slice(first + rows * rank // world, first + rows * (rank + 1) // world)
            optimizer.zero_grad()
            # DDP averages gradients over ranks; this scale makes that average the whole batch's mean loss.
            loss = (model(xs[mine]) - ys[mine]).pow(2).sum() * (world / rows)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())

        if world > 1:  # the batch's loss is the mean of the ranks' parts: one collective per epoch
            epoch_losses = torch.stack(losses[-steps_per_epoch:])
            dist.all_reduce(epoch_losses)
            losses[-steps_per_epoch:] = list(epoch_losses / world)
        if len(losses) - checked >= CHECK_EVERY_STEPS or epoch == epochs:  # the same epochs on every rank
            bad_step = first_bad_step(losses[checked:], checked + 1)
            if bad_step is not None:
                raise UserError(
                    f"loss became {float(losses[bad_step - 1]):g} at step {bad_step} "
                    f"(epoch {math.ceil(bad_step / steps_per_epoch)}) with train.lr "
                    f"{optimizer.param_groups[0]['lr']:g}; no model was written. Lower train.lr (or scale the data)"
                )
            checked = len(losses)
        now = time.perf_counter()
        if rank == 0 and now - last_report > PROGRESS_EVERY_S:
            rate = epoch * n / (now - start)
            print(
                f"train: epoch {epoch}/{epochs}  loss {float(losses[-1]):.6g}  {rate:,.0f} samples/s", file=sys.stderr
            )
            last_report = now
    return losses


def launch_torchrun(nproc):
    """train.nproc > 1: run this stage again as `torchrun --standalone --nproc_per_node=<nproc> -m stages.train`."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: keep gloo on loopback
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each rank pins its own threads from train.threads
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # each rank says its own line
    args = ["--standalone", f"--nproc_per_node={nproc}", "--module", "stages.train"]
    print(f"train: torchrun {' '.join(args)}", flush=True)
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()  # the root cause; torchrun then stops the other ranks
        raise UserError(f"rank {rank} of {nproc} failed with exit code {first.exitcode} (its line is above)") from None


def main():
    params = load_params()
    cfg = params.train
    if cfg.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return launch_torchrun(cfg.nproc)
    world = int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun, here or on several machines
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    make_deterministic(params.seed, cfg.threads, device)

    x, y = load_data(TRAIN_FILE, device)
    model = build_model(params.model.hidden).to(device)  # same seed: the same initial weights on every rank
    model_summary = summary_text(model, device)
    shuffle = torch.Generator(device=device).manual_seed(params.seed)

    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        trained = DistributedDataParallel(model) if world > 1 else model
        optimizer = torch.optim.SGD(trained.parameters(), lr=cfg.lr)
        start = time.perf_counter()
        losses = fit(
            trained,
            optimizer,
            x,
            y,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle,
            generator=shuffle,
            rank=rank,
            world=world,
            cuda_graphs=cfg.cuda_graphs,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    finally:
        if world > 1:
            dist.destroy_process_group()
    if rank != 0:
        return
    steps_per_epoch = len(losses) // cfg.epochs

    with atomic_output(MODEL_FILE) as file:
        torch.save(model.cpu().state_dict(), file)
    with atomic_output(SUMMARY_FILE, "w") as file:
        file.write(model_summary)
    with atomic_output(LOSS_FILE, "w") as file:
        file.write("step\tepoch\tloss\n")
        for step, value in enumerate(torch.stack(losses).cpu().tolist(), start=1):
            file.write(f"{step}\t{math.ceil(step / steps_per_epoch)}\t{value:.8g}\n")

    steps = len(losses)
    print(
        f"train: {steps} steps of batch {cfg.batch_size} on {device} x {world} in {elapsed:.3f} s: "
        f"{cfg.epochs * len(x) / elapsed:,.0f} samples/s, {elapsed / steps * 1e6:.1f} µs/step, "
        f"final loss {losses[-1].item():.6g}"
    )


if __name__ == "__main__":
    run_stage(main)
