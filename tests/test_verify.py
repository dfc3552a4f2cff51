"""`make verify` (tools/verify.py): its comparison on real pipeline outputs, and real runs of the command.

The comparison tests take the `trained` clone's outputs as the candidate run and edit the committed side
(the references and dvc.lock's md5s), as if HEAD held a run from another platform.
"""

import hashlib
import json
import math
import os
import re
import sys

import pytest

from tests.conftest import ROOT, clone_repo, run, set_params
from tools.verify import EXACT_COLUMNS, REFERENCES, TOLERANCES, compare, numbers, read_lock


@pytest.fixture(scope="module")
def committed(trained):
    """(references, lock) exactly as the `trained` run wrote them."""
    references = {path: (trained / path).read_text() for path in REFERENCES}
    return references, read_lock((trained / "dvc.lock").read_text())


def edited(committed, path, new_value):
    """The committed run with every number of `path` replaced by new_value(label, value), md5 updated to match."""
    references, lock = committed
    text = references[path]
    if path.endswith(".json"):
        metrics = json.loads(text)
        text = (
            json.dumps({key: float(f"{new_value(key, value):.9g}") for key, value in metrics.items()}, indent=2) + "\n"
        )
    else:
        sep = "\t" if path.endswith(".tsv") else ","
        header, *rows = (line.split(sep) for line in text.splitlines())
        lines = [header]
        for n, row in enumerate(rows, start=1):
            lines.append(
                [
                    cell if name in EXACT_COLUMNS[path] else f"{new_value(f'{name} row {n}', float(cell)):.9g}"
                    for name, cell in zip(header, row, strict=True)
                ]
            )
        text = "".join(sep.join(line) + "\n" for line in lines)
    assert text != references[path]
    return {**references, path: text}, {**lock, path: hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()}


def seventh_digit(label, value):
    """Three units more in the 7th significant digit: 16.647524 -> 16.647554, 0.106205 -> 0.1062053."""
    return value + 3 * 10 ** (math.floor(math.log10(abs(value))) - 6) if value else value


def test_the_run_itself_is_identical_in_every_output(trained, committed):
    references, lock = committed
    rows = compare(references, trained, lock)
    assert [row.output for row in rows] == list(lock)
    assert all(row.result == "identical" and row.ok for row in rows)


@pytest.mark.parametrize("path", list(TOLERANCES))
def test_a_reference_that_differs_in_the_7th_significant_digit_passes(trained, committed, path):
    references, lock = edited(committed, path, seventh_digit)
    rows = {row.output: row for row in compare(references, trained, lock)}
    assert rows[path].result.startswith("max abs") and rows[path].ok, rows[path]
    assert all(row.result == "identical" for name, row in rows.items() if name != path)


@pytest.mark.parametrize("path", list(TOLERANCES))
def test_any_single_number_1_percent_off_fails_and_names_its_output(trained, committed, path):
    references, _ = committed
    values = numbers(path, references[path])[1]
    for target in [label for label, value in values.items() if value != 0]:  # a committed 0 stays 0 when scaled
        changed = edited(committed, path, lambda label, value, target=target: value * (1.01 if label == target else 1))
        failed = [row for row in compare(changed[0], trained, changed[1]) if not row.ok]
        assert [row.output for row in failed] == [path], target
        assert f"(worst: {target})" in failed[0].result


@pytest.mark.parametrize(
    ("path", "reference", "result", "ok"),
    [
        ("artifacts/mymodel.pth", None, "differs (judged by predictions/activations)", True),
        ("artifacts/loss.png", None, "differs (drawn from loss.tsv)", True),
        ("data/train.npy", None, "differs", False),
        ("artifacts/model_summary.txt", None, "same text", True),
        ("artifacts/model_summary.txt", "Total params: 34\n", "text differs", False),
        ("artifacts/loss.tsv", "step\tepoch\tloss\n1\t2\t39.542973\n", "rows or columns step,epoch", False),
        ("artifacts/predictions.csv", "x1,x2,target,prediction\n8,9,17,oops\n", "not readable", False),
    ],
)
def test_the_rule_of_each_kind_of_output(trained, committed, path, reference, result, ok):
    """The committed md5 of `path` made different from the run's, and its committed text `reference` if given."""
    references, lock = committed
    if reference is not None:
        references = {**references, path: reference}
    row = next(row for row in compare(references, trained, {**lock, path: "0" * 32}) if row.output == path)
    assert row.result.startswith(result) and row.ok == ok, row


@pytest.mark.slow
def test_make_verify_reruns_head_in_a_clone_and_prints_the_table(tmp_path, trained):
    """The real command, in a clone whose HEAD holds the `trained` run (a CPU run where conftest hides CUDA)."""
    repo = clone_repo(tmp_path / "repo")
    for path in ("dvc.lock", *REFERENCES):  # HEAD's run: the working tree's code run here, even mid-edit
        (repo / path).write_bytes((trained / path).read_bytes())
    run(["git", "commit", "-qam", "run", "--allow-empty"], repo)
    # The user's environment as it is: on a GPU machine the run trains on CUDA and is judged against the CPU run.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    command = [sys.executable, "-m", "tools.verify"]
    if visible is None:
        command = ["env", "-u", "CUDA_VISIBLE_DEVICES", *command]
    result = run(command, repo, check=False, **({} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("platform: ") and "torch " in lines[0] and "ATen " in lines[0], lines[0]
    assert lines[1].split() == ["output", "result", "tolerance", "verdict"]
    table = {line.split()[0]: line for line in lines[2:-1]}
    assert list(table) == list(read_lock((repo / "dvc.lock").read_text()))
    assert all(line.endswith("  ok") for line in table.values())
    assert lines[-1].startswith("verify: OK: ")
    clone = re.search(r" at (\S+) \.\.\.$", result.stderr, re.MULTILINE).group(1)
    assert not os.path.exists(clone)  # the temp clone is gone


def test_outside_a_git_repo_it_says_so_in_one_line(tmp_path):
    result = run([sys.executable, "-m", "tools.verify"], tmp_path, check=False, PYTHONPATH=str(ROOT))
    assert result.returncode == 2
    assert result.stderr.startswith("verify: error: git rev-parse: fatal: not a git repository")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


@pytest.mark.slow
def test_a_failing_dvc_repro_is_one_line_naming_the_stage_error(tmp_path):
    repo = clone_repo(tmp_path / "repo")
    set_params(repo, **{"train.batch_size": 0})
    run(["git", "commit", "-qam", "bad"], repo)
    result = run([sys.executable, "-m", "tools.verify"], repo, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "`dvc repro -f` failed" in error[0] and "train.batch_size" in error[0], result.stderr
