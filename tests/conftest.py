"""Shared test helpers: real copies of the repo, real `dvc` and real stage commands, no mocks."""

import ctypes
import importlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.serialize import parse_yaml

from stages.common import run_stage
from tools.checkout import GIT_IDENTITY, copy_checkout
from tools.machine import caller_environment

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
        **GIT_IDENTITY,
        **extra,
    }


def run(args, cwd, check=True, preexec_fn=None, **extra_env):
    """Run a command as a user would, in `cwd`; return the CompletedProcess (text output). `preexec_fn` runs in the
    child before the command starts (a resource limit, dropped capabilities)."""
    result = subprocess.run(
        args, cwd=cwd, env=env(**extra_env), preexec_fn=preexec_fn, capture_output=True, text=True, timeout=900
    )
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
    copy_checkout(dest)
    (dest / "build").mkdir()
    shutil.copy2(ROOT / "build" / "plots.html", dest / "build" / "plots.html")
    return dest


DELETE = object()  # a value for set_params/edited that removes the key
DEFAULT_TEXT = (ROOT / "params.yaml").read_text()


def _edit(tree, changes):
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return yaml.safe_dump(tree, sort_keys=False)


def edited(**changes):
    """The default params.yaml's text with dotted keys set: edited(**{"train.lr": 0.01})."""
    return _edit(yaml.safe_load(DEFAULT_TEXT), changes)


def committed_md5s(*stages, repo=ROOT):
    """{output path: md5} of the stages' outputs (every stage's by default) in `repo`'s dvc.lock, read with DVC's
    own parser."""
    lock = parse_yaml((Path(repo) / "dvc.lock").read_text(), "dvc.lock")["stages"]
    return {out["path"]: out["md5"] for name in stages or lock for out in lock[name]["outs"]}


def set_params(workdir, **changes):
    """Edit params.yaml in `workdir`: set_params(d, **{"train.lr": 0.01})."""
    path = Path(workdir) / "params.yaml"
    path.write_text(_edit(yaml.safe_load(path.read_text()), changes))


def stage(name, cwd, check=True, preexec_fn=None, **extra_env):
    """`python -m stages.<name>` in `cwd`, exactly as dvc.yaml runs it, with this checkout's stages."""
    command = [sys.executable, "-m", f"stages.{name}"]
    return run(command, cwd, check=check, preexec_fn=preexec_fn, PYTHONPATH=str(ROOT), **extra_env)


def prepared(folder, **changes):
    """`folder` holding the default params.yaml with `changes` set, and the data `prepare` makes from it."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "params.yaml", Path(folder) / "params.yaml")
    set_params(folder, **changes)
    stage("prepare", folder)
    return folder


@pytest.fixture
def call_stage(monkeypatch, capsys):
    """The same entry point as `python -m stages.<name>` (run_stage(main)), in this process: no torch import per
    case. Tables of cases run this way; a few cases of each kind run the real command (stage())."""

    def call(name, cwd):
        monkeypatch.chdir(cwd)
        handler = signal.getsignal(signal.SIGTERM)
        capsys.readouterr()
        try:
            with pytest.raises(SystemExit) as stop:
                run_stage(importlib.import_module(f"stages.{name}").main)
        finally:
            signal.signal(signal.SIGTERM, handler)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(name, stop.value.code, out, err)

    return call


def assert_one_clear_line(result, words, code=2):
    """The promise for a user's mistake: exit `code`, one line on stderr holding `words`, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert "\x1b[" not in result.stderr, result.stderr  # no ANSI colour codes from torch
    for word in words:
        assert word in lines[0], (word, lines[0])


def file_size_limit(size):
    """preexec_fn: writes past `size` bytes fail (EFBIG); SIGXFSZ keeps its default, which kills, for run_stage to
    set aside."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def without_root_read_override():
    """Run in the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set
    (prctl PR_CAPBSET_DROP), so root's new program gets mode bits enforced like any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def restore(repo):
    """What to do after a failed run (README): git brings back dvc.lock (the stages that did run updated it)
    and the text outputs, DVC the cached ones."""
    run(["git", "checkout", "--", "dvc.lock", "artifacts"], repo)
    run(["dvc", "checkout"], repo)


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


@pytest.fixture
def trained_dir(trained, tmp_path):
    """A folder with default params, data and a trained model, copied from a real `dvc repro`."""
    shutil.copy2(trained / "params.yaml", tmp_path)
    shutil.copytree(trained / "data", tmp_path / "data")
    (tmp_path / "artifacts").mkdir()
    shutil.copy2(trained / "artifacts/mymodel.pth", tmp_path / "artifacts")
    return tmp_path
