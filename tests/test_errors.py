"""Every mistake a user can make gets one line on stderr naming the key or file, a non-zero exit, no traceback.

The stages run as users run them: `python -m stages.<name>` in a folder holding params.yaml (and, for the
model cases, a trained model), and a representative case of each kind through `dvc repro` in a clone.
"""

import ctypes
import fractions
import importlib
import os
import pickle
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from stages.common import run_stage
from tests.conftest import ROOT, env, run, start_stage

DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def edited(**changes):
    """The default params with dotted keys set (a value of DELETE removes the key)."""
    tree = yaml.safe_load(yaml.safe_dump(DEFAULT))
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


DELETE = object()
DEFAULT_TEXT = (ROOT / "params.yaml").read_text()

# (id, params.yaml text, stage, words the one line must hold)
PARAMS_CASES = [
    ("missing-section", edited(train=DELETE), "prepare", ["train is missing"]),
    ("missing-key", edited(**{"train.lr": DELETE}), "prepare", ["train.lr is missing"]),
    ("typo-section", DEFAULT_TEXT.replace("train:", "trian:"), "prepare", ["unknown key trian", "did you mean train?"]),
    ("typo-key", edited(**{"train.lr_rate": 0.1}), "prepare", ["unknown key train.lr_rate", "did you mean train.lr?"]),
    ("renamed-key", DEFAULT_TEXT.replace("lr:", "lr_rate:"), "train", ["unknown key train.lr_rate", "(did you mean"]),
    (
        "string-for-number",
        edited(**{"train.lr": "fast"}),
        "prepare",
        ["train.lr must be a finite number > 0, got 'fast'"],
    ),
    ("bool-for-number", edited(**{"train.lr": True}), "prepare", ["train.lr must be a finite number > 0, got true"]),
    ("lr-inf", edited(**{"train.lr": float("inf")}), "prepare", ["train.lr must be a finite number > 0, got .inf"]),
    (
        "list-for-number",
        edited(**{"train.epochs": [50]}),
        "prepare",
        ["train.epochs must be an integer from 1 to 1000000, got [50]"],
    ),
    (
        "null-for-number",
        edited(**{"model.hidden": None}),
        "prepare",
        ["model.hidden must be an integer from 1 to 65536, got null"],
    ),
    (
        "float-for-integer",
        edited(**{"model.hidden": 2.5}),
        "prepare",
        ["model.hidden must be an integer from 1 to 65536, got 2.5"],
    ),
    ("number-for-list", edited(**{"data.x": 5}), "prepare", ["data.x must be a non-empty list of rows", "got 5"]),
    ("lr-zero", edited(**{"train.lr": 0}), "prepare", ["train.lr must be a finite number > 0, got 0"]),
    ("lr-negative", edited(**{"train.lr": -0.1}), "prepare", ["train.lr must be a finite number > 0, got -0.1"]),
    ("epochs-zero", edited(**{"train.epochs": 0}), "prepare", ["train.epochs must be an integer from 1 to", "got 0"]),
    (
        "batch-zero",
        edited(**{"train.batch_size": 0}),
        "prepare",
        ["train.batch_size must be an integer from 1", "got 0"],
    ),
    ("hidden-zero", edited(**{"model.hidden": 0}), "prepare", ["model.hidden must be an integer from 1 to", "got 0"]),
    ("seed-negative", edited(seed=-1), "prepare", ["seed must be an integer from 0 to", "got -1"]),
    # Numbers of any size get their line: no OverflowError from math.isfinite(10**400), no crash in torch or numpy.
    (
        "lr-400-digits",
        edited(**{"train.lr": int("9" * 400)}),
        "prepare",
        ["train.lr must be a finite number > 0 (a float holds up to ±1.8e+308), got an integer of 400 digits"],
    ),
    (
        "epochs-huge",
        edited(**{"train.epochs": 10**400}),
        "prepare",
        ["train.epochs must be an integer from 1 to 1000000, got an integer of 401 digits"],
    ),
    (
        "hidden-huge",
        edited(**{"model.hidden": 10**30}),
        "prepare",
        ["model.hidden must be an integer from 1 to 65536, got an integer of 31 digits"],
    ),
    (
        "threads-huge",
        edited(**{"train.threads": 10**10}),
        "prepare",
        ["train.threads must be an integer from 1 to 1024, got 10000000000"],
    ),
    (
        "nproc-huge",
        edited(**{"train.nproc": 1025}),
        "prepare",
        ["train.nproc must be an integer from 1 to 1024, got 1025"],
    ),
    (
        "batch-huge",
        edited(**{"train.batch_size": 2**70}),
        "prepare",
        ["train.batch_size must be an integer from 1 to 2147483647, got an integer of 22 digits"],
    ),
    (
        "synthetic-n-huge",
        edited(**{"data.synthetic.n": 10**20}),
        "prepare",
        ["data.synthetic.n must be an integer from 0 to 2147483647, got 100000000000000000000"],
    ),
    ("seed-huge", edited(seed=2**64), "prepare", ["seed must be an integer from 0 to 9223372036854775807, got 1844"]),
    (
        "5000-digits",
        DEFAULT_TEXT.replace("seed: 0", "seed: " + "9" * 5000),
        "prepare",
        ["line 1 holds a number of 5000 digits"],
    ),
    (
        "checkpoint-negative",
        edited(**{"train.checkpoint_every_s": -1}),
        "prepare",
        ["train.checkpoint_every_s must be a finite number >= 0, got -1"],
    ),
    (
        "checkpoint-string",
        edited(**{"train.checkpoint_every_s": "30s"}),
        "prepare",
        ["train.checkpoint_every_s must be a finite number >= 0, got '30s'"],
    ),
    (
        "checkpoint-inf",
        edited(**{"train.checkpoint_every_s": float("inf")}),
        "prepare",
        ["train.checkpoint_every_s must be a finite number >= 0, got .inf"],
    ),
    (
        "checkpoint-missing",
        edited(**{"train.checkpoint_every_s": DELETE}),
        "prepare",
        ["train.checkpoint_every_s is missing"],
    ),
    (
        "restarts-too-many",
        edited(**{"train.max_restarts": 101}),
        "prepare",
        ["train.max_restarts must be an integer from 0 to 100, got 101"],
    ),
    (
        "restarts-negative",
        edited(**{"train.max_restarts": -1}),
        "prepare",
        ["train.max_restarts must be an integer from 0 to 100, got -1"],
    ),
    (
        "restarts-float",
        edited(**{"train.max_restarts": 2.5}),
        "prepare",
        ["train.max_restarts must be an integer from 0 to 100, got 2.5"],
    ),
    (
        "shuffle-string",
        edited(**{"train.shuffle": "yes"}),
        "prepare",
        ["train.shuffle must be true or false, got 'yes'"],
    ),
    ("x-not-pairs", edited(**{"data.x": [[1, 2, 3], [3, 4], [5, 6], [7, 8]]}), "prepare", ["data.x", "row 0"]),
    ("y-not-single", edited(**{"data.y": [[3, 4], [7], [11], [15]]}), "prepare", ["data.y", "row 0"]),
    ("x-y-lengths", edited(**{"data.y": [[3], [7], [11]]}), "prepare", ["data.x has 4 rows but data.y has 3"]),
    ("no-rows", edited(**{"data.x": [], "data.y": []}), "prepare", ["data.x must be a non-empty list", "got []"]),
    ("non-numeric", edited(**{"data.x": [[1, "two"], [3, 4], [5, 6], [7, 8]]}), "prepare", ["data.x", "'two'"]),
    ("nan", DEFAULT_TEXT.replace("[[1, 2],", "[[.nan, 2],"), "prepare", ["data.x", ".nan", "finite"]),
    ("inf", DEFAULT_TEXT.replace("[[3],", "[[.inf],"), "prepare", ["data.y", ".inf", "finite"]),
    ("points-malformed", edited(**{"evaluate.points": [[8]]}), "prepare", ["evaluate.points", "row 0"]),
    ("points-not-list", edited(**{"evaluate.points": "8,9"}), "prepare", ["evaluate.points", "got '8,9'"]),
    (
        "synthetic-range",
        edited(**{"data.synthetic": {"n": 10, "low": 5, "high": 5}}),
        "prepare",
        ["data.synthetic.high must be > data.synthetic.low"],
    ),
    (
        "synthetic-beyond-float32",
        edited(**{"data.synthetic": {"n": 10, "low": 0, "high": 1e39}}),
        "prepare",
        ["data.synthetic.low and .high must lie within ±1.7014117e+38, half float32's range", "got [0.0, 1e+39)"],
    ),
    (
        # Each bound fits float32, but two draws near 2e+38 sum to inf.
        "synthetic-sum-beyond-float32",
        edited(**{"data.synthetic": {"n": 10, "low": -2e38, "high": 0}}),
        "prepare",
        ["data.synthetic.low and .high must lie within ±1.7014117e+38", "(a target sums two draws)", "[-2e+38, 0.0)"],
    ),
    # Every number that becomes float32 data fits it, and so does each sum x1 + x2 that becomes a target.
    (
        "points-beyond-float32",
        edited(**{"evaluate.points": [[1e39, 0], [1, 2]]}),
        "prepare",
        ["evaluate.points", "row 0 holds 1e+39, beyond float32's range ±3.4028235e+38"],
    ),
    (
        "points-sum-beyond-float32",
        edited(**{"evaluate.points": [[1, 2], [3e38, 3e38]]}),
        "prepare",
        ["evaluate.points", "row 1 is [3e+38, 3e+38], whose sum (its target) is beyond float32's range"],
    ),
    (
        "x-sum-beyond-float32",
        edited(**{"data.x": [[1, 2], [3, 4], [-2e38, -2e38], [7, 8]]}),
        "prepare",
        ["data.x", "row 2 is [-2e+38, -2e+38], whose sum (its target) is beyond float32's range"],
    ),
    (
        "x-integer-beyond-float32",
        edited(**{"data.x": [[10**400, 2], [3, 4], [5, 6], [7, 8]]}),
        "prepare",
        ["data.x", "row 0 holds an integer of 401 digits, beyond float32's range"],
    ),
    (
        "y-beyond-float32",
        edited(**{"data.y": [[3], [7], [-4e38], [15]]}),
        "prepare",
        ["data.y", "row 2 holds -4e+38, beyond float32's range"],
    ),
    (
        "unknown-device",
        edited(**{"train.device": "gpu"}),
        "prepare",
        ["train.device must be one of auto, cpu, cuda, got 'gpu'"],
    ),
    ("not-yaml", "train: [unclosed\n", "prepare", ["params.yaml: not valid YAML at line"]),
    # DVC reads params.yaml before any stage runs: through `dvc repro` this one gets DVC's own line.
    ("not-a-mapping", "- 1\n- 2\n", "prepare", ["the file must be a mapping"]),
]


def stage(name, cwd, check=False, **extra_env):
    """`python -m stages.<name>` in `cwd`, exactly as dvc.yaml runs it."""
    return run([sys.executable, "-m", f"stages.{name}"], cwd, check=check, PYTHONPATH=str(ROOT), **extra_env)


@pytest.fixture
def call_stage(monkeypatch, capsys):
    """The same entry point as `python -m stages.<name>` (run_stage(main)), in this process: no 2 s torch import
    per case. The table runs this way; the cases below it run the real commands."""

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
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert "\x1b[" not in result.stderr, result.stderr  # no ANSI colour codes from torch
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize(("text", "name", "words"), [c[1:] for c in PARAMS_CASES], ids=[c[0] for c in PARAMS_CASES])
def test_bad_params_give_one_clear_line(call_stage, tmp_path, text, name, words):
    (tmp_path / "params.yaml").write_text(text)
    result = call_stage(name, tmp_path)
    assert_one_clear_line(result, ["params.yaml:", *words])
    assert not (tmp_path / "data").exists()


def test_missing_params_file(tmp_path):
    assert_one_clear_line(stage("prepare", tmp_path), ["params.yaml: not found"])


def test_params_file_that_is_not_text_or_not_a_file(call_stage, tmp_path):
    (tmp_path / "params.yaml").write_bytes(b"seed: 0 \xff\n")
    assert_one_clear_line(
        call_stage("prepare", tmp_path), ["params.yaml: not UTF-8 text: invalid start byte at byte 8"]
    )
    (tmp_path / "params.yaml").unlink()
    (tmp_path / "params.yaml").mkdir()
    assert_one_clear_line(call_stage("prepare", tmp_path), ["params.yaml: cannot be read: is a directory"])


@pytest.mark.parametrize("case", ["typo-key", "nan", "not-yaml"])
def test_the_stage_command_itself_prints_the_same_line(tmp_path, case):
    text, name, words = {c[0]: c[1:] for c in PARAMS_CASES}[case]
    (tmp_path / "params.yaml").write_text(text)
    assert_one_clear_line(stage(name, tmp_path), ["params.yaml:", *words])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_cuda_is_an_error_not_a_fallback(tmp_path):
    (tmp_path / "params.yaml").write_text(edited(**{"train.device": "cuda"}))
    stage("prepare", tmp_path, check=True)
    assert_one_clear_line(stage("train", tmp_path), ["train.device is 'cuda'", "torch.cuda.is_available() is False"])


def test_batch_larger_than_the_data_trains_one_full_batch_per_epoch(tmp_path):
    (tmp_path / "params.yaml").write_text(edited(**{"train.batch_size": 100}))
    stage("prepare", tmp_path, check=True)
    stage("train", tmp_path, check=True)
    assert len((tmp_path / "artifacts/loss.tsv").read_text().splitlines()) == 1 + 50


def test_loss_that_blows_up_stops_training_and_writes_no_model(tmp_path):
    (tmp_path / "params.yaml").write_text(edited(**{"train.lr": 10}))
    stage("prepare", tmp_path, check=True)
    result = stage("train", tmp_path)
    assert_one_clear_line(result, ["loss became", "at step", "train.lr 10", "no model was written"])
    assert not (tmp_path / "artifacts").exists() or not list((tmp_path / "artifacts").iterdir())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_training_exits_non_zero_and_leaves_no_partial_output(tmp_path, signum):
    long_run = {
        "data.synthetic": {"n": 20_000, "low": 0, "high": 10},
        "train.batch_size": 1000,
        "train.epochs": 100_000,
    }
    (tmp_path / "params.yaml").write_text(edited(**long_run))
    stage("prepare", tmp_path, check=True)
    process = start_stage("train", tmp_path)
    first_progress = process.stderr.readline()  # training prints progress every 5 s: it is mid-loop now
    assert first_progress.startswith("train: epoch"), first_progress
    process.send_signal(signum)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert_one_clear_line(
        subprocess.CompletedProcess([], process.returncode, "", rest), [signum.name], code=128 + signum
    )
    assert not (tmp_path / "artifacts").exists() or not list((tmp_path / "artifacts").iterdir())


@pytest.fixture
def trained_dir(trained, tmp_path):
    """A folder with default params, data and a trained model, copied from a real `dvc repro`."""
    shutil.copy2(trained / "params.yaml", tmp_path)
    shutil.copytree(trained / "data", tmp_path / "data")
    (tmp_path / "artifacts").mkdir()
    shutil.copy2(trained / "artifacts/mymodel.pth", tmp_path / "artifacts")
    return tmp_path


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def write_model(path, kind):
    import torch

    good = path.read_bytes()
    state = torch.load(path, weights_only=True)
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "corrupted":
        path.write_bytes(bytes(b ^ 0x5A for b in good))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "code-in-zip":
        torch.save({"0.weight": RunsCode()}, path)
    elif kind == "class-in-zip":
        torch.save({**state, "0.bias": fractions.Fraction(1, 3)}, path)
    elif kind == "code-in-pickle":
        path.write_bytes(pickle.dumps(RunsCode()))
    elif kind == "not-a-state-dict":
        torch.save(torch.zeros(3), path)
    elif kind == "extra-entry":
        torch.save({**state, "epoch": 5}, path)
    elif kind == "extra-tensor":
        torch.save({**state, "4.weight": torch.zeros(1, 1)}, path)
    elif kind == "missing-key":
        torch.save({name: value for name, value in state.items() if name != "2.bias"}, path)
    elif kind == "integer-tensor":
        torch.save({**state, "0.bias": state["0.bias"].long()}, path)
    elif kind == "wrong-shape":
        torch.save({**state, "2.weight": torch.zeros(1, 9)}, path)


MODEL_CASES = [
    ("truncated", ["not a readable PyTorch file", "(PytorchStreamReader failed reading zip archive"]),
    ("corrupted", ["not a readable PyTorch file"]),
    ("empty", ["not a readable PyTorch file", "(EOFError)"]),
    ("directory", ["is a directory, not a model file"]),
    # torch's own message is a paragraph with ANSI colour codes and advice to load with weights_only=False: the
    # line names what the file asked for instead.
    ("code-in-zip", ["refused to load: it holds more than tensors (it refers to posix.system, not a tensor type)"]),
    ("class-in-zip", ["refused to load", "(it refers to fractions.Fraction, not a tensor type)"]),
    ("code-in-pickle", ["refused to load", "(Unsupported operand 149)"]),
    ("not-a-state-dict", ["not a state_dict of this network: found a Tensor"]),
    ("extra-entry", ["not a state_dict of this network: unexpected key(s) epoch (expected 0.weight, 0.bias"]),
    ("extra-tensor", ["not a state_dict of this network: unexpected key(s) 4.weight"]),
    ("missing-key", ["not a state_dict of this network: missing key(s) 2.bias"]),
    ("integer-tensor", ["0.bias holds a torch.int64 tensor, expected a float tensor"]),
    ("wrong-shape", ["not a state_dict of this network: 2.weight is (1, 9), expected (1, 8)"]),
]
# The stage command itself for these: torch warns on stderr before refusing a pickle, which only a real process shows.
REAL_PROCESS = {"code-in-zip", "class-in-zip", "code-in-pickle"}


@pytest.mark.parametrize("name", ["evaluate", "activations"])
@pytest.mark.parametrize(("kind", "words"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_a_bad_model_file_is_refused_in_one_line_and_runs_no_code(call_stage, trained_dir, name, kind, words):
    write_model(trained_dir / "artifacts/mymodel.pth", kind)
    result = stage(name, trained_dir) if kind in REAL_PROCESS else call_stage(name, trained_dir)
    assert_one_clear_line(result, ["artifacts/mymodel.pth:", *words])
    assert not (trained_dir / "PWNED").exists()


def without_root_read_override():
    """Run in the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set
    (prctl PR_CAPBSET_DROP), so root's new program gets mode bits enforced like any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize("name", ["evaluate", "activations"])
def test_an_unreadable_model_file_says_permission_denied(trained_dir, name):
    # The tests run as root, which reads a mode-000 file. Running the stage as another user (uid 65534) is not
    # possible here: the venv's python links to /root/.pyenv, which only root may enter. So the same python runs
    # as root without the capabilities that bypass mode bits: the kernel then refuses the read (EACCES), as it
    # would for a user who does not own the file.
    model = trained_dir / "artifacts/mymodel.pth"
    model.chmod(0)
    preexec = without_root_read_override if os.geteuid() == 0 else None
    probe = [sys.executable, "-c", f"open({str(model)!r}, 'rb')"]
    try:
        if subprocess.run(probe, preexec_fn=preexec, capture_output=True).returncode == 0:
            pytest.skip("this process reads a mode-000 file anyway (a capability it cannot drop)")
    except subprocess.SubprocessError as error:
        pytest.skip(f"cannot drop root's CAP_DAC_OVERRIDE here: {error}")
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{name}"],
        cwd=trained_dir,
        env=env(PYTHONPATH=str(ROOT)),
        preexec_fn=preexec,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_clear_line(result, ["artifacts/mymodel.pth: permission denied; check its owner and mode"])


@pytest.mark.parametrize("name", ["evaluate", "activations"])
def test_a_model_of_another_width_than_params_is_refused(call_stage, trained_dir, name):
    (trained_dir / "params.yaml").write_text(edited(**{"model.hidden": 16}))
    result = call_stage(name, trained_dir)
    assert_one_clear_line(result, ["artifacts/mymodel.pth:", "8 hidden units", "model.hidden is 16"])


def write_data(path, kind):
    import numpy as np

    good = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) - 8])
    elif kind == "not-npy":
        path.write_bytes(b"x1,x2,y\n1,2,3\n")
    elif kind == "objects":
        np.save(path, np.array([RunsCode()], dtype=object), allow_pickle=True)
    elif kind == "wrong-columns":
        np.save(path, np.zeros((4, 2), dtype=np.float32))
    elif kind == "float64":
        np.save(path, np.zeros((4, 3)))
    elif kind == "no-rows":
        np.save(path, np.zeros((0, 3), dtype=np.float32))
    elif kind == "npz":
        with open(path, "wb") as file:
            np.savez(file, table=np.zeros((4, 3), dtype=np.float32))
    elif kind == "broken-zip":
        path.write_bytes(b"PK\x03\x04" + bytes(60))


DATA_CASES = [
    ("truncated", ["not a readable .npy table"]),
    ("not-npy", ["not a readable .npy table"]),
    ("objects", ["not a readable .npy table"]),
    ("wrong-columns", ["expected a float32 table of rows x1, x2, x1 + x2", "found float32 (4, 2)"]),
    ("float64", ["found float64 (4, 3)"]),
    ("no-rows", ["found float32 (0, 3)"]),
    ("npz", ["expected one .npy table", "found an .npz archive"]),
    ("broken-zip", ["not a readable .npy table"]),
]


@pytest.mark.parametrize("name", ["train", "evaluate", "activations"])
@pytest.mark.parametrize(("kind", "words"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_a_bad_data_file_is_refused_in_one_line_and_runs_no_code(call_stage, trained_dir, name, kind, words):
    write_data(trained_dir / "data/train.npy", kind)
    assert_one_clear_line(call_stage(name, trained_dir), ["data/train.npy:", *words])
    assert not (trained_dir / "PWNED").exists()


def test_missing_data_says_how_to_get_it(call_stage, trained_dir):
    (trained_dir / "data/val.npy").unlink()
    assert_one_clear_line(call_stage("evaluate", trained_dir), ["data/val.npy: not found", "dvc repro prepare"])


def test_missing_model_says_how_to_get_it(trained_dir):
    (trained_dir / "artifacts/mymodel.pth").unlink()
    assert_one_clear_line(stage("evaluate", trained_dir), ["artifacts/mymodel.pth: not found", "dvc repro"])


def test_debug_variable_lets_the_traceback_through(tmp_path):
    (tmp_path / "params.yaml").write_text(edited(**{"train.lr": 0}))
    result = stage("prepare", tmp_path, ADDNET_DEBUG="1")
    assert result.returncode != 0 and "Traceback" in result.stderr and "UserError" in result.stderr


# Through `dvc repro` on a fresh clone: one case of each kind, then `dvc checkout` brings the good outputs back.
# DVC reads params.yaml itself first: a file that is not YAML gets DVC's own error. Everything else reaches prepare,
# which depends on all of params.yaml and runs first: a renamed or deleted key gets our line before DVC would say
# `Parameters 'train.lr' are missing` for the train stage.
DVC_CASES = [
    ("renamed-key", ["prepare: error: params.yaml: unknown key train.lr_rate (did you mean train.lr?)"]),
    ("missing-key", ["prepare: error: params.yaml: train.lr is missing"]),
    # DVC's own words (then parser detail on more lines): the stage never runs.
    ("not-yaml", ["ERROR: unable to read: 'params.yaml', YAML file structure is corrupted"]),
    ("lr-zero", ["error: params.yaml: train.lr must be a finite number > 0, got 0"]),
    ("x-y-lengths", ["error: params.yaml: data.x has 4 rows but data.y has 3"]),
    ("points-malformed", ["error: params.yaml: evaluate.points"]),
    ("nan", ["error: params.yaml: data.x", ".nan"]),
    ("points-sum-beyond-float32", ["error: params.yaml: evaluate.points", "row 1 is [3e+38, 3e+38], whose sum"]),
    ("lr-400-digits", ["error: params.yaml: train.lr must be a finite number > 0", "an integer of 400 digits"]),
]


def restore(repo):
    """What README says to do after a failed run: git brings back dvc.lock (the stages that did run updated it)
    and the text outputs, DVC the cached ones."""
    run(["git", "checkout", "--", "dvc.lock", "artifacts"], repo)
    run(["dvc", "checkout"], repo)


@pytest.mark.parametrize(("case", "words"), DVC_CASES, ids=[c[0] for c in DVC_CASES])
def test_through_dvc_repro_then_dvc_checkout_restores(trained, case, words):
    (trained / "params.yaml").write_text({c[0]: c[1] for c in PARAMS_CASES}[case])
    try:
        result = run(["dvc", "repro"], trained, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "Traceback" not in output
        assert any(all(word in line for word in words) for line in output.splitlines()), output
    finally:
        (trained / "params.yaml").write_text(DEFAULT_TEXT)
    restore(trained)
    assert run(["dvc", "status"], trained).stdout.strip().endswith("up to date.")


def test_a_misspelt_key_stops_dvc_repro_and_exp_run_before_training(trained):
    # `train.lr_rate` added beside lr changes no key the train stage lists. prepare depends on all of params.yaml,
    # so any edit re-runs it, and it checks every key: plain `dvc repro` stops there, before training.
    (trained / "params.yaml").write_text({c[0]: c[1] for c in PARAMS_CASES}["typo-key"])
    try:
        for command in (["dvc", "repro"], ["dvc", "exp", "run"]):
            result = run(command, trained, check=False)
            output = result.stdout + result.stderr
            assert result.returncode != 0 and "Traceback" not in output, (command, output)
            assert "prepare: error: params.yaml: unknown key train.lr_rate (did you mean train.lr?)" in output
            assert "Running stage 'prepare'" in output and "Running stage 'train'" not in output, (command, output)
    finally:
        (trained / "params.yaml").write_text(DEFAULT_TEXT)
    restore(trained)
    assert run(["dvc", "status"], trained).stdout.strip().endswith("up to date.")


def test_diverged_training_through_dvc_repro_then_checkout_restores_the_model(trained):
    good = (trained / "artifacts/mymodel.pth").read_bytes()
    (trained / "params.yaml").write_text(edited(**{"train.lr": 10}))
    try:
        result = run(["dvc", "repro"], trained, check=False)
        assert result.returncode != 0 and "loss became" in result.stdout + result.stderr
        assert not (trained / "artifacts/mymodel.pth").exists()  # DVC removed it before running; none was written
    finally:
        (trained / "params.yaml").write_text(DEFAULT_TEXT)
    restore(trained)
    assert (trained / "artifacts/mymodel.pth").read_bytes() == good
    assert run(["dvc", "status"], trained).stdout.strip().endswith("up to date.")
