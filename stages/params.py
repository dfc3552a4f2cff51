"""params.yaml, read in one place: every key checked, typed, and the first problem named in one line.

params = load_params()
params.train.lr        # a float, even when `dvc exp run -S` wrote it as 1e-06
"""

import difflib
import json
import math
import re
from types import SimpleNamespace

import yaml

from stages.common import UserError

PARAMS_FILE = "params.yaml"
FLOAT32_MAX = 3.4028234663852886e38


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
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Problem(Exception):
    def __init__(self, expected):
        self.expected = expected


def integer(minimum, maximum=None):
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def check(value):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise _Problem(expected)
        if maximum is not None and value > maximum:
            raise _Problem(expected)
        return value

    return check


def number(above=None):
    expected = "a finite number" if above is None else f"a number > {above}"

    def check(value):
        if not _is_number(value) or not math.isfinite(value) or (above is not None and value <= above):
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


def rows(width):
    """A non-empty list of rows, each a list of `width` finite numbers: [[1, 2], [3, 4]]."""
    shape = f"[{', '.join(['number'] * width)}]"
    expected = f"a non-empty list of rows like {shape}"

    def check(value):
        if not isinstance(value, list) or not value:
            raise _Problem(expected)
        for i, row in enumerate(value):
            if not isinstance(row, list) or len(row) != width:
                raise _Problem(f"{expected}; row {i} is {_show(row)}, not {width} value(s)")
            for entry in row:
                if not _is_number(entry) or not math.isfinite(entry):
                    raise _Problem(f"{expected}; row {i} holds {_show(entry)}, not a finite number")
        return [[float(entry) for entry in row] for row in value]

    return check


SCHEMA = {
    "seed": integer(0, 2**63 - 1),
    "data": {
        "x": rows(2),
        "y": rows(1),
        "synthetic": {"n": integer(0), "low": number(), "high": number()},
    },
    "model": {"hidden": integer(1)},
    "train": {
        "device": choice("auto", "cpu", "cuda"),
        "epochs": integer(1),
        "batch_size": integer(1),
        "shuffle": boolean,
        "lr": number(above=0),
        "threads": integer(1),
        "nproc": integer(1),
        "cuda_graphs": boolean,
    },
    "evaluate": {"points": rows(2)},
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
            tree = yaml.load(file, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except FileNotFoundError:
        _fail("not found; run from the repository root", path)
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
    if synthetic.n and max(abs(synthetic.low), abs(synthetic.high), synthetic.high - synthetic.low) > FLOAT32_MAX:
        _fail(
            f"data.synthetic.low and .high must lie within float32's range (the data's type), "
            f"got [{_show(synthetic.low)}, {_show(synthetic.high)})",
            path,
        )
    return params


if __name__ == "__main__":
    # `python -m stages.params` checks the whole file, keys no stage reads included (make repro runs it first).
    from stages.common import run_stage

    run_stage(load_params)
