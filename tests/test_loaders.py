"""Whatever bytes a model, data or checkpoint file holds, its loader answers in one line (or, for a checkpoint, ignores
the file with one line) and runs no code from it; a write the OS refuses is one line and loses nothing.

Hypothesis generates the files: random bytes, cuts and flipped bytes of real files, and readable files of the wrong
structure. Any exception other than UserError escaping a loader fails the test. The loaders run in this process (a
few thousand files a second); a handful of cases run through the real stage commands, one per stage that uses a
loader, to prove the wiring. The failing writes are real: a file-size limit, a full tmpfs, a read-only folder.
"""

import contextlib
import errno
import io
import math
import os
import pickle
import resource
import shutil
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from stages import checkpoint, common
from stages.common import UserError
from stages.data import load_pairs
from stages.model import build_model, load_model
from tests.conftest import (
    assert_one_clear_line,
    committed_md5s,
    file_size_limit,
    prepared,
    restore,
    run,
    stage,
    without_root_read_override,
)

CPU = torch.device("cpu")
HIDDEN = 8


def fuzz(examples):
    """The same examples on every run (CI included); no deadline: a loaded machine is slow, not wrong."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def scratch():
    """A folder for the generated files: in memory where there is /dev/shm (a file written there costs 50 µs, on a
    disk 3 ms)."""
    memory = "/dev/shm"  # noqa: S108 (tempfile makes a private folder inside it)
    with tempfile.TemporaryDirectory(dir=memory if os.path.isdir(memory) else None) as folder:
        yield Path(folder)


def real_model_bytes():
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(build_model(HIDDEN).state_dict(), buffer)
    return buffer.getvalue()


def real_table(rows=16):
    x = np.random.default_rng(0).uniform(0, 10, (rows, 2)).astype(np.float32)
    return np.concatenate([x, x.sum(axis=1, keepdims=True)], axis=1)


def real_table_bytes():
    buffer = io.BytesIO()
    np.save(buffer, real_table())
    return buffer.getvalue()


MODEL_BYTES = real_model_bytes()
TABLE_BYTES = real_table_bytes()
REAL_STATE = torch.load(io.BytesIO(MODEL_BYTES), weights_only=True)


# --- What a checkpoint holds, for the checkpoint loader: a run of 2 epochs of 2 steps, and its fingerprint.


def training_state():
    torch.manual_seed(0)
    model = build_model(HIDDEN)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    return checkpoint.TrainingState(model, optimizer, torch.Generator().manual_seed(0), epochs=2, steps_per_epoch=2)


FINGERPRINT = {"seed": 0, "train.lr": 0.001, "train.shuffle": True, "torch": str(torch.__version__)}


def real_checkpoint_bytes():
    buffer = io.BytesIO()
    torch.save({"fingerprint": FINGERPRINT, **training_state().state_dict()}, buffer)
    return buffer.getvalue()


CHECKPOINT_BYTES = real_checkpoint_bytes()


# --- Strategies: bytes.


def truncations(good):
    return st.integers(0, len(good) - 1).map(lambda length: good[:length])


def flips(good):
    """1 to 8 bytes of `good` XORed with a non-zero byte."""

    def flipped(changes):
        data = bytearray(good)
        for where, mask in changes:
            data[where] ^= mask
        return bytes(data)

    return st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), min_size=1, max_size=8).map(flipped)


def random_bytes(*magics):
    """Any bytes, and bytes after a format's magic number, so the fuzzing reaches past the first check."""
    return st.one_of(
        st.binary(max_size=4096),
        *(st.binary(max_size=1024).map(lambda tail, magic=magic: magic + tail) for magic in magics),
    )


PICKLE_MAGICS = (b"\x80\x02", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02", b"PK\x03\x04")  # torch's legacy
NPY_MAGICS = (b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', ", b"PK\x03\x04")


# --- Strategies: readable files of the wrong structure.

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
    torch.complex64,
]
SHAPES = st.lists(st.integers(0, 9), max_size=3).map(tuple)


@st.composite
def tensors(draw, shape=SHAPES):
    """A tensor of any dtype and shape, and the odd kinds a torch file can hold."""
    shape, dtype = draw(shape), draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["plain", "filled", "transposed", "sparse", "meta", "parameter", "quantized", "view"]))
    if kind == "filled":
        return torch.full(shape, draw(st.sampled_from([1.5, -0.0, math.nan, math.inf, 3e38]))).to(dtype)
    if kind == "transposed":
        return torch.zeros(shape[::-1], dtype=dtype).mT if len(shape) >= 2 else torch.zeros(shape, dtype=dtype)
    if kind == "sparse":
        return torch.zeros(shape).to_sparse()
    if kind == "meta":
        return torch.empty(shape, dtype=dtype, device="meta")
    if kind == "parameter":
        return torch.nn.Parameter(torch.zeros(shape))
    if kind == "quantized":
        with warnings.catch_warnings():  # torch deprecates making them, not loading them
            warnings.simplefilter("ignore")
            return torch.quantize_per_tensor(torch.zeros(shape), 0.1, 0, torch.qint8)
    if kind == "view":  # a tensor whose storage is larger than itself
        return torch.zeros(math.prod(shape) + 5, dtype=dtype)[5:].view(shape)
    return torch.zeros(shape, dtype=dtype)


NAMES = st.sampled_from(
    [*REAL_STATE, "4.weight", "fingerprint", "model", "optimizer", "step", "losses", "generator", "state_dict"]
)
KEYS = NAMES | st.text(max_size=8) | st.integers(-2, 2) | tensors()
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63)
    | st.floats()
    | st.complex_numbers()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | tensors()
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(KEYS, inner, max_size=4)
        | st.builds(torch.Size, st.lists(st.integers(0, 9), max_size=3))
    ),
    max_leaves=12,
)


@st.composite
def bent(draw, good, values=VALUES):
    """`good` (a dict) with 1 to 3 entries replaced, retyped, reshaped, dropped or added."""
    state = dict(good)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(state, key=str) or ["0.weight"]))
        change = draw(st.sampled_from(["replace", "retype", "reshape", "drop", "add"]))
        if change == "replace" or not isinstance(state.get(name), torch.Tensor) and change in ("retype", "reshape"):
            state[name] = draw(values)
        elif change == "retype":
            state[name] = torch.zeros(state[name].shape, dtype=draw(st.sampled_from(DTYPES)))
        elif change == "reshape":
            state[name] = draw(tensors(SHAPES.filter(lambda shape, old=state[name].shape: shape != tuple(old))))
        elif change == "drop":
            state.pop(name, None)
        else:
            state[draw(KEYS)] = draw(values)
    return state


def saved(value, legacy=False):
    buffer = io.BytesIO()
    torch.save(value, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def torch_files(*goods):
    """torch.save of generated structures, and of real ones bent, in both of torch's formats."""
    structures = st.one_of(VALUES, *(bent(good) for good in goods))
    return st.tuples(structures, st.booleans()).map(lambda case: saved(*case))


# --- The properties.


def answers_in_one_line(load, path):
    """What `load(path)` returns; a UserError must be one line naming the file. Anything else escapes: a failure."""
    try:
        return load(path)
    except UserError as error:
        line = str(error)
        assert line.startswith(f"{path}: ") and "\n" not in line and "\x1b" not in line, line
        return error


def model_loader(path):
    model = answers_in_one_line(lambda p: load_model(HIDDEN, CPU, p), path)
    assert isinstance(model, UserError | torch.nn.Sequential)
    if isinstance(model, torch.nn.Sequential):
        shapes = [tuple(p.shape) for p in build_model(HIDDEN).parameters()]
        assert [tuple(p.shape) for p in model.parameters()] == shapes


def table_loader(path):
    pairs = answers_in_one_line(load_pairs, path)
    if not isinstance(pairs, UserError):
        x, y = pairs
        assert x.dtype == y.dtype == np.float32 and x.shape[1:] == (2,) and y.shape == (len(x), 1) and len(x) > 0
        assert np.isfinite(x).all() and np.isfinite(y).all()


def checkpoint_loader(path):
    """checkpoint.load never raises: it returns None after one line, or a state that a run restores without error."""
    state = training_state()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        resumed = checkpoint.load(FINGERPRINT, state, path)
    lines = err.getvalue().splitlines()
    if resumed is None:
        assert len(lines) == 1, err.getvalue()[:2000]
        assert lines[0].startswith(f"train: ignoring {path}: ") and lines[0].endswith("; starting from step 0"), lines
    else:
        assert lines == []
        state.load_state_dict(resumed)


LOADERS = {"model": model_loader, "table": table_loader, "checkpoint": checkpoint_loader}
REAL = {"model": MODEL_BYTES, "table": TABLE_BYTES, "checkpoint": CHECKPOINT_BYTES}
MAGICS = {"model": PICKLE_MAGICS, "table": NPY_MAGICS, "checkpoint": PICKLE_MAGICS}
# Made once: Hypothesis validates a strategy the first time it draws from it.
RANDOM_BYTES = {loader: random_bytes(*MAGICS[loader]) for loader in LOADERS}
TRUNCATIONS = {loader: truncations(REAL[loader]) for loader in LOADERS}
FLIPS = {loader: flips(REAL[loader]) for loader in LOADERS}


def check(loader, scratch, data):
    path = scratch / "file"
    path.write_bytes(data)
    LOADERS[loader](path)


@pytest.mark.parametrize("loader", LOADERS)
def test_the_real_files_load(scratch, loader):
    path = scratch / "real"
    path.write_bytes(REAL[loader])
    if loader == "checkpoint":
        with contextlib.redirect_stderr(io.StringIO()) as err:
            assert checkpoint.load(FINGERPRINT, training_state(), path) is not None, err.getvalue()
    elif loader == "model":
        load_model(HIDDEN, CPU, path)
    else:
        load_pairs(path)


@pytest.mark.parametrize("loader", LOADERS)
@fuzz(1000)
@given(data=st.data())
def test_random_bytes_get_one_line(scratch, capfd, loader, data):
    check(loader, scratch, data.draw(RANDOM_BYTES[loader]))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("loader", LOADERS)
@fuzz(300)
@given(data=st.data())
def test_a_real_file_cut_anywhere_gets_one_line(scratch, capfd, loader, data):
    check(loader, scratch, data.draw(TRUNCATIONS[loader]))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("loader", LOADERS)
@fuzz(600)
@given(data=st.data())
def test_a_real_file_with_flipped_bytes_gets_one_line(scratch, capfd, loader, data):
    check(loader, scratch, data.draw(FLIPS[loader]))
    assert capfd.readouterr().err == ""


@fuzz(500)
@given(data=torch_files(REAL_STATE))
def test_a_torch_file_of_the_wrong_structure_is_refused_in_one_line(scratch, capfd, data):
    check("model", scratch, data)
    assert capfd.readouterr().err == ""


@fuzz(500)
@given(data=torch_files(torch.load(io.BytesIO(CHECKPOINT_BYTES), weights_only=True), {"fingerprint": FINGERPRINT}))
def test_a_checkpoint_of_the_wrong_structure_is_ignored_in_one_line(scratch, capfd, data):
    check("checkpoint", scratch, data)
    assert capfd.readouterr().err == ""


TABLE_DTYPES = npst.scalar_dtypes() | npst.byte_string_dtypes() | st.just(np.dtype(np.float32))
TABLES = npst.arrays(TABLE_DTYPES, npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5) | st.just((4, 3)))


@st.composite
def npy_files(draw):
    """np.save of generated arrays (any dtype and shape, C or Fortran order), structured dtypes, an .npz archive."""
    array = draw(TABLES | st.builds(np.zeros, st.just((4, 3)), st.just([("x", "<f4"), ("y", "<f4")])))
    if draw(st.booleans()):
        array = np.asfortranarray(array)
    buffer = io.BytesIO()
    if draw(st.booleans()):
        np.savez(buffer, table=array)
    else:
        np.save(buffer, array)
    return buffer.getvalue()


@fuzz(500)
@given(data=npy_files())
def test_an_npy_file_of_the_wrong_structure_is_refused_in_one_line(scratch, capfd, data):
    check("table", scratch, data)
    assert capfd.readouterr().err == ""


# --- Files that would run code if loaded unsafely: they never do.


class RunsCode:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def payloads(marker):
    """Every way a pickle can ask to create `marker`."""
    return st.sampled_from(
        [
            RunsCode(os.system, f"touch {marker}"),
            RunsCode(exec, f"open({str(marker)!r}, 'w')"),
            RunsCode(eval, f"open({str(marker)!r}, 'w')"),
            RunsCode(open, str(marker), "w"),
            RunsCode(os.mkdir, str(marker)),
            RunsCode(subprocess.call, ["touch", str(marker)]),
            RunsCode(shutil.copy, __file__, str(marker)),
        ]
    )


@st.composite
def code_files(draw, marker):
    payload = draw(payloads(marker))
    wrapped = draw(st.sampled_from([payload, [payload], {"0.weight": payload}, {**REAL_STATE, "0.bias": payload}]))
    how = draw(st.sampled_from(["zip", "legacy", "pickle", "npy"]))
    if how == "pickle":
        return pickle.dumps(wrapped, protocol=draw(st.integers(0, pickle.HIGHEST_PROTOCOL)))
    if how == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.array([payload], dtype=object), allow_pickle=True)
        return buffer.getvalue()
    return saved(wrapped, legacy=how == "legacy")


@pytest.mark.parametrize("loader", LOADERS)
@fuzz(100)
@given(data=st.data())
def test_a_file_that_would_run_code_runs_none(scratch, capfd, loader, data):
    marker = scratch / "PWNED"
    check(loader, scratch, data.draw(code_files(marker)))
    assert not marker.exists()
    assert capfd.readouterr().err == ""


# --- Examples: each kind of bad file and its line.


def write_model(path, kind):
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
    elif kind == "pops-an-empty-stack":  # a pickle protocol, then STOP: torch's unpickler raises IndexError
        path.write_bytes(b"\x80\x02.")
    elif kind == "code-in-zip":
        torch.save({"0.weight": RunsCode(os.system, "touch PWNED")}, path)
    elif kind == "class-in-zip":
        torch.save({**state, "0.bias": __import__("fractions").Fraction(1, 3)}, path)
    elif kind == "code-in-pickle":
        path.write_bytes(pickle.dumps(RunsCode(os.system, "touch PWNED")))
    elif kind == "not-a-state-dict":
        torch.save(torch.zeros(3), path)
    elif kind == "extra-entry":
        torch.save({**state, "epoch": 5}, path)
    elif kind == "extra-tensor":
        torch.save({**state, "4.weight": torch.zeros(1, 1)}, path)
    elif kind == "odd-key":
        torch.save({**state, "a\nb" * 30: 1}, path)
    elif kind == "missing-key":
        torch.save({name: value for name, value in state.items() if name != "2.bias"}, path)
    elif kind == "integer-tensor":
        torch.save({**state, "0.bias": state["0.bias"].long()}, path)
    elif kind == "float64-tensor":
        torch.save({**state, "0.bias": state["0.bias"].double()}, path)
    elif kind == "sparse-tensor":
        torch.save({**state, "0.weight": state["0.weight"].to_sparse()}, path)
    elif kind == "meta-tensor":
        torch.save({**state, "2.bias": torch.empty(1, device="meta")}, path)
    elif kind == "nested-tensor":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's nested tensors warn that they are a prototype
            torch.save({**state, "0.bias": torch.nested.nested_tensor([state["0.bias"]])}, path)
    elif kind == "wrong-shape":
        torch.save({**state, "2.weight": torch.zeros(1, 9)}, path)
    elif kind == "0-d":
        torch.save({**state, "2.bias": torch.tensor(0.0)}, path)


MODEL_CASES = [
    ("truncated", ["not a readable PyTorch file", "(PytorchStreamReader failed reading zip archive"]),
    ("corrupted", ["not a readable PyTorch file"]),
    ("empty", ["not a readable PyTorch file", "(EOFError)"]),
    ("directory", ["is a directory, not a model file"]),
    ("pops-an-empty-stack", ["not a readable PyTorch file", "(malformed pickle data: IndexError)"]),
    # torch's own message is a paragraph with ANSI colour codes and advice to load with weights_only=False: the
    # line names what the file asked for instead.
    ("code-in-zip", ["refused to load: it holds more than tensors (it refers to posix.system, not a tensor type)"]),
    ("class-in-zip", ["refused to load", "(it refers to fractions.Fraction, not a tensor type)"]),
    ("code-in-pickle", ["refused to load", "(Unsupported operand 149)"]),
    ("not-a-state-dict", ["not a state_dict of this network: found a Tensor"]),
    ("extra-entry", ["not a state_dict of this network: unexpected key(s) epoch (expected 0.weight, 0.bias"]),
    ("extra-tensor", ["not a state_dict of this network: unexpected key(s) 4.weight"]),
    ("odd-key", ["unexpected key(s) 'a\\nb"]),
    ("missing-key", ["not a state_dict of this network: missing key(s) 2.bias"]),
    ("integer-tensor", ["0.bias holds a torch.int64 tensor, expected a float32 tensor"]),
    ("float64-tensor", ["0.bias holds a torch.float64 tensor, expected a float32 tensor"]),
    ("sparse-tensor", ["0.weight holds a torch.sparse_coo tensor, expected a float32 tensor"]),
    ("meta-tensor", ["2.bias holds a meta (no data) tensor, expected a float32 tensor"]),
    ("nested-tensor", ["0.bias holds a nested tensor, expected a float32 tensor"]),
    ("wrong-shape", ["not a state_dict of this network: 2.weight is (1, 9), expected (1, 8)"]),
    ("0-d", ["2.bias is (), expected (1,)"]),
]


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    """artifacts/mymodel.pth, a real one, in a temp folder made the current directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifacts").mkdir()
    path = Path("artifacts/mymodel.pth")
    path.write_bytes(MODEL_BYTES)
    return path


def refused(load, path):
    with pytest.raises(UserError) as error:
        load(path)
    line = str(error.value)
    assert "\n" not in line and "\x1b[" not in line, line
    assert line.startswith(f"{path}: "), line
    return line


@pytest.mark.parametrize(("kind", "words"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_a_bad_model_file_is_refused_in_one_line_and_runs_no_code(model_file, capfd, kind, words):
    write_model(model_file, kind)
    line = refused(lambda path: load_model(HIDDEN, CPU, path), model_file)
    for word in words:
        assert word in line, (word, line)
    assert not Path("PWNED").exists()
    assert capfd.readouterr().err == ""  # torch warns before refusing a pickle: none of it reaches the terminal


def write_data(path, kind):
    good = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) - 8])
    elif kind == "not-npy":
        path.write_bytes(b"x1,x2,y\n1,2,3\n")
    elif kind == "objects":
        np.save(path, np.array([RunsCode(os.system, "touch PWNED")], dtype=object), allow_pickle=True)
    elif kind == "wrong-columns":
        np.save(path, np.zeros((4, 2), dtype=np.float32))
    elif kind == "float64":
        np.save(path, np.zeros((4, 3)))
    elif kind == "big-endian":
        np.save(path, np.zeros((4, 3), dtype=">f4"))
    elif kind == "no-rows":
        np.save(path, np.zeros((0, 3), dtype=np.float32))
    elif kind == "not-finite":
        np.save(path, np.array([[1, 2, 3], [4, np.nan, 9]], dtype=np.float32))
    elif kind == "npz":
        with open(path, "wb") as file:
            np.savez(file, table=np.zeros((4, 3), dtype=np.float32))
    elif kind == "broken-zip":
        path.write_bytes(b"PK\x03\x04" + bytes(60))
    elif kind == "unparsable-header":  # numpy's header parser raised tokenize.TokenError for it
        path.write_bytes(b"\x93NUMPY\x01\x00\x03\x00(((")


DATA_CASES = [
    ("truncated", ["not a readable .npy table"]),
    ("not-npy", ["not a readable .npy table"]),
    ("objects", ["not a readable .npy table"]),
    ("wrong-columns", ["expected a float32 table of rows x1, x2, x1 + x2", "found float32 (4, 2)"]),
    ("float64", ["found float64 (4, 3)"]),
    ("big-endian", ["found >f4 (4, 3)"]),
    ("no-rows", ["found float32 (0, 3)"]),
    ("not-finite", ["row 2 is [4.0, nan, 9.0], expected finite numbers"]),
    ("npz", ["expected one .npy table", "found an .npz archive"]),
    ("broken-zip", ["not a readable .npy table"]),
    ("unparsable-header", ["not a readable .npy table", "(a malformed header)"]),
]


@pytest.mark.parametrize(("kind", "words"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_a_bad_data_file_is_refused_in_one_line_and_runs_no_code(tmp_path, monkeypatch, kind, words):
    monkeypatch.chdir(tmp_path)
    path = Path("data/train.npy")
    path.parent.mkdir()
    np.save(path, real_table())
    write_data(path, kind)
    line = refused(load_pairs, path)
    for word in words:
        assert word in line, (word, line)
    assert not Path("PWNED").exists()


def test_a_fortran_ordered_table_reads_as_the_same_rows(tmp_path):
    np.save(tmp_path / "table.npy", np.asfortranarray(real_table()))
    x, y = load_pairs(tmp_path / "table.npy")
    assert np.array_equal(np.concatenate([x, y], axis=1), real_table())


def test_checkpoints_the_train_stage_cannot_resume_are_ignored_in_one_line(scratch):
    """The cases a user met: a bare tensor, a fingerprint of the wrong type, the right fingerprint and nothing else."""
    path = scratch / "train.pt"
    for value in [torch.zeros(3), {"fingerprint": None}, {"fingerprint": FINGERPRINT}, [FINGERPRINT]]:
        path.write_bytes(saved(value))
        with contextlib.redirect_stderr(io.StringIO()) as err:
            assert checkpoint.load(FINGERPRINT, training_state(), path) is None, value
        assert len(err.getvalue().splitlines()) == 1, err.getvalue()


# --- The real stage commands: one per stage and loader, proving each stage reaches the loader.


@pytest.fixture(scope="module")
def prepared_with_model(tmp_path_factory):
    """Default params, the data prepare makes from them, and a model (not trained: only its structure matters)."""
    folder = prepared(tmp_path_factory.mktemp("prepared"))
    (folder / "artifacts").mkdir()
    (folder / "artifacts/mymodel.pth").write_bytes(MODEL_BYTES)
    return folder


@pytest.fixture
def stage_dir(prepared_with_model, tmp_path):
    folder = tmp_path / "stage"
    shutil.copytree(prepared_with_model, folder)
    return folder


def test_evaluate_refuses_a_model_that_would_run_code(stage_dir):
    write_model(stage_dir / "artifacts/mymodel.pth", "code-in-zip")
    result = stage("evaluate", stage_dir, check=False)
    assert_one_clear_line(result, ["evaluate: error: artifacts/mymodel.pth: refused to load", "posix.system"])
    assert not (stage_dir / "PWNED").exists()


def test_activations_refuses_a_malformed_model(call_stage, stage_dir):
    write_model(stage_dir / "artifacts/mymodel.pth", "pops-an-empty-stack")
    result = call_stage("activations", stage_dir)
    assert_one_clear_line(result, ["activations: error: artifacts/mymodel.pth: not a readable PyTorch file"])


def test_train_refuses_data_that_would_run_code(stage_dir):
    write_data(stage_dir / "data/train.npy", "objects")
    result = stage("train", stage_dir, check=False)
    assert_one_clear_line(result, ["train: error: data/train.npy: not a readable .npy table"])
    assert not (stage_dir / "PWNED").exists()


@pytest.mark.parametrize(
    ("name", "data", "kind"), [("evaluate", "val", "unparsable-header"), ("activations", "train", "npz")]
)
def test_evaluate_and_activations_refuse_bad_data(call_stage, stage_dir, name, data, kind):
    write_data(stage_dir / f"data/{data}.npy", kind)
    assert_one_clear_line(call_stage(name, stage_dir), [f"{name}: error: data/{data}.npy: "])


def test_train_ignores_a_malformed_checkpoint_and_trains_to_the_committed_bytes(stage_dir):
    (stage_dir / "checkpoints").mkdir()
    (stage_dir / "checkpoints/train.pt").write_bytes(saved(torch.zeros(3)))
    result = stage("train", stage_dir, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("train: ignoring checkpoints/train.pt: "), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert common.file_md5(stage_dir / "artifacts/mymodel.pth") == committed_md5s()["artifacts/mymodel.pth"]


# --- Writes the OS refuses: one line naming the output and the reason, exit 2, no temp file, older outputs intact.


def temp_files(folder):
    return list(Path(folder).rglob(".*.tmp"))


def outputs_of(folder):
    return {path: path.read_bytes() for path in Path(folder, "artifacts").iterdir()}


def test_a_file_size_limit_fails_the_train_stage_in_one_line_and_keeps_the_old_outputs(stage_dir):
    for name in ("mymodel.pth", "model_summary.txt", "loss.tsv"):
        (stage_dir / "artifacts" / name).write_bytes(b"an older output\n")
    before = outputs_of(stage_dir)
    result = stage("train", stage_dir, check=False, preexec_fn=file_size_limit(2048))  # the model is 2.4 KB
    assert_one_clear_line(
        result, ["train: error: cannot write artifacts/mymodel.pth: File too large; nothing was replaced"]
    )
    assert outputs_of(stage_dir) == before
    assert temp_files(stage_dir) == []


@contextlib.contextmanager
def tmpfs(folder, options):
    """A tmpfs mounted on `folder` (root only: skips elsewhere), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder):
    """Write into `folder` until its file system is full."""
    with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as file:
        while True:
            file.write(bytes(4096))


def test_a_full_disk_fails_evaluate_in_one_line_and_keeps_the_old_outputs(stage_dir):
    saved_outputs = outputs_of(stage_dir)
    with tmpfs(stage_dir / "artifacts", "size=64k"):
        for path, data in saved_outputs.items():
            path.write_bytes(data)
        (stage_dir / "artifacts/metrics.json").write_text("{}\n")
        before = outputs_of(stage_dir)
        fill(stage_dir / "artifacts")
        result = stage("evaluate", stage_dir, check=False)
        assert_one_clear_line(
            result, ["evaluate: error: cannot write artifacts/predictions.csv: No space left on device; nothing was"]
        )
        assert {path: data for path, data in outputs_of(stage_dir).items() if path.name != "filler"} == before
        assert temp_files(stage_dir) == []


def test_a_read_only_folder_fails_activations_in_one_line(stage_dir):
    artifacts = stage_dir / "artifacts"
    artifacts.chmod(0o555)
    # Root writes into a read-only folder: the stage runs without the capabilities that bypass mode bits.
    preexec = without_root_read_override if os.geteuid() == 0 else None
    try:
        result = stage("activations", stage_dir, check=False, preexec_fn=preexec)
    finally:
        artifacts.chmod(0o755)
    assert_one_clear_line(
        result, ["activations: error: cannot write artifacts/activations.csv: Permission denied; nothing was replaced"]
    )
    assert sorted(path.name for path in artifacts.iterdir()) == ["mymodel.pth"]


@contextlib.contextmanager
def file_size_limit_here(size):
    """RLIMIT_FSIZE in this process, SIGXFSZ ignored as run_stage does; both restored afterwards."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


@pytest.fixture
def refusing(tmp_path):
    """Folders whose writes the OS refuses, by errno: a file-size limit, a full tmpfs, a read-only tmpfs."""

    @contextlib.contextmanager
    def refusing(code):
        if code == errno.EFBIG:
            (tmp_path / "out.bin").write_bytes(b"old")
            with file_size_limit_here(1024):
                yield tmp_path
        elif code == errno.ENOSPC:
            with tmpfs(tmp_path / "full", "size=64k") as folder:
                (folder / "out.bin").write_bytes(b"old")
                fill(folder)
                yield folder
        else:
            with tmpfs(tmp_path / "ro", "size=64k") as folder:
                (folder / "out.bin").write_bytes(b"old")
                subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
                yield folder

    return refusing


@pytest.mark.parametrize("code", [errno.EFBIG, errno.ENOSPC, errno.EROFS], ids=errno.errorcode.get)
def test_a_refused_write_is_a_user_error_naming_the_output_and_the_reason(refusing, monkeypatch, code):
    monkeypatch.setattr(common, "_written", ["artifacts/mymodel.pth"])
    with refusing(code) as folder:
        with pytest.raises(UserError) as error, common.atomic_output(folder / "out.bin") as file:
            file.write(bytes(8192))
        assert str(error.value) == (
            f"cannot write {folder / 'out.bin'}: {os.strerror(code)}; "
            "it was not replaced (this run replaced artifacts/mymodel.pth)"
        )
        assert error.value.__cause__.errno == code
        assert (folder / "out.bin").read_bytes() == b"old"
        assert temp_files(folder) == []


# --- Through `dvc repro`, as a user meets them: a corrupted cached file, then `dvc checkout` restores it.


@pytest.mark.slow
def test_a_corrupted_model_through_dvc_repro_is_one_line_and_dvc_checkout_restores_it(trained):
    model = trained / "artifacts/mymodel.pth"
    good = model.read_bytes()
    model.unlink()  # the cache's file is linked or copied into place: replace it, never write through it
    model.write_bytes(good[: len(good) // 2] + bytes(range(256)))
    try:
        result = run(["dvc", "repro", "--force", "--single-item", "evaluate"], trained, check=False)
        assert result.returncode != 0, result.stdout
        output = result.stdout + result.stderr
        assert "evaluate: error: artifacts/mymodel.pth: not a readable PyTorch file, truncated or corrupted" in output
        assert "Traceback" not in output, output
        # A file DVC did not write is "unsaved": dvc checkout replaces it only when told to.
        run(["dvc", "checkout", "--force", "artifacts/mymodel.pth"], trained)
    finally:
        restore(trained)
    assert model.read_bytes() == good


@pytest.mark.slow
def test_a_garbage_checkpoint_through_dvc_repro_is_ignored_and_the_run_gives_the_committed_bytes(trained):
    (trained / "checkpoints").mkdir(exist_ok=True)
    (trained / "checkpoints/train.pt").write_bytes(bytes(range(256)) * 16)
    try:
        result = run(["dvc", "repro", "--force", "--single-item", "train"], trained)
        assert "train: ignoring checkpoints/train.pt: not a readable PyTorch file" in result.stdout + result.stderr
        assert not (trained / "checkpoints/train.pt").exists()
        assert committed_md5s(repo=trained) == committed_md5s()  # dvc.lock's outputs: the committed bytes
    finally:
        restore(trained)
