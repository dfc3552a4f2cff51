"""What the stages that use torch share: the network, the device, the seeds, the data and model files."""

import os
import pickle
import re
import struct
import warnings
import zipfile

import torch
from torch import nn

from stages.common import UserError
from stages.data import load_pairs

MODEL_FILE = "artifacts/mymodel.pth"


def build_model(hidden):
    """The tutorial's network: 2 inputs -> `hidden` ReLU units -> 1 output."""
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def pick_device(name):
    """`auto` means CUDA when there is one; `cuda` without one is an error, never a silent CPU run."""
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise UserError(
            "params.yaml: train.device is 'cuda' but torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}); use auto or cpu"
        )
    if name == "auto":
        name = "cuda" if has_cuda else "cpu"
    return torch.device(name)


def make_deterministic(seed, threads, device):
    """Same params, same bytes: one seed, a fixed thread count for CPU reductions, deterministic kernels."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if device.type == "cuda":
        # Only CUDA has kernels that race (atomics, cuBLAS workspaces); on the CPU a fixed thread count is
        # enough. The switch also imports torch's compiler stack (seconds of start-up), which a CPU run never needs.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def load_data(path, device="cpu"):
    """A data table (stages/data.py) as float32 tensors x (n, 2) and y (n, 1) on `device`."""
    x, y = load_pairs(path)
    # Contiguous copies, not views of the table: an epoch's shuffle gathers contiguous rows faster.
    return torch.from_numpy(x).to(device).contiguous(), torch.from_numpy(y).to(device).contiguous()


# What torch.load raises for bytes that are not a PyTorch file of tensors, besides the OSErrors of opening it. Its
# weights-only unpickler checks what a file may build, not that the pickle stream is well formed: a malformed stream
# fails inside the Python that interprets it, with whatever error the first bad opcode or argument leads to.
MALFORMED_FILE_ERRORS = (
    RuntimeError,  # torch's zip reader ("PytorchStreamReader failed reading zip archive"), a bad magic number
    EOFError,  # an empty or cut pickle stream
    ValueError,  # a bad pickle protocol, a truncated string (UnicodeDecodeError), a negative size
    zipfile.BadZipFile,  # a broken end of central directory ("zipfiles that span multiple disks")
    struct.error,  # a length field cut short
    LookupError,  # IndexError: an opcode popping an empty stack; KeyError: a memo entry never stored
    TypeError,  # a tensor rebuild called with the wrong arguments
    AttributeError,  # a tensor rebuild given a string where a storage belongs
    AssertionError,  # torch's checks of a storage reference
    ArithmeticError,  # sizes read from the file that overflow
    MemoryError,  # a size read from the file that cannot be allocated
)
# Errors the unpickler trips on in a malformed stream: their own text ("pop from empty list", a memo number) means
# nothing to a user.
_UNPICKLER_TRIPS = (struct.error, LookupError, TypeError, AttributeError, AssertionError, ArithmeticError)


def torch_error_summary(error):
    """One short phrase from torch's error for a user's line: no ANSI colour codes, no advice to load unsafely."""
    if isinstance(error, _UNPICKLER_TRIPS):
        return f"malformed pickle data: {type(error).__name__}"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    if forbidden := re.search(r"GLOBAL (\S+)", text):  # "Unsupported global: GLOBAL posix.system was not ..."
        summary = f"it refers to {forbidden[1]}, not a tensor type"
    elif detail := re.search(r"WeightsUnpickler error:\s*(.+)", text):  # "... error: \n\nUnsupported operand 149"
        summary = detail[1].strip()
    elif text:  # the first sentence: "PytorchStreamReader failed reading zip archive: failed finding central directory"
        summary = re.split(r"\.\s", text.splitlines()[0])[0]
    else:
        summary = type(error).__name__
    # A name read from a corrupted file may hold any character: escaped, it cannot break or colour the line.
    return (summary if summary.isprintable() else summary.encode("unicode_escape").decode())[:120]


def load_tensors(path, device="cpu"):
    """torch.load that never runs code from the file and answers any bad file with one line (a UserError)."""
    try:
        with warnings.catch_warnings():
            # The weights-only unpickler warns about a pickle protocol before refusing the file: our line says it.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro` (or `dvc checkout` to restore it)") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a model file; `dvc checkout` restores the model") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied; check its owner and mode (`ls -l {path}`)") from None
    except pickle.UnpicklingError as error:
        with open(path, "rb") as file:
            head = file.read(4)
        if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # neither torch's zip nor a pickle
            raise UserError(f"{path}: not a readable PyTorch file, truncated or corrupted") from None
        raise UserError(
            f"{path}: refused to load: it holds more than tensors ({torch_error_summary(error)}); nothing in it was run"
        ) from None
    except (OSError, *MALFORMED_FILE_ERRORS) as error:
        raise UserError(
            f"{path}: not a readable PyTorch file, truncated or corrupted ({torch_error_summary(error)})"
        ) from None


def short_repr(value, most=40, bare_names=True):
    """A key or value from a file, on one line and short: a name as it is (bare_names), anything else as its repr."""
    bare = bare_names and isinstance(value, str) and value.isprintable()
    text = value if bare else " ".join(repr(value).split())
    return text if len(text) <= most else text[: most - 3] + "..."


def _listed(names, most=5):
    shown = [short_repr(name) for name in names[:most]]
    return ", ".join(shown) + (f" and {len(names) - most} more" if len(names) > most else "")


def unlike_a_plain_tensor(value, dtype):
    """What keeps `value` from being a plain (dense, in memory) tensor of `dtype`, said for a user; None if nothing.
    Asked before its shape: a nested tensor has none to ask for."""
    if not isinstance(value, torch.Tensor):
        return f"{type(value).__name__} {short_repr(value)}"
    if value.is_nested or value.is_meta or value.layout != torch.strided:
        kind = "nested" if value.is_nested else "meta (no data)" if value.is_meta else str(value.layout)
        return f"a {kind} tensor"
    if value.dtype != dtype:
        return f"a {value.dtype} tensor"
    return None


def load_model(hidden, device, path=MODEL_FILE):
    """A fresh network with the trained weights, checked against the shape params.yaml describes.

    Every check load_state_dict would fail with a traceback is made here first and named in one line.
    """
    model = build_model(hidden)
    state = load_tensors(path, device)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    wrong = f"{path}: not a state_dict of this network"
    if not isinstance(state, dict):
        raise UserError(f"{wrong}: found a {type(state).__name__}, expected a dict of tensors {', '.join(expected)}")
    extra = [name for name in state if name not in expected]
    missing = [name for name in expected if name not in state]
    if extra or missing:
        found = [f"unexpected key(s) {_listed(extra)}"] if extra else []
        found += [f"missing key(s) {', '.join(missing)}"] if missing else []
        raise UserError(f"{wrong}: {'; '.join(found)} (expected {', '.join(expected)})")
    for name, value in state.items():
        if problem := unlike_a_plain_tensor(value, torch.float32):
            raise UserError(f"{wrong}: {name} holds {problem}, expected a float32 tensor")
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        first = found["0.weight"]
        if len(first) == 2 and first[1] == 2 and first[0] != hidden:
            raise UserError(
                f"{path}: holds a model with {first[0]} hidden units but params.yaml model.hidden is {hidden}; "
                "retrain with `dvc repro`"
            )
        shapes = "; ".join(
            f"{name} is {found[name]}, expected {shape}" for name, shape in expected.items() if found[name] != shape
        )
        raise UserError(f"{wrong}: {shapes}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # a float32 tensor of the right shape that cannot be copied (a meta tensor)
        raise UserError(f"{wrong}: {torch_error_summary(error)}") from None
    return model.to(device).eval()
