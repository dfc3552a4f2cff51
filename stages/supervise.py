"""What a long training run needs besides its loop: a sync about once a second, wherever the step is.

The training loop hands every step's loss to Supervisor.record(). The losses stay on the device until a
sync, which waits for the device once and then: stores them in the run's loss buffer, stops the run if a
loss or a weight is no longer finite, prints progress every few seconds, writes a checkpoint every
train.checkpoint_every_s seconds, and honours a stop signal. Syncs come after 1, 2, 4, ... steps until they
are about a second apart, so a fast loop is not slowed by them and a slow one still reacts within a second.
Under DistributedDataParallel every rank syncs at the same steps: the interval follows the ranks' mean clock,
agreed in the one all-reduce per sync that also averages the losses and carries any stop request.
"""

import sys
import time
from contextlib import contextmanager

import torch
import torch.distributed as dist

from stages import checkpoint
from stages.common import Interrupted, StopRequest, UserError

SYNC_EVERY_S = 1.0  # each sync waits for the device
PROGRESS_EVERY_S = 5.0


class Supervisor:
    def __init__(self, state, *, batch_size=1, rank=0, world=1, checkpoint_every_s=0.0, fingerprint=None, saves=True):
        self.state, self.batch_size, self.rank, self.world = state, batch_size, rank, world
        self.checkpoint_every_s, self.fingerprint = checkpoint_every_s, fingerprint
        self.saves = saves  # whether this process writes checkpoints: one a machine, LOCAL_RANK 0
        self.pending = []  # losses of the steps since the last sync, still on the device
        self.first_step = state.step
        self.interval, self.next_sync = 1, state.step + 1
        self.stop = StopRequest()

    @contextmanager
    def watching(self):
        """The training loop runs inside this: stop signals become a request, honoured at the next sync."""
        self.start = self.last_sync = self.last_progress = self.last_checkpoint = time.perf_counter()
        with self.stop.installed():
            yield self

    def record(self, loss):
        """One more step done, with its loss. One process stops at the step it was asked to; ranks at the next sync."""
        self.pending.append(loss)
        self.state.step += 1
        if self.state.step >= self.next_sync or (self.stop.name and self.world == 1):
            self.sync()

    def sync(self):
        state, now = self.state, time.perf_counter()
        fresh = torch.stack(self.pending)
        self.pending.clear()
        elapsed, stopping = now - self.last_sync, self.stop.name is not None
        if self.world > 1:  # one all-reduce: the losses (averaged), the clock (averaged), a stop on any rank
            packed = torch.cat([fresh, torch.tensor([elapsed, float(stopping)], device=fresh.device)])
            dist.all_reduce(packed)
            fresh, elapsed, stopping = packed[:-2] / self.world, float(packed[-2]) / self.world, bool(packed[-1])
        state.losses[state.step - len(fresh) : state.step] = fresh
        self.check_finite(fresh)
        self.last_sync = now
        if elapsed < SYNC_EVERY_S / 2:
            self.interval *= 2
        elif elapsed > SYNC_EVERY_S * 2:
            self.interval = max(1, self.interval // 2)
        self.next_sync = min(state.step + self.interval, state.total)
        if self.rank == 0 and now - self.last_progress >= PROGRESS_EVERY_S:
            self.print_progress(now, float(fresh[-1]))
        due = self.checkpoint_every_s and now - self.last_checkpoint >= self.checkpoint_every_s
        if self.saves and (stopping or (due and state.step < state.total)):
            self.save_checkpoint(must=stopping)
        if stopping:
            saved = f"; saved {checkpoint.CHECKPOINT_FILE}, the next `dvc repro` resumes from it" if self.saves else ""
            where = f" at step {state.step:,} of {state.total:,} (epoch {state.epoch_of(state.step)})"
            raise Interrupted(self.stop.name or "SIGTERM", where + saved)

    def print_progress(self, now, loss):
        state = self.state
        rate = (state.step - self.first_step) * self.batch_size / (now - self.start)
        print(
            f"train: epoch {state.epoch_of(state.step)}/{state.epochs}, step {state.step:,}/{state.total:,}, "
            f"loss {loss:.6g}, {rate:,.0f} samples/s",
            file=sys.stderr,
        )
        self.last_progress = now

    def save_checkpoint(self, must):
        """A checkpoint on the clock is a convenience: one that cannot be written (a full disk) costs a warning.
        The one a stop asks for is the whole point of stopping cleanly: then it is an error."""
        try:
            checkpoint.save(self.state, self.fingerprint)
        except UserError as error:  # atomic_output's line: the file and the OS's reason
            if must:
                raise
            print(f"train: warning: {error}", file=sys.stderr)
        self.last_checkpoint = time.perf_counter()

    def check_finite(self, fresh):
        """A NaN or inf loss, or a weight that overflowed in an update, stops the run before any model is written."""
        state = self.state
        lr = state.optimizer.param_groups[0]["lr"]
        advice = f"with train.lr {lr:g}; no model was written. Lower train.lr (or scale the data)"
        finite = torch.isfinite(fresh)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])  # index into fresh, the losses since the last sync
            bad_step = state.step - len(fresh) + first + 1
            raise UserError(
                f"loss became {float(fresh[first]):g} at step {bad_step} (epoch {state.epoch_of(bad_step)}) {advice}"
            )
        weights = [p.detach() for p in state.model.parameters() if not bool(torch.isfinite(p).all())]
        if weights:
            value = float(weights[0][~torch.isfinite(weights[0])][0])
            raise UserError(f"weights became {value:g} by step {state.step} {advice}")
