from stages import plot


def test_loss_png_is_drawn_from_the_loss_log(workdir):
    (workdir / "artifacts").mkdir()
    (workdir / "artifacts/loss.tsv").write_text("step\tepoch\tloss\n1\t1\t4.0\n2\t1\t3.0\n3\t2\t1.0\n4\t2\t0.5\n")
    plot.main()
    png = (workdir / "artifacts/loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert plot.read_losses() == ([1, 1, 2, 2], [4.0, 3.0, 1.0, 0.5])
