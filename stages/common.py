"""What every stage shares and that needs no torch: user errors, the entry point, signals, atomic writes."""

import hashlib
import os
import signal
import sys
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_written = []  # outputs this process renamed into place, so a stop message can say which
_renaming = False  # an output is being renamed into place: a stop signal waits until it is recorded
_deferred = None  # the stop signal that waited
_received = None  # the first stop signal this process received, whoever handled it


class UserError(Exception):
    """A mistake the user can fix (a bad param, a missing or foreign file): one line, no traceback."""


class Interrupted(Exception):
    """A stop signal: `name` is SIGINT or SIGTERM; `detail` says what was saved, if anything."""

    def __init__(self, name, detail=""):
        super().__init__(name)
        self.name, self.detail = name, detail


def _note_stop(signum):
    global _received
    _received = _received or signal.Signals(signum).name
    return signal.Signals(signum).name


def stop_received():
    """The stop signal this process received (SIGINT or SIGTERM), or None."""
    return _received


def _raise_interrupted(signum, frame):
    global _deferred
    name = _note_stop(signum)
    if _renaming:
        _deferred = name
        return
    raise Interrupted(name)


def stop_message(stop):
    if _written:
        return f"stopped by {stop.name}{stop.detail} after writing {', '.join(_written)}; run it again for the rest"
    return f"stopped by {stop.name}{stop.detail}; no output was written in its place"


def run_stage(main):
    """Run a stage's main(): a user error or a signal ends it with one line on stderr and a non-zero exit.

    ADDNET_DEBUG=1 lets the traceback through for people debugging addnet itself. A rank that the train
    stage's own torchrun started (ADDNET_TORCHRUN=1) leaves the stop line to that launcher: one line, not one
    per process.
    """
    stage = Path(sys.modules[main.__module__].__file__).stem
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # a rank under torchrun
        stage += f"[rank {os.environ['RANK']}]"
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_interrupted)
    # A write beyond a file-size limit (`ulimit -f`) then fails with EFBIG, which atomic_output names in one line,
    # instead of the default SIGXFSZ killing the process with a core dump.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        main()
        code = 0
    except UserError as error:
        if os.environ.get("ADDNET_DEBUG"):
            raise
        print(f"{stage}: error: {error}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, Interrupted) as stop:
        stop = stop if isinstance(stop, Interrupted) else Interrupted("SIGINT")
        if not os.environ.get("ADDNET_TORCHRUN"):
            print(f"{stage}: {stop_message(stop)}", file=sys.stderr)
        code = 128 + getattr(signal, stop.name).value
    for signum in STOP_SIGNALS:  # one more signal while exiting ends the process quietly, not in a traceback
        signal.signal(signum, signal.SIG_DFL)
    if code:
        sys.exit(code)


class StopRequest:
    """SIGINT/SIGTERM during training ask the loop to stop at the end of the step, so a checkpoint never holds
    half a step; a second signal stops at once."""

    def __init__(self):
        self.name = None

    def _handle(self, signum, frame):
        if self.name:
            _raise_interrupted(signum, frame)
        self.name = _note_stop(signum)

    @contextmanager
    def installed(self):
        before = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in before.items():
                signal.signal(signum, handler)


def file_md5(path):
    """A file's md5, as DVC's content hash (dvc.lock) computes it; read in 4 MB pieces, for 100 MB data files."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path, mode="wb", output=True):
    """Open a temp file beside `path` and rename it into place only if the block completes.

    A crash, an error or a signal leaves the old file (or none), never a half-written one; the data and the
    rename are on disk (fsync of the file, then of its folder) before this returns, so a power cut cannot
    leave a renamed but empty file either. A write the OS refuses (a full disk, a quota, a file-size limit, a
    read-only folder) is a UserError naming the output and the OS's reason, its OSError kept as __cause__.
    `output=False` (a checkpoint) keeps it out of the stop line's list.
    """
    global _renaming, _deferred
    path = Path(path)
    tmp = None
    replaced = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **text) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        # From here a stop signal waits until the rename is recorded (_raise_interrupted), so the stop line stays
        # true. Not a signal mask: the kernel would hand the signal to one of torch's threads instead.
        _renaming = True
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        replaced = True
        if output:
            _written.append(str(path))
        _fsync_folder(path.parent)
    except BaseException as error:
        if tmp and not replaced:
            with suppress(OSError):  # a temp file left behind is better than this error hiding the first one
                os.unlink(tmp)
        if isinstance(error, OSError):
            raise UserError(
                f"cannot write {path}: {error.strerror or error}; {_what_was_replaced(path, replaced)}"
            ) from error
        raise
    finally:
        _renaming = False
    if _deferred:
        name, _deferred = _deferred, None
        raise Interrupted(name)


def _what_was_replaced(path, replaced):
    if replaced:  # only the folder's fsync failed
        return "it is in place, but its folder could not be synced to disk"
    earlier = [name for name in _written if name != str(path)]
    return f"it was not replaced (this run replaced {', '.join(earlier)})" if earlier else "nothing was replaced"
