"""What every stage shares and that needs no torch: user errors, the entry point, atomic writes."""

import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix (a bad param, a missing or foreign file): one line, no traceback."""


class Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_stage(main):
    """Run a stage's main(): a user error or a signal ends it with one line on stderr and a non-zero exit.

    ADDNET_DEBUG=1 lets the traceback through for people debugging addnet itself.
    """
    stage = Path(sys.modules[main.__module__].__file__).stem
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # a rank under torchrun
        stage += f"[rank {os.environ['RANK']}]"
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        main()
    except UserError as error:
        if os.environ.get("ADDNET_DEBUG"):
            raise
        print(f"{stage}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Interrupted) as stop:
        name = str(stop) or "SIGINT"
        print(f"{stage}: stopped by {name}; no output was written in its place", file=sys.stderr)
        sys.exit(128 + getattr(signal, name, signal.SIGINT).value)


@contextmanager
def atomic_output(path, mode="wb"):
    """Open a temp file beside `path` and rename it into place only if the block completes.

    A crash, an error or a signal leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **text) as file:
            yield file
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
