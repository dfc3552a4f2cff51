"""What the stages that use torch share: the network, the device, the seeds, the data and model files."""

import os
import pickle
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
        # enough. The switch also imports torch's compiler stack (1.8 s here), which a CPU run never needs.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def load_data(path, device="cpu"):
    """A data table (stages/data.py) as float32 tensors x (n, 2) and y (n, 1) on `device`."""
    x, y = load_pairs(path)
    # Contiguous copies, not views of the table: shuffling gathers them 1.5x faster.
    return torch.from_numpy(x).to(device).contiguous(), torch.from_numpy(y).to(device).contiguous()


def load_tensors(path, device="cpu"):
    """torch.load that never runs code from the file and answers a bad file with one line."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro` (or `dvc checkout` to restore it)") from None
    except pickle.UnpicklingError as error:
        with open(path, "rb") as file:
            looks_like_pytorch = zipfile.is_zipfile(file) or file.seek(0) == 0 and file.read(1) == b"\x80"
        if not looks_like_pytorch:
            raise UserError(f"{path}: not a readable PyTorch file, truncated or corrupted") from None
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: refused to load: it holds more than tensors ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a readable PyTorch file, truncated or corrupted ({first})") from None


def load_model(hidden, device, path=MODEL_FILE):
    """A fresh network with the trained weights, checked against the shape params.yaml describes."""
    model = build_model(hidden)
    state = load_tensors(path, device)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    found = (
        {name: tuple(t.shape) for name, t in state.items() if isinstance(t, torch.Tensor)}
        if isinstance(state, dict)
        else None
    )
    if found != expected:
        if found and "0.weight" in found and found.get("0.weight") != expected["0.weight"]:
            width = found["0.weight"][0]
            raise UserError(
                f"{path}: holds a model with {width} hidden units but params.yaml model.hidden is {hidden}; "
                "retrain with `dvc repro`"
            )
        raise UserError(f"{path}: not a state_dict of this network (expected {expected}, found {found})")
    model.load_state_dict(state)
    return model.to(device).eval()
