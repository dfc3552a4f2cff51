"""Shared test helpers: real copies of the repo, real `dvc` and real stage commands, no mocks."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.cpu import caller_environment

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv running pytest: its python and dvc run the stages


# Set in some shells and not in others (CI runs with neither): the tests run as if neither were set, so a test
# that passes in a developer's shell passes in CI. Without SHELL, DVC runs a stage's cmd through /bin/sh.
UNSET_FOR_TESTS = ("PYTHONUNBUFFERED", "SHELL")


def env(**extra):
    """The environment a user's shell gives a command, with CUDA hidden: the tests that compare bytes with the
    committed CPU run must run on the CPU on a GPU machine too (tests/test_verify.py checks a CUDA run)."""
    caller = {key: value for key, value in caller_environment().items() if key not in UNSET_FOR_TESTS}
    return {
        **caller,  # not os.environ: importing `stages` here pinned MKL and ATen in it
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        **extra,
    }


def run(args, cwd, check=True, **extra_env):
    """Run a command as a user would, in `cwd`; return the CompletedProcess (text output)."""
    result = subprocess.run(args, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def start_stage(name, cwd, **extra_env):
    """`python -m stages.<name>` started in `cwd` and left running, its output piped as text."""
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{name}"],
        cwd=cwd,
        env=env(PYTHONPATH=str(ROOT), **extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child_pids(pid):
    """The processes `pid` started (a launcher's ranks, dvc's stage), as pgrep sees them now."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in found.split()]


def stage_pid(pid, name):
    """The `python -m stages.<name>` process under `pid` (dvc's). DVC runs a stage's cmd through $SHELL or /bin/sh:
    bash execs the command, dash (Debian's /bin/sh, CI's shell with SHELL unset) forks it, so it may be a grandchild."""
    for child in child_pids(pid):
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if argv[1:3] == [b"-m", f"stages.{name}".encode()]:
            return child
        found = stage_pid(child, name)
        if found:
            return found
    return None


def clone_repo(dest):
    """A fresh clone of the working tree as it is now (committed or not), as its own git repo."""
    dest.mkdir(parents=True, exist_ok=True)
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / "build").mkdir()
    shutil.copy2(ROOT / "build" / "plots.html", dest / "build" / "plots.html")
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "clone"], dest)
    return dest


def set_params(workdir, **changes):
    """Edit params.yaml in `workdir`: set_params(d, **{"train.lr": 0.01})."""
    path = Path(workdir) / "params.yaml"
    tree = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temp folder holding the default params.yaml, made the current directory."""
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A copy of the repo after one real `dvc repro` with the default params."""
    repo = clone_repo(tmp_path_factory.mktemp("trained"))
    run(["dvc", "repro"], repo)
    return repo
