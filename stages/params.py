"""params.yaml, read in one place: every key checked, typed, and the first problem named in one line.

params = load_params()
params.train.lr        # a float, even when `dvc exp run -S` wrote it as 1e-06
"""

import difflib
import json
import math
import re
import struct
import sys
from types import SimpleNamespace

import yaml

from stages.common import UserError

PARAMS_FILE = "params.yaml"
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_RANGE = "float32's range ±3.4028235e+38"


class _Loader(yaml.SafeLoader):
    """YAML 1.2 numbers, as DVC writes them: PyYAML alone reads `1e-06` (no dot) as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _show(value):
    """A value as the user wrote it in YAML: null, true, 'text', [1, 2]."""
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    if isinstance(value, str):
        return repr(value)
    if _is_number(value) and isinstance(value, int) and abs(value) >= 10**21:  # 10**400 in full fills a line
        return f"an integer of {len(str(abs(value)))} digits"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value):
    """A number a float can hold. An int of any size compares exactly, where math.isfinite(10**400) overflows."""
    return _is_number(value) and abs(value) <= sys.float_info.max  # NaN compares False


def _float32(value):
    """`value` as prepare stores it (numpy's float32 cast), or None where that cast gives inf."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]  # "<f" raises on overflow; native "f" gives inf
    except OverflowError:
        return None


class _Problem(Exception):
    def __init__(self, expected):
        self.expected = expected


def integer(minimum, maximum=None):
    """An int in [minimum, maximum]: every integer key has a ceiling, so a slip of the keyboard (10**30) gets a
    line here instead of an allocation or a C overflow deep in torch or numpy."""
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def check(value):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise _Problem(expected)
        if maximum is not None and value > maximum:
            raise _Problem(expected)
        return value

    return check


def number(above=None, at_least=None):
    expected = "a finite number"
    if above is not None:
        expected += f" > {above}"
    if at_least is not None:
        expected += f" >= {at_least}"

    def check(value):
        if _is_number(value) and isinstance(value, int) and not _is_finite(value):
            raise _Problem(f"{expected} (a float holds up to ±1.8e+308)")
        if not _is_finite(value) or (above is not None and value <= above):
            raise _Problem(expected)
        if at_least is not None and value < at_least:
            raise _Problem(expected)
        return float(value)

    return check


def boolean(value):
    if not isinstance(value, bool):
        raise _Problem("true or false")
    return value


def choice(*options):
    def check(value):
        if value not in options:
            raise _Problem("one of " + ", ".join(options))
        return value

    return check


def rows(width, sums=False):
    """A non-empty list of rows, each a list of `width` numbers that fit float32 (the data's type): [[1, 2], [3, 4]].

    sums=True: each row is a pair whose float32 sum becomes a target (prepare's np.add), so that sum must fit too:
    3e+38 + 3e+38 would be inf.
    """
    shape = f"[{', '.join(['number'] * width)}]"
    expected = f"a non-empty list of rows like {shape}"

    def check(value):
        if not isinstance(value, list) or not value:
            raise _Problem(expected)
        for i, row in enumerate(value):
            if not isinstance(row, list) or len(row) != width:
                raise _Problem(f"{expected}; row {i} is {_show(row)}, not {width} value(s)")
            for entry in row:
                if not _is_number(entry) or isinstance(entry, float) and not math.isfinite(entry):
                    raise _Problem(f"{expected}; row {i} holds {_show(entry)}, not a finite number")
                if abs(entry) > FLOAT32_MAX:
                    raise _Problem(f"{expected}; row {i} holds {_show(entry)}, beyond {FLOAT32_RANGE}")
            if sums and _float32(_float32(row[0]) + _float32(row[1])) is None:
                raise _Problem(f"{expected}; row {i} is {_show(row)}, whose sum (its target) is beyond {FLOAT32_RANGE}")
        return [[float(entry) for entry in row] for row in value]

    return check


# The ceilings sit far beyond any real run; they only turn a slip (10**30) into this file's one line:
# - seed: torch.manual_seed takes a 64-bit integer.
# - synthetic.n, batch_size: 2**31 rows is a 24 GiB float32 table (and as much again for its shuffled copy).
# - hidden: 65,536 units are 262,145 parameters, 8,000 times the tutorial's 33.
# - epochs: a million passes; the tutorial converges in 50, and loss.tsv keeps a row per step.
# - threads, nproc: 1,024 CPU threads, or processes on one machine. max_restarts: up to 100 torchrun restarts.
SCHEMA = {
    "seed": integer(0, 2**63 - 1),
    "data": {
        "x": rows(2, sums=True),
        "y": rows(1),
        "synthetic": {"n": integer(0, 2**31 - 1), "low": number(), "high": number()},
    },
    "model": {"hidden": integer(1, 65_536)},
    "train": {
        "device": choice("auto", "cpu", "cuda"),
        "epochs": integer(1, 1_000_000),
        "batch_size": integer(1, 2**31 - 1),
        "shuffle": boolean,
        "lr": number(above=0),
        "threads": integer(1, 1024),
        "nproc": integer(1, 1024),
        "cuda_graphs": boolean,
        "checkpoint_every_s": number(at_least=0),  # seconds between checkpoints; 0: only when stopped
        "max_restarts": integer(0, 100),
    },
    "evaluate": {"points": rows(2, sums=True)},
}


def _fail(message, path=PARAMS_FILE):
    raise UserError(f"{path}: {message}")


def _check(tree, schema, prefix, path):
    if not isinstance(tree, dict):
        where = prefix.rstrip(".") or "the file"
        _fail(f"{where} must be a mapping of {', '.join(schema)}, got {_show(tree)}", path)
    for key in tree:
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1) or [
                known for known in schema if str(key).startswith(known) or known.startswith(str(key))
            ]
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; expected one of {', '.join(schema)}"
            _fail(f"unknown key {prefix}{key}{hint}", path)
    checked = {}
    for key, rule in schema.items():
        name = f"{prefix}{key}"
        if key not in tree:
            what = f"a mapping of {', '.join(rule)}" if isinstance(rule, dict) else "set"
            _fail(f"{name} is missing (expected {what})", path)
        if isinstance(rule, dict):
            checked[key] = _check(tree[key], rule, f"{name}.", path)
            continue
        try:
            checked[key] = rule(tree[key])
        except _Problem as problem:
            _fail(f"{name} must be {problem.expected}, got {_show(tree[key])}", path)
    return SimpleNamespace(**checked)


def load_params(path=PARAMS_FILE):
    """Read and check params.yaml; raise UserError naming the first bad key, its value and what fits."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        tree = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except FileNotFoundError:
        _fail("not found; run from the repository root", path)
    except OSError as error:  # a directory, or a file this user may not read
        _fail(f"cannot be read: {(error.strerror or type(error).__name__).lower()}", path)
    except UnicodeDecodeError as error:
        _fail(f"not UTF-8 text: {error.reason} at byte {error.start}", path)
    except ValueError:  # PyYAML's int() refuses a number of more than 4,300 digits (Python's limit)
        if not (long := re.search(r"[0-9]{4301,}", text)):
            raise
        line = text.count("\n", 0, long.start()) + 1
        _fail(f"line {line} holds a number of {len(long[0])} digits; no key takes one that large", path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        _fail(f"not valid YAML{where}: {problem}", path)
    params = _check(tree, SCHEMA, "", path)

    if len(params.data.x) != len(params.data.y):
        _fail(f"data.x has {len(params.data.x)} rows but data.y has {len(params.data.y)}; expected one y per x", path)
    synthetic = params.data.synthetic
    if synthetic.n and synthetic.high <= synthetic.low:
        _fail(
            f"data.synthetic.high must be > data.synthetic.low ({_show(synthetic.low)}), got {_show(synthetic.high)}",
            path,
        )
    # A target sums two draws from [low, high], so twice the larger bound must fit float32 (this also bounds
    # high - low, which prepare scales the draws by in float32).
    if synthetic.n and 2 * max(abs(synthetic.low), abs(synthetic.high)) > FLOAT32_MAX:
        _fail(
            f"data.synthetic.low and .high must lie within ±1.7014117e+38, half {FLOAT32_RANGE} "
            f"(a target sums two draws), got [{_show(synthetic.low)}, {_show(synthetic.high)})",
            path,
        )
    return params


if __name__ == "__main__":
    # `python -m stages.params` checks the whole file, keys no stage reads included (make repro runs it first).
    from stages.common import run_stage

    run_stage(load_params)
