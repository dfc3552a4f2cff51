"""Every mistake a user can make gets one line on stderr naming the key or file, a non-zero exit, no traceback.

The stages run as users run them: `python -m stages.<name>` in a folder holding params.yaml (and, for the
model cases, a trained model), and a representative case of each kind through `dvc repro` in a clone.
"""

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
from tests.conftest import ROOT, env, run

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
    ("string-for-number", edited(**{"train.lr": "fast"}), "prepare", ["train.lr must be a number > 0, got 'fast'"]),
    ("bool-for-number", edited(**{"train.lr": True}), "prepare", ["train.lr must be a number > 0, got true"]),
    (
        "list-for-number",
        edited(**{"train.epochs": [50]}),
        "prepare",
        ["train.epochs must be an integer >= 1, got [50]"],
    ),
    (
        "null-for-number",
        edited(**{"model.hidden": None}),
        "prepare",
        ["model.hidden must be an integer >= 1, got null"],
    ),
    (
        "float-for-integer",
        edited(**{"model.hidden": 2.5}),
        "prepare",
        ["model.hidden must be an integer >= 1, got 2.5"],
    ),
    ("number-for-list", edited(**{"data.x": 5}), "prepare", ["data.x must be a non-empty list of rows", "got 5"]),
    ("lr-zero", edited(**{"train.lr": 0}), "prepare", ["train.lr must be a number > 0, got 0"]),
    ("lr-negative", edited(**{"train.lr": -0.1}), "prepare", ["train.lr must be a number > 0, got -0.1"]),
    ("epochs-zero", edited(**{"train.epochs": 0}), "prepare", ["train.epochs must be an integer >= 1, got 0"]),
    ("batch-zero", edited(**{"train.batch_size": 0}), "prepare", ["train.batch_size must be an integer >= 1, got 0"]),
    ("hidden-zero", edited(**{"model.hidden": 0}), "prepare", ["model.hidden must be an integer >= 1, got 0"]),
    ("seed-negative", edited(seed=-1), "prepare", ["seed must be an integer from 0 to", "got -1"]),
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
        ["data.synthetic.low and .high must lie within float32's range", "1e+39"],
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
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=tmp_path,
        env=env(PYTHONPATH=str(ROOT)),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
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
    good = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "corrupted":
        path.write_bytes(bytes(b ^ 0x5A for b in good))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "code-in-zip":
        import torch

        torch.save({"0.weight": RunsCode()}, path)
    elif kind == "code-in-pickle":
        path.write_bytes(pickle.dumps(RunsCode()))
    elif kind == "not-a-state-dict":
        import torch

        torch.save(torch.zeros(3), path)


MODEL_CASES = [
    ("truncated", ["not a readable PyTorch file"]),
    ("corrupted", ["not a readable PyTorch file"]),
    ("empty", ["not a readable PyTorch file"]),
    ("code-in-zip", ["refused to load"]),
    ("code-in-pickle", ["refused to load"]),
    ("not-a-state-dict", ["not a state_dict of this network"]),
]


@pytest.mark.parametrize("name", ["evaluate", "activations"])
@pytest.mark.parametrize(("kind", "words"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_a_bad_model_file_is_refused_in_one_line_and_runs_no_code(call_stage, trained_dir, name, kind, words):
    write_model(trained_dir / "artifacts/mymodel.pth", kind)
    result = call_stage(name, trained_dir) if kind != "code-in-zip" else stage(name, trained_dir)
    assert_one_clear_line(result, ["artifacts/mymodel.pth:", *words])
    assert not (trained_dir / "PWNED").exists()


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
# DVC reads params.yaml itself first: a file that is not YAML, or a key a stage lists that is gone, gets DVC's own
# one-line error; every bad value reaches the stage and gets ours.
DVC_CASES = [
    ("renamed-key", ["failed to reproduce 'train'", "'train.lr' are missing from 'params.yaml'"]),
    ("not-yaml", ["params.yaml"]),
    ("lr-zero", ["error: params.yaml: train.lr must be a number > 0, got 0"]),
    ("x-y-lengths", ["error: params.yaml: data.x has 4 rows but data.y has 3"]),
    ("points-malformed", ["error: params.yaml: evaluate.points"]),
    ("nan", ["error: params.yaml: data.x", ".nan"]),
]


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
    run(["dvc", "checkout"], trained)
    assert run(["dvc", "status"], trained).stdout.strip().endswith("up to date.")


def test_make_repro_checks_keys_no_stage_reads(trained):
    # `train.lr_rate` added beside lr changes no key a stage lists, so DVC alone would run nothing.
    (trained / ".venv").symlink_to(ROOT / ".venv")
    (trained / "params.yaml").write_text({c[0]: c[1] for c in PARAMS_CASES}["typo-key"])
    try:
        result = run(["make", "-s", "repro"], trained, check=False)
    finally:
        (trained / "params.yaml").write_text(DEFAULT_TEXT)
        (trained / ".venv").unlink()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "params: error: params.yaml: unknown key train.lr_rate (did you mean train.lr?)" in result.stderr


def test_diverged_training_through_dvc_repro_then_checkout_restores_the_model(trained):
    good = (trained / "artifacts/mymodel.pth").read_bytes()
    (trained / "params.yaml").write_text(edited(**{"train.lr": 10}))
    try:
        result = run(["dvc", "repro"], trained, check=False)
        assert result.returncode != 0 and "loss became" in result.stdout + result.stderr
        assert not (trained / "artifacts/mymodel.pth").exists()  # DVC removed it before running; none was written
    finally:
        (trained / "params.yaml").write_text(DEFAULT_TEXT)
    run(["dvc", "checkout"], trained)
    assert (trained / "artifacts/mymodel.pth").read_bytes() == good
