"""params.yaml, read in one place: every key checked, typed, and the first problem named in one line.

params = load_params()
params.train.lr        # a float, also where the file says 1 or 1e-06

The file is read as DVC reads it (YAML 1.2, ruamel.yaml), so every value a stage uses is the value dvc.lock records:
`yes` is the string 'yes', `010` is 10, `1:30` is the string '1:30'.
"""

import datetime
import difflib
import json
import math
import re
import struct
import sys
import unicodedata
import warnings
from types import SimpleNamespace

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.constructor import DuplicateKeyError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from stages.common import UserError

PARAMS_FILE = "params.yaml"
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_RANGE = "float32's range ±3.4028235e+38"
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Constructor(SafeConstructor):
    """ruamel's safe constructor, remembering the node it is building: the plain Python errors it raises
    (int('abc') for `!!int abc`, a date with month 13) carry no line of their own."""

    node = None

    def construct_object(self, node, deep=False):
        self.node = node
        return super().construct_object(node, deep=deep)


def _parser():
    """The parser and settings DVC reads params files with (dvc/utils/serialize/_yaml.py: YAML(typ="safe"))."""
    yaml = YAML(typ="safe")
    yaml.Constructor = _Constructor
    return yaml


def _show(value):
    """A value as the user wrote it in YAML: null, true, 'text', [1, 2]."""
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    if isinstance(value, str):
        return repr(value)
    if _is_number(value) and isinstance(value, int) and abs(value) >= 10**21:  # 10**400 in full fills a line
        return f"an integer of {_digits(value)} digits"
    if isinstance(value, datetime.date):
        return f"{value.isoformat()} (a date)"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):  # not JSON (a date, bytes), or holds itself through an alias
        try:
            return repr(value)
        except ValueError:  # an integer of more than 4,300 digits inside: Python refuses to print it
            return f"a {type(value).__name__} too long to show"


def _digits(integer):
    """len(str(abs(integer))), also past the 4,300 digits str() refuses (`0x` followed by 4,000 f's is valid YAML)."""
    integer = abs(integer)
    digits = int(math.log10(integer)) + 1 if integer else 1
    if integer >= 10**digits:  # log10 rounds near a power of ten
        return digits + 1
    if digits > 1 and integer < 10 ** (digits - 1):
        return digits - 1
    return digits


def _non_ascii(text):
    """What a key or word that looks right holds instead: "its 'а' is U+0430 CYRILLIC SMALL LETTER A"."""
    found = dict.fromkeys(char for char in text if not char.isascii())
    return "its " + ", ".join(f"{char!r} is U+{ord(char):04X} {unicodedata.name(char, '(unnamed)')}" for char in found)


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
            if isinstance(key, str) and not key.isascii():  # `trаin` with a Cyrillic а reads as train
                hint = f"did you mean {prefix}{close[0]}?" if close else f"expected one of {', '.join(schema)}"
                _fail(f"unknown key {prefix + key!r}: {_non_ascii(key)}; {hint}", path)
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
            value = tree[key]
            lookalike = f" ({_non_ascii(value)})" if isinstance(value, str) and not value.isascii() else ""
            _fail(f"{name} must be {problem.expected}, got {_show(value)}{lookalike}", path)
    return SimpleNamespace(**checked)


def _position(text, index):
    """Where a character index into the file falls: "line 3, column 5"."""
    line = text.count("\n", 0, index) + 1
    column = index - text.rfind("\n", 0, index)
    return f"line {line}, column {column}"


def _duplicate(text, error):
    """The line for ruamel's DuplicateKeyError, "key train appears twice (lines 11 and 24)". The error marks the
    mapping and the second key only: the first is found again in the composed (not yet constructed) document."""
    seen = set()
    pending = [(_parser().compose(text), "")]  # (node, the dotted name its keys start with)
    while pending:
        node, prefix = pending.pop()
        if id(node) in seen:  # an alias points back
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            pending += [(item, f"{prefix.rstrip('.')}[{i}].") for i, item in enumerate(node.value)]
        if not isinstance(node, MappingNode):
            continue
        pending += [(value, f"{prefix}{_key(key)}.") for key, value in node.value]
        if node.start_mark.index != error.context_mark.index:
            continue
        keys = [key for key, _ in node.value]
        second = next((key for key in keys if key.start_mark.index == error.problem_mark.index), None)
        first = next((key for key in keys if second is not None and _key(key) == _key(second)), None)
        if first is not None and first is not second:
            return (
                f"key {prefix}{_key(first)} appears twice (lines {first.start_mark.line + 1} and "
                f"{second.start_mark.line + 1}); keep one"
            )
    return f"a key appears twice (line {error.problem_mark.line + 1}); keep one"


def _key(node):
    """A mapping key as the constructor compares keys (`010` and `10` are one key)."""
    if node.tag == MERGE_TAG:
        return "<<"
    try:
        return _parser().constructor.construct_object(node, deep=True)
    except Exception:  # a key that does not construct is not the duplicate
        return node


def read_yaml(path=PARAMS_FILE):
    """params.yaml's tree as DVC reads it, unchecked; UserError for a file that cannot be read or is not YAML."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        _fail("not found; run from the repository root", path)
    except OSError as error:  # a directory, or a file this user may not read
        _fail(f"cannot be read: {(error.strerror or type(error).__name__).lower()}", path)
    except UnicodeDecodeError as error:
        _fail(f"not UTF-8 text: {error.reason} at byte {error.start}", path)
    yaml = _parser()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reused anchor is valid YAML; ruamel would warn on stderr
            return yaml.load(text) or {}  # as DVC: an empty file (or one holding only `false`) has no keys
    except DuplicateKeyError as error:
        _fail(_duplicate(text, error), path)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = error.problem or error.context or type(error).__name__
        if problem.startswith("but ") and error.context:  # "expected a single document in the stream, but found..."
            problem = f"{error.context}, {problem}"
        if "'\\t'" in problem:  # ruamel writes the tab as \t
            problem = problem.replace("character '\\t'", "a tab") + "; use spaces"
        _fail(f"not valid YAML{where}: {problem.splitlines()[0]}", path)
    except ReaderError as error:
        code = error.character if isinstance(error.character, int) else ord(error.character)
        _fail(f"not valid YAML at {_position(text, error.position)}: character U+{code:04X} is not allowed", path)
    except YAMLError as error:
        _fail(f"not valid YAML: {str(error).splitlines()[0]}", path)
    except RecursionError:
        _fail("not valid YAML: nested too deeply", path)
    except Exception as error:
        # ruamel's constructors raise plain Python errors for some input (int('abc') for `!!int abc`, a list as a key,
        # a number of more than 4,300 digits); only the parse is in this block, so the error is the file's.
        if isinstance(error, ValueError) and (long := re.search(r"[0-9]{4301,}", text)):
            line = text.count("\n", 0, long.start()) + 1
            _fail(f"line {line} holds a number of {len(long[0])} digits; no key takes one that large", path)
        node = yaml.constructor.node
        where = f" at line {node.start_mark.line + 1}, column {node.start_mark.column + 1}" if node else ""
        _fail(f"not valid YAML{where}: {str(error) or type(error).__name__}", path)


def load_params(path=PARAMS_FILE):
    """Read and check params.yaml; raise UserError naming the first bad key, its value and what fits."""
    tree = read_yaml(path)
    if tree == {}:
        _fail(f"holds no keys; expected a mapping of {', '.join(SCHEMA)}", path)
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
    # `python -m stages.params` checks params.yaml without running a stage (each stage checks it when it starts).
    from stages.common import run_stage

    run_stage(load_params)
