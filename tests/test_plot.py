import io
import struct

import matplotlib
import pytest
from matplotlib.figure import Figure

from stages import plot
from stages.common import UserError

PNG = b"\x89PNG\r\n\x1a\n"


def stamps(png):
    """What in a PNG names the software that drew it: text chunks, and matplotlib's name or version anywhere."""
    found, at = [], len(PNG)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind = png[at + 4 : at + 8]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found.append(png[at + 8 : at + 8 + min(length, 60)])
        at += 12 + length  # length, type, data, CRC
    found += [word for word in (b"matplotlib", matplotlib.__version__.encode()) if word in png.lower()]
    return found


def test_the_stamp_check_sees_matplotlibs_default_stamp():
    # Without metadata={"Software": None}, savefig writes tEXt "Software\0Matplotlib version3.x.y, https://...".
    stamped = io.BytesIO()
    Figure().savefig(stamped, format="png")
    assert len(stamps(stamped.getvalue())) == 3, stamps(stamped.getvalue())


def write_logs(workdir):
    (workdir / "artifacts").mkdir()
    (workdir / "artifacts/loss.tsv").write_text("step\tepoch\tloss\n1\t1\t4.0\n2\t1\t3.0\n3\t2\t1.0\n4\t2\t0.5\n")
    (workdir / "artifacts/activations.csv").write_text("x1,x2,h0,h1\n1,2,0.5,0.000000\n3,4,1.25,0.1\n")


def test_loss_and_activation_pngs_are_drawn_from_the_logs_the_same_bytes_each_time(workdir):
    write_logs(workdir)
    plot.main()
    pngs = [(workdir / name).read_bytes() for name in (plot.LOSS_PNG, plot.ACTIVATIONS_PNG)]
    assert all(png[:8] == PNG and len(png) > 5_000 for png in pngs)
    assert [stamps(png) for png in pngs] == [[], []]  # no software or version stamp (docs/reproducibility.md)
    assert plot.read_losses() == ([1, 1, 2, 2], [4.0, 3.0, 1.0, 0.5])
    assert plot.read_activations() == (["(1, 2)", "(3, 4)"], ["h0", "h1"], [[0.5, 0.0], [1.25, 0.1]])
    plot.main()
    assert [(workdir / name).read_bytes() for name in (plot.LOSS_PNG, plot.ACTIVATIONS_PNG)] == pngs


def test_a_log_without_the_expected_columns_is_named(workdir):
    write_logs(workdir)
    (workdir / "artifacts/activations.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="artifacts/activations.csv: expected comma-separated columns x1, x2, h0"):
        plot.main()
