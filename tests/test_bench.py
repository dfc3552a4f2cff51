"""The benchmark is a script, not a timed test: here it only has to run, on a tiny size."""

import pytest

from tests.conftest import ROOT, run

pytestmark = pytest.mark.slow  # each benchmark trains for real in fresh processes


def test_bench_runs_and_writes_its_table(tmp_path):
    out = tmp_path / "bench.md"
    result = run(["python", "-m", "tools.bench", "--tiny", "--out", str(out)], ROOT)
    table = out.read_text()
    assert table.count("| tutorial |") == 3 and table.count("| addnet |") == 3
    assert table.count("| eager floor |") == 3
    assert "speed-up" in result.stdout


def test_cold_repro_bench_runs_both_commands_in_a_copy_and_leaves_this_checkout_alone(tmp_path):
    out = tmp_path / "bench_repro.md"
    before = run(["git", "status", "--porcelain"], ROOT).stdout
    run(["python", "-m", "tools.bench_repro", "--runs", "1", "--out", str(out)], ROOT)
    table = out.read_text()
    assert "| tutorial as one script |" in table and "| dvc repro -f (5 stages) |" in table
    assert "ratio (best): " in table
    assert run(["git", "status", "--porcelain"], ROOT).stdout == before
