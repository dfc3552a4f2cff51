import pytest

from stages import plot
from stages.common import UserError

PNG = b"\x89PNG\r\n\x1a\n"


def write_logs(workdir):
    (workdir / "artifacts").mkdir()
    (workdir / "artifacts/loss.tsv").write_text("step\tepoch\tloss\n1\t1\t4.0\n2\t1\t3.0\n3\t2\t1.0\n4\t2\t0.5\n")
    (workdir / "artifacts/activations.csv").write_text("x1,x2,h0,h1\n1,2,0.5,0.000000\n3,4,1.25,0.1\n")


def test_loss_and_activation_pngs_are_drawn_from_the_logs_the_same_bytes_each_time(workdir):
    write_logs(workdir)
    plot.main()
    pngs = [(workdir / name).read_bytes() for name in (plot.LOSS_PNG, plot.ACTIVATIONS_PNG)]
    assert all(png[:8] == PNG and len(png) > 5_000 for png in pngs)
    assert plot.read_losses() == ([1, 1, 2, 2], [4.0, 3.0, 1.0, 0.5])
    assert plot.read_activations() == (["(1, 2)", "(3, 4)"], ["h0", "h1"], [[0.5, 0.0], [1.25, 0.1]])
    plot.main()
    assert [(workdir / name).read_bytes() for name in (plot.LOSS_PNG, plot.ACTIVATIONS_PNG)] == pngs


def test_a_log_without_the_expected_columns_is_named(workdir):
    write_logs(workdir)
    (workdir / "artifacts/activations.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="artifacts/activations.csv: expected comma-separated columns x1, x2, h0"):
        plot.main()
