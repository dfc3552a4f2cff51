"""The benchmark is a script, not a timed test: here it only has to run, on a tiny size."""

from tests.conftest import ROOT, run


def test_bench_runs_and_writes_its_table(tmp_path):
    out = tmp_path / "bench.md"
    result = run(["python", "-m", "tools.bench", "--tiny", "--out", str(out)], ROOT)
    table = out.read_text()
    assert table.count("| tutorial |") == 3 and table.count("| addnet |") == 3
    assert "speed-up" in result.stdout
