"""A throwaway copy of this checkout, as its own git repository: the tests and tools/bench_repro.py run there, so
the outputs and dvc.lock of the checkout itself are never touched."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The copies' commits and tags, on machines where git knows no user.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "addnet",
    "GIT_AUTHOR_EMAIL": "addnet@localhost",
    "GIT_COMMITTER_NAME": "addnet",
    "GIT_COMMITTER_EMAIL": "addnet@localhost",
}


def copy_checkout(dest):
    """This checkout's tracked and untracked (not ignored) files as they are now, committed in a new repo at `dest`."""
    files = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listing = subprocess.run(files, cwd=ROOT, capture_output=True, check=True)
    for name in filter(None, listing.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    env = {**os.environ, **GIT_IDENTITY}
    for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=dest, check=True, env=env, stdout=subprocess.DEVNULL)
    return dest
