"""params.yaml: read exactly as DVC reads it, every mistake in it one line naming the key, the value and what fits.

The table of mistakes runs through each stage's own entry point in this process; a few cases run as the real
`python -m stages.<name>` and through `dvc repro`. The agreement corpus asks DVC itself what it reads.
"""

import functools
import math
import pickle
import re
import sys

import numpy as np
import pytest

from stages import prepare
from stages.common import UserError
from stages.params import FLOAT32_MAX, load_params, read_yaml
from tests.conftest import DEFAULT_TEXT, DELETE, assert_one_clear_line, edited, restore, run, set_params, stage


def line_set(key, value, text=DEFAULT_TEXT):
    """The params text with the line of `key` (a leaf name, once in params.yaml) holding `value` as written."""
    return re.sub(rf"^(\s*){key}:.*$", lambda found: f"{found[1]}{key}: {value}", text, count=1, flags=re.M)


def line_of(start):
    """The number of the default params.yaml's first line that starts with `start` ('' for its last line)."""
    lines = DEFAULT_TEXT.splitlines()
    return len(lines) if not start else next(i for i, line in enumerate(lines, 1) if line.startswith(start))


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
    ("empty", "", "prepare", ["params.yaml: holds no keys; expected a mapping of seed, data, model, train, evaluate"]),
    ("comments-only", "# seed: 0\n", "prepare", ["params.yaml: holds no keys"]),
    # Read as DVC reads params.yaml (YAML 1.2): `yes` and `1:30` are strings, so they get the usual line.
    ("shuffle-yes", line_set("shuffle", "yes"), "prepare", ["train.shuffle must be true or false, got 'yes'"]),
    (
        "epochs-sexagesimal",
        line_set("epochs", "1:30"),
        "prepare",
        ["train.epochs must be an integer from 1 to 1000000, got '1:30'"],
    ),
    (
        "duplicate-section",
        DEFAULT_TEXT + "train:\n  lr: 0.1\n",
        "prepare",
        [f"key train appears twice (lines {line_of('train:')} and {line_of('') + 1}); keep one"],
    ),
    (
        "duplicate-key",
        DEFAULT_TEXT.replace("  lr: 0.001", "  lr: 0.001\n  lr: 0.01"),
        "train",
        [f"key train.lr appears twice (lines {line_of('  lr:')} and {line_of('  lr:') + 1}); keep one"],
    ),
    (
        "lookalike-key",
        DEFAULT_TEXT.replace("train:", "tr\u0430in:"),
        "prepare",
        ["unknown key 'tr\u0430in': its '\u0430' is U+0430 CYRILLIC SMALL LETTER A; did you mean train?"],
    ),
    (
        "invisible-key",
        DEFAULT_TEXT.replace("  lr:", "  lr\u200b:"),
        "prepare",
        ["unknown key 'train.lr\\u200b': its '\\u200b' is U+200B ZERO WIDTH SPACE; did you mean train.lr?"],
    ),
    (
        "lookalike-value",
        line_set("device", "\u0441pu"),
        "prepare",
        [
            "train.device must be one of auto, cpu, cuda, got '\u0441pu'",
            "(its '\u0441' is U+0441 CYRILLIC SMALL LETTER ES)",
        ],
    ),
    (
        "tab-indent",
        DEFAULT_TEXT.replace("  lr:", "\tlr:"),
        "prepare",
        [f"not valid YAML at line {line_of('  lr:')}, column 1: found a tab that cannot start any token; use spaces"],
    ),
    (
        "hex-4000-digits",
        line_set("seed", "0x" + "f" * 4000),
        "prepare",
        ["seed must be an integer from 0 to 9223372036854775807, got an integer of 4817 digits"],
    ),
    (
        "bad-int-tag",
        line_set("epochs", "!!int abc"),
        "prepare",
        [f"not valid YAML at line {line_of('  epochs:')}, column 11: invalid literal for int()"],
    ),
    ("bad-date", line_set("epochs", "2001-13-14"), "prepare", ["not valid YAML at line", "month must be in 1..12"]),
    (
        "date-for-number",
        line_set("lr", "2001-12-14"),
        "prepare",
        ["train.lr must be a finite number > 0, got 2001-12-14 (a date)"],
    ),
    (
        "python-tag",
        line_set("lr", "!!python/object/apply:os.system [echo]"),
        "prepare",
        ["not valid YAML at line", "could not determine a constructor for the tag"],
    ),
    ("list-as-key", "? [a, [b]]\n: 1\n" + DEFAULT_TEXT, "prepare", ["not valid YAML at line", "unhashable"]),
    ("nested-too-deeply", line_set("x", "[" * 600 + "]" * 600), "prepare", ["not valid YAML: nested too deeply"]),
    (
        "control-character",
        DEFAULT_TEXT.replace("device: auto", "device: au\x07to"),
        "prepare",
        [f"not valid YAML at line {line_of('  device:')}, column 13: character U+0007 is not allowed"],
    ),
    (
        "two-documents",
        DEFAULT_TEXT + "---\nseed: 1\n",
        "prepare",
        ["expected a single document in the stream, but found another document"],
    ),
]


@pytest.mark.parametrize(("text", "name", "words"), [c[1:] for c in PARAMS_CASES], ids=[c[0] for c in PARAMS_CASES])
def test_bad_params_give_one_clear_line(call_stage, tmp_path, text, name, words):
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    result = call_stage(name, tmp_path)
    assert_one_clear_line(result, ["params.yaml:", *words])
    assert not (tmp_path / "data").exists()


def test_missing_params_file(tmp_path):
    assert_one_clear_line(stage("prepare", tmp_path, check=False), ["params.yaml: not found"])


def test_params_file_that_is_not_text_or_not_a_file(call_stage, tmp_path):
    (tmp_path / "params.yaml").write_bytes(b"seed: 0 \xff\n")
    assert_one_clear_line(
        call_stage("prepare", tmp_path), ["params.yaml: not UTF-8 text: invalid start byte at byte 8"]
    )
    (tmp_path / "params.yaml").unlink()
    (tmp_path / "params.yaml").mkdir()
    assert_one_clear_line(call_stage("prepare", tmp_path), ["params.yaml: cannot be read: is a directory"])


@pytest.mark.parametrize("case", ["typo-key", "nan", "not-yaml", "duplicate-section", "lookalike-key"])
def test_the_stage_command_itself_prints_the_same_line(tmp_path, case):
    text, name, words = {c[0]: c[1:] for c in PARAMS_CASES}[case]
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    assert_one_clear_line(stage(name, tmp_path, check=False), ["params.yaml:", *words])


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


@pytest.mark.slow
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


@pytest.mark.slow
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


# The float32 checks at their edges: a pair passes exactly when prepare would store a finite target.
HALF = 2.0**127 - 2.0**103  # FLOAT32_MAX / 2, itself a float32

PAIRS = [
    (HALF, HALF),  # sums to FLOAT32_MAX exactly
    (FLOAT32_MAX, 1e31),  # under half a float32 step (2**103) above the top: rounds down to FLOAT32_MAX
    (FLOAT32_MAX, 1.1e31),  # over half a step: rounds up to inf
    (-FLOAT32_MAX, -FLOAT32_MAX),
    (FLOAT32_MAX, -FLOAT32_MAX),
]


@pytest.mark.parametrize("pair", PAIRS)
def test_a_pair_passes_exactly_when_its_float32_sum_is_finite(workdir, pair):
    set_params(workdir, **{"evaluate.points": [list(pair)]})
    with np.errstate(over="ignore"):
        finite = np.isfinite(np.float32(pair[0]) + np.float32(pair[1]))  # what prepare's np.add gives
    if not finite:
        with pytest.raises(UserError, match=r"evaluate.points .*row 0 is .*, whose sum \(its target\) is beyond"):
            load_params()
        return
    prepare.main()
    assert np.isfinite(np.load(workdir / "data/val.npy")).all()


def test_a_value_just_past_float32s_top_is_refused_even_where_the_cast_would_round_it_down(workdir):
    # numpy would store FLOAT32_MAX * (1 + 1e-9) as FLOAT32_MAX; the rule is simply |v| <= FLOAT32_MAX.
    set_params(workdir, **{"evaluate.points": [[FLOAT32_MAX * (1 + 1e-9), 0]]})
    with pytest.raises(UserError, match=r"row 0 holds 3.40282346\d*e\+38, beyond float32's range"):
        load_params()


# The agreement corpus: params.yaml files that YAML 1.1 (PyYAML) and YAML 1.2 (DVC's ruamel.yaml) read differently,
# or that test a parser's edges. Each spelling goes at a bool and a float key, and in a flow list (data.x), where
# YAML's rules for plain scalars differ.
SPELLINGS = [
    *["yes", "no", "on", "off", "y", "n", "Yes", "ON", "True", "FALSE", "true"],
    *["010", "08", "0o10", "0x10", "0b10", "1:30", "12:30:00", "1_000", "+1", "-0", "7"],
    *["1e-06", "1E3", "1e400", ".5", "1.", "0.1e+1", "~", "null", "''", ".inf", "-.inf", ".NaN"],
    *["'010'", '"1e-06"', "!!float 1", "!!int '7'", "!!str 7", "!!bool true", "!!binary aGk=", "2001-12-14"],
    *["!custom 1", "!!python/name:os.system"],
]
AT = {
    "train.shuffle": lambda value: line_set("shuffle", value),
    "train.lr": lambda value: line_set("lr", value),
    "data.x": lambda value: line_set("x", f"[[{value}, 2], [3, 4], [5, 6], [7, 8]]"),
}
WHOLE_FILES = [
    ("anchor-alias", "train.checkpoint_every_s", line_set("checkpoint_every_s", "*rate", line_set("lr", "&rate 0.01"))),
    (
        "alias-of-a-list",
        "evaluate.points",
        line_set("points", "*xs", line_set("x", "&xs [[1, 2], [3, 4], [5, 6], [7, 8]]")),
    ),
    (
        "reused-anchor",
        "train.epochs",
        line_set("epochs", "&a 7", line_set("seed", "&a 1")).replace("epochs: &a 7", "epochs: *a"),
    ),
    (
        "merge-key",
        "train.epochs",
        line_set("epochs", "7", DEFAULT_TEXT).replace("train:\n", "train:\n  <<: {epochs: 9}\n"),
    ),
    (
        "merge-only",
        "train.epochs",
        DEFAULT_TEXT.replace("  epochs: 50\n", "").replace("train:\n", "train:\n  <<: {epochs: 9}\n"),
    ),
    ("duplicate-section", "train.lr", DEFAULT_TEXT + "train:\n  lr: 0.1\n"),
    ("duplicate-key", "train.lr", DEFAULT_TEXT.replace("  lr: 0.001", "  lr: 0.001\n  lr: 0.01")),
    ("duplicate-010-10", "seed", "010: 1\n10: 2\n" + DEFAULT_TEXT),
    ("bom", "train.lr", "\ufeff" + DEFAULT_TEXT),
    ("crlf", "train.lr", DEFAULT_TEXT.replace("\n", "\r\n")),
    ("crlf-bom-yes", "train.shuffle", "\ufeff" + line_set("shuffle", "yes").replace("\n", "\r\n")),
    ("tab-indent", "train.lr", DEFAULT_TEXT.replace("  lr:", "\tlr:")),
    ("tab-before-comment", "train.lr", line_set("lr", "0.001\t# the rate")),
    ("tab-in-quotes", "train.device", line_set("device", '"au\tto"')),
    ("yaml-1.1-directive", "train.shuffle", "%YAML 1.1\n---\n" + line_set("shuffle", "yes")),
    ("document-markers", "train.lr", "---\n" + DEFAULT_TEXT + "...\n"),
    ("empty", "train.lr", ""),
    ("comments-only", "train.lr", "# nothing\n"),
    ("lookalike-key", "train.lr", DEFAULT_TEXT.replace("train:", "tr\u0430in:")),
    ("not-yaml", "train.lr", "train: [unclosed\n"),
]
CORPUS = [(f"{spelling} at {key}", key, place(spelling)) for spelling in SPELLINGS for key, place in AT.items()]
CORPUS += WHOLE_FILES

# Run by a second Python: DVC's own reading of every case file (Repo.params.show, behind `dvc params diff`), pickled
# because values like nan, dates and bytes do not survive `--json`.
READ_WITH_DVC = """
import pickle, sys
from dvc.repo import Repo
Repo.init(".")
shown = Repo(".").params.show()[""]["data"]
reads = {name: result.get("data", result.get("error")) for name, result in shown.items()}
reads = {name: read if not isinstance(read, Exception) else f"refused: {read}" for name, read in reads.items()}
with open(sys.argv[1], "wb") as file:
    pickle.dump(reads, file)
"""


@pytest.fixture(scope="module")
def dvc_reads(tmp_path_factory):
    """{case id: (its file, the tree DVC reads from it, or a string saying DVC refused it)}: one git+DVC repo whose
    only stage depends on every case file, and one Python process asking DVC for them all."""
    repo = tmp_path_factory.mktemp("corpus")
    files = {case: f"case-{i:03}.yaml" for i, (case, _, _) in enumerate(CORPUS)}
    for case, _, text in CORPUS:
        (repo / files[case]).write_text(text, encoding="utf-8", newline="")
    deps = "".join(f"      - {name}:\n" for name in files.values())
    (repo / "dvc.yaml").write_text(f"stages:\n  corpus:\n    cmd: 'true'\n    params:\n{deps}")
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-c", READ_WITH_DVC, "reads.pickle"], repo)
    reads = pickle.loads((repo / "reads.pickle").read_bytes())
    return {case: (repo / name, reads[name]) for case, name in files.items()}


def difference(ours, dvcs, where=""):
    """Where the stage's tree and DVC's first differ, or None when they hold equal values of equal types all the way
    down: 1 is not 1.0 nor True, 'yes' is not True; nan equals nan."""
    differ = f"{where or 'the file'} is {ours!r:.100} for the stage, {dvcs!r:.100} for DVC"
    if type(ours) is not type(dvcs) or isinstance(ours, dict | list) and len(ours) != len(dvcs):
        return differ
    if isinstance(ours, dict):
        if list(ours) != list(dvcs):
            return differ
        return next(
            filter(None, (difference(ours[key], dvcs[key], f"{where}.{key}".lstrip(".")) for key in ours)), None
        )
    if isinstance(ours, list):
        pairs = enumerate(zip(ours, dvcs, strict=True))
        return next(filter(None, (difference(*pair, f"{where}[{i}]") for i, pair in pairs)), None)
    if ours != dvcs and not (isinstance(ours, float) and math.isnan(ours) and math.isnan(dvcs)):
        return differ
    return None


def trains_on(stage_value, dvc_value):
    """Whether the stage's checked value is DVC's (the schema turns numbers into floats where it wants floats)."""
    if isinstance(stage_value, list):
        return (
            isinstance(dvc_value, list)
            and len(stage_value) == len(dvc_value)
            and all(map(trains_on, stage_value, dvc_value))
        )
    if isinstance(stage_value, float):
        return type(dvc_value) in (int, float) and float(dvc_value) == stage_value
    return type(stage_value) is type(dvc_value) and stage_value == dvc_value


def test_the_corpus_has_cases_dvc_reads_and_cases_it_refuses(dvc_reads):
    refused = {case for case, (_, read) in dvc_reads.items() if isinstance(read, str) and read.startswith("refused")}
    assert {"duplicate-section", "duplicate-key", "tab-indent", "not-yaml", "!custom 1 at train.lr"} <= refused
    assert dvc_reads["yes at train.shuffle"][1]["train"]["shuffle"] == "yes"
    assert dvc_reads["010 at data.x"][1]["data"]["x"][0][0] == 10


def test_the_stages_read_every_value_as_dvc_does(dvc_reads):
    """The whole tree, before any check: the same values of the same types, or both refuse the file."""
    differ = []
    for case, (path, read) in dvc_reads.items():
        try:
            tree = read_yaml(path)
        except UserError as error:
            if not (isinstance(read, str) and read.startswith("refused")):
                differ.append(f"{case}: the stage refused ({error}), DVC read it")
            continue
        if found := difference(tree, read):
            differ.append(f"{case}: {found}")
    assert not differ, "\n".join(differ)


def test_the_stages_train_on_the_values_dvc_records_or_refuse_them(dvc_reads):
    """Through load_params: a value the stage accepts is the value DVC records in dvc.lock; refusing is the
    stage's right (`shuffle: yes` is the string 'yes', not a bool), accepting what DVC refuses is not."""
    differ = []
    for case, key, _ in CORPUS:
        path, read = dvc_reads[case]
        try:
            params = load_params(path)
        except UserError:
            continue
        if isinstance(read, str):
            differ.append(f"{case}: the stage trains, DVC {read}")
            continue
        value = functools.reduce(getattr, key.split("."), params)
        recorded = functools.reduce(lambda tree, name: tree[name], key.split("."), read)
        if not trains_on(value, recorded):
            differ.append(f"{case}: the stage trains on {key} = {value!r}, dvc.lock records {recorded!r}")
    assert not differ, "\n".join(differ)
