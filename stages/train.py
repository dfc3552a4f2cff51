"""Steps 2-4 of the tutorial: the network, MSELoss and SGD, trained on shuffled mini-batches.

The tutorial feeds a Dataset through DataLoader(ds, batch_size, shuffle=True): each epoch a new random
order, cut into batches. Here the whole dataset already sits on the device as two tensors, so each
epoch draws one seeded permutation, gathers the data in that order once, and a batch is a slice of it:
the same batches a RandomSampler with that generator would give, without a Python call and a collate
per sample (README: performance).

Long runs: about once a second, wherever the step is, the loop looks at what it has done (the step losses
go into one preallocated buffer, a NaN or an overflowed weight stops it, a stop signal is honoured at that
step), prints progress every few seconds, and writes a checkpoint every train.checkpoint_every_s seconds
and when stopped; the next run resumes from it (stages/checkpoint.py).
"""

import contextlib
import functools
import io
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchsummary import summary

from stages import checkpoint
from stages.common import Interrupted, StopRequest, UserError, atomic_output, run_stage
from stages.cpu import describe
from stages.data import TRAIN_FILE
from stages.model import MODEL_FILE, build_model, load_data, make_deterministic, pick_device
from stages.params import load_params
from stages.torchrun import FAILED_FILE, LostRank, check_processes, failed_before, launch_torchrun, remember_failure

SUMMARY_FILE = "artifacts/model_summary.txt"
LOSS_FILE = "artifacts/loss.tsv"
LOOK_EVERY_S = 1.0  # how often the loop reads its losses: each look waits for the device
PROGRESS_EVERY_S = 5.0


def summary_text(model, device):
    # torchsummary feeds the model torch.rand(...): fork the RNG so it cannot shift the training draws.
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()) as text:
        summary(model, input_size=(2,), device=device.type)
    return text.getvalue()


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


def ddp_step(model, optimizer, loss_fn, xb, yb, share, world):
    """train_step for one of `world` ranks, on its `share` (a slice) of the global batch xb, yb.

    DDP averages the ranks' gradients; weighting each rank's mean loss by world * its rows / the batch's rows
    makes that average the gradient of the whole batch's mean loss, however unevenly the batch splits.
    """
    optimizer.zero_grad()
    prediction = model(xb[share])
    rows = len(prediction)
    # A rank with no rows still runs forward and backward: DDP's all-reduce needs every rank.
    loss = loss_fn(prediction, yb[share]) * (world * rows / len(xb)) if rows else prediction.sum()
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


class Trainer:
    """The tutorial's loop (fit), plus what a long run needs: the losses in one buffer, a look about once a second
    (NaN, overflowed weights, a stop), progress, checkpoints and resuming from one.

    Under DistributedDataParallel (world > 1) every rank draws the same permutation (same seed, same generator:
    what DistributedSampler.set_epoch does) and takes its share of each global batch, so the ranks together take
    the same steps as one process would. Every rank looks at the same steps: the interval between looks follows
    the ranks' mean clock, agreed in the one all-reduce per look that also sums the losses and any stop request.
    """

    def __init__(
        self,
        model,
        optimizer,
        x,
        y,
        *,
        epochs,
        batch_size,
        shuffle,
        generator,
        rank=0,
        world=1,
        cuda_graphs=False,
        checkpoint_every_s=0.0,
        fingerprint=None,
        writer=True,
    ):
        self.model, self.optimizer, self.x, self.y = model, optimizer, x, y
        self.epochs, self.batch_size, self.shuffle, self.generator = epochs, batch_size, shuffle, generator
        self.rank, self.world = rank, world
        self.writer = writer  # one process a machine writes checkpoints and outputs: LOCAL_RANK 0
        self.checkpoint_every_s, self.fingerprint = checkpoint_every_s, fingerprint
        self.steps_per_epoch = math.ceil(len(x) / batch_size)
        self.total = epochs * self.steps_per_epoch
        self.losses = torch.empty(self.total, device=x.device)  # one buffer: memory does not grow with the steps
        self.done = 0  # steps taken; their losses are in self.losses[:done] once looked at
        self.pending = []  # losses of the steps since the last look, still on the device
        self.epoch_start_state = generator.get_state()
        loss_fn = nn.MSELoss()
        if world > 1:
            self.step = functools.partial(ddp_step, model, optimizer, loss_fn, world=world)
        elif cuda_graphs and x.is_cuda:
            self.step = GraphedStep(model, optimizer, loss_fn, x[:batch_size], y[:batch_size])
        else:
            self.step = functools.partial(train_step, model, optimizer, loss_fn)

    def resume(self, state):
        getattr(self.model, "module", self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.done = state["step"]
        self.losses[: self.done] = state["losses"].to(self.losses.device)

    def state(self):
        # At an epoch's end the generator already stands at the next epoch's start.
        at_epoch_end = self.done % self.steps_per_epoch == 0
        return {
            "fingerprint": self.fingerprint,
            "step": self.done,
            "generator": self.generator.get_state() if at_epoch_end else self.epoch_start_state,
            "model": {k: v.cpu() for k, v in getattr(self.model, "module", self.model).state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "losses": self.losses[: self.done].clone().cpu(),  # a copy: a view would save the whole buffer
        }

    def fit(self):
        """Per batch zero_grad -> forward -> loss -> backward -> step; returns the losses, one per step."""
        n, batch_size = len(self.x), self.batch_size
        self.interval, self.next_look = 1, self.done + 1  # look after 1, 2, 4, ... steps until a look is ~1 s apart
        self.start = self.last_look = self.last_progress = self.last_checkpoint = time.perf_counter()
        self.first_step = self.done
        with StopRequest().installed() as stop:
            for epoch in range(self.done // self.steps_per_epoch + 1, self.epochs + 1):
                self.epoch_start_state = self.generator.get_state()
                if self.shuffle:  # one gather per epoch, then every batch is a view: no indexing kernel per step
                    # Drawn on the CPU: CUDA's randperm gives another order from the same seed, and then a GPU run
                    # would train on other batches than the committed CPU run, not just round differently.
                    order = torch.randperm(n, generator=self.generator).to(self.x.device)
                    xs, ys = shuffled(self.x, order), shuffled(self.y, order)
                else:
                    xs, ys = self.x, self.y
                skip = self.done - (epoch - 1) * self.steps_per_epoch  # batches a resumed epoch already took
                for first in range(skip * batch_size, n, batch_size):
                    xb, yb = xs[first : first + batch_size], ys[first : first + batch_size]
                    if self.world == 1:
                        self.pending.append(self.step(xb, yb))
                    else:
                        rows = len(xb)
                        share = slice(rows * self.rank // self.world, rows * (self.rank + 1) // self.world)
                        self.pending.append(self.step(xb, yb, share))
                    self.done += 1
                    # One process stops at the step it was asked to; ranks agree on a stop at their next look.
                    if self.done == self.next_look or (stop.name and self.world == 1):
                        self.look(epoch, stop.name)
        return self.losses

    def look(self, epoch, stop_name):
        now = time.perf_counter()
        fresh = torch.stack(self.pending)
        self.pending.clear()
        elapsed, stopping = now - self.last_look, stop_name is not None
        if self.world > 1:
            packed = torch.cat([fresh, torch.tensor([elapsed, float(stopping)], device=fresh.device)])
            dist.all_reduce(packed)
            fresh, elapsed, stopping = packed[:-2] / self.world, float(packed[-2]) / self.world, bool(packed[-1])
        self.losses[self.done - len(fresh) : self.done] = fresh
        self.check_finite(fresh)
        self.last_look = now
        self.interval = self.interval * 2 if elapsed < LOOK_EVERY_S / 2 else self.interval
        self.interval = max(1, self.interval // 2) if elapsed > LOOK_EVERY_S * 2 else self.interval
        self.next_look = min(self.done + self.interval, self.total)
        if self.rank == 0 and now - self.last_progress >= PROGRESS_EVERY_S:
            rate = (self.done - self.first_step) * self.batch_size / (now - self.start)
            print(
                f"train: epoch {epoch}/{self.epochs}, step {self.done:,}/{self.total:,}, loss {float(fresh[-1]):.6g}, "
                f"{rate:,.0f} samples/s",
                file=sys.stderr,
            )
            self.last_progress = now
        due = self.checkpoint_every_s and now - self.last_checkpoint >= self.checkpoint_every_s
        if self.writer and (stopping or (due and self.done < self.total)):
            self.save_checkpoint(must=stopping)
        if stopping:
            saved = f"; saved {checkpoint.CHECKPOINT_FILE}, the next `dvc repro` resumes from it" if self.writer else ""
            raise Interrupted(
                stop_name or "SIGTERM", f" at step {self.done:,} of {self.total:,} (epoch {epoch}){saved}"
            )

    def save_checkpoint(self, must):
        """A checkpoint on the clock is a convenience: one that cannot be written (a full disk) costs a warning.
        The one a stop asks for is the whole point of stopping cleanly: then it is an error."""
        try:
            checkpoint.save(self.state())
        except OSError as error:
            if must:
                raise UserError(f"{checkpoint.CHECKPOINT_FILE}: cannot be written ({error.strerror})") from None
            print(
                f"train: warning: {checkpoint.CHECKPOINT_FILE}: cannot be written ({error.strerror})", file=sys.stderr
            )
        self.last_checkpoint = time.perf_counter()

    def check_finite(self, fresh):
        """A NaN or inf loss, or a weight that overflowed in an update, stops the run before any model is written."""
        lr = self.optimizer.param_groups[0]["lr"]
        advice = f"with train.lr {lr:g}; no model was written. Lower train.lr (or scale the data)"
        finite = torch.isfinite(fresh)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])  # index into fresh, the losses since the last look
            bad_step = self.done - len(fresh) + first + 1
            epoch = math.ceil(bad_step / self.steps_per_epoch)
            raise UserError(f"loss became {float(fresh[first]):g} at step {bad_step} (epoch {epoch}) {advice}")
        weights = [p.detach() for p in self.model.parameters() if not bool(torch.isfinite(p).all())]
        if weights:
            value = float(weights[0][~torch.isfinite(weights[0])][0])
            raise UserError(f"weights became {value:g} by step {self.done} {advice}")


def fit(model, optimizer, x, y, **options):
    """The tutorial's loop over all epochs, as a function: returns the loss of every step."""
    return Trainer(model, optimizer, x, y, **options).fit()


def main():
    params = load_params()
    cfg = params.train
    world = int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun, here or on several machines
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    check_processes(cfg, world)
    if cfg.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return launch_torchrun(cfg.nproc, cfg.max_restarts)
    if failed_before():
        sys.exit(2)  # a restart after a rank's user error (its line is above): the same params fail the same way
    try:
        train(params, rank, local_rank, world)
    except UserError as error:
        if world > 1:
            remember_failure(error)
        raise


def train(params, rank, local_rank, world):
    cfg = params.train
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    make_deterministic(params.seed, cfg.threads, device)

    x, y = load_data(TRAIN_FILE, device)
    model = build_model(params.model.hidden).to(device)  # same seed: the same initial weights on every rank
    model_summary = summary_text(model, device)
    shuffle_generator = torch.Generator().manual_seed(params.seed)  # on the CPU, whatever the device (Trainer.fit)
    fingerprint = checkpoint.fingerprint(params, device, TRAIN_FILE) if local_rank == 0 else None
    try:
        if world > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        resumed = [checkpoint.load(fingerprint) if rank == 0 else None]
        if world > 1:
            dist.broadcast_object_list(resumed)  # rank 0's disk decides for every node
        trained = DistributedDataParallel(model) if world > 1 else model
        optimizer = torch.optim.SGD(trained.parameters(), lr=cfg.lr)
        trainer = Trainer(
            trained,
            optimizer,
            x,
            y,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle,
            generator=shuffle_generator,
            rank=rank,
            world=world,
            cuda_graphs=cfg.cuda_graphs,
            checkpoint_every_s=cfg.checkpoint_every_s,
            fingerprint=fingerprint,
            writer=local_rank == 0,
        )
        if resumed[0] is not None:
            trainer.resume(resumed[0])
        if rank == 0:
            where = f"{device} x {world}" if world > 1 else f"{device}"
            threads = torch.get_num_threads()
            paths = f", {describe()}" if device.type == "cpu" else ""
            print(f"train: {trainer.total:,} steps of batch {cfg.batch_size} on {where}, {threads} thread(s){paths}")
            if resumed[0] is not None:
                epoch = trainer.done // trainer.steps_per_epoch + 1
                print(f"train: resuming at epoch {epoch}, step {trainer.done:,} of {trainer.total:,}")
        start = time.perf_counter()
        losses = trainer.fit()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    except RuntimeError as error:
        if world == 1 or not LostRank.explains(error):
            raise
        raise LostRank(error) from None
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if local_rank != 0:  # every rank holds the same weights and losses: the first on each machine writes them
        return

    with atomic_output(MODEL_FILE) as file:
        torch.save(model.cpu().state_dict(), file)
    with atomic_output(SUMMARY_FILE, "w") as file:
        file.write(model_summary)
    with atomic_output(LOSS_FILE, "w") as file:
        file.write("step\tepoch\tloss\n")
        for step, value in enumerate(losses.cpu().tolist(), start=1):
            file.write(f"{step}\t{math.ceil(step / trainer.steps_per_epoch)}\t{value:.8g}\n")
    checkpoint.remove(checkpoint.CHECKPOINT_FILE, FAILED_FILE)

    if rank != 0:
        return
    steps = trainer.total - trainer.first_step
    samples = steps / trainer.steps_per_epoch * len(x)
    print(
        f"train: {steps:,} steps in {elapsed:.3f} s: {samples / elapsed:,.0f} samples/s, "
        f"{elapsed / max(steps, 1) * 1e6:.1f} µs/step, final loss {float(losses[-1]):.6g}"
    )


if __name__ == "__main__":
    run_stage(main)
