"""stages/common.py: a stop signal that lands while outputs are being written leaves no half-written file, and the
stop line says exactly which outputs were written. Real signals, sent by the process to itself mid-write."""

import os
import signal

import pytest

from stages import common


def stage_that_writes(outputs, stop_in):
    """A stage main() writing `outputs` in order, sending itself SIGTERM halfway through writing `stop_in`."""

    def main():
        for name in outputs:
            with common.atomic_output(name, "w") as file:
                file.write("first half\n")
                file.flush()
                if name == stop_in:
                    os.kill(os.getpid(), signal.SIGTERM)
                file.write("second half\n")

    main.__module__ = common.__name__  # run_stage names the stage after main's module
    return main


@pytest.fixture
def stage_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, "_written", [])
    handlers = {signum: signal.getsignal(signum) for signum in common.STOP_SIGNALS}

    def run(main):
        try:
            with pytest.raises(SystemExit) as stop:
                common.run_stage(main)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return stop.value.code, capsys.readouterr().err

    return run


def test_a_signal_during_the_first_write_leaves_nothing_and_says_so(stage_run, tmp_path):
    code, err = stage_run(stage_that_writes(["a.txt", "b.txt"], stop_in="a.txt"))
    assert code == 143
    assert err == "common: stopped by SIGTERM; no output was written in its place\n"
    assert sorted(os.listdir(tmp_path)) == []  # no output, no temp file


def test_a_signal_after_one_output_names_the_one_written(stage_run, tmp_path):
    code, err = stage_run(stage_that_writes(["a.txt", "b.txt", "c.txt"], stop_in="b.txt"))
    assert code == 143
    assert err == "common: stopped by SIGTERM after writing a.txt; run it again for the rest\n"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "first half\nsecond half\n"


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    (tmp_path / "out.txt").write_text("old\n")
    with pytest.raises(ValueError), common.atomic_output(tmp_path / "out.txt", "w") as file:
        file.write("new, half")
        raise ValueError
    assert (tmp_path / "out.txt").read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_a_signal_in_the_rename_itself_waits_until_the_output_is_recorded(stage_run, tmp_path, monkeypatch):
    import torch  # noqa: F401 (its threads are why a signal mask would not work here)

    rename = os.replace

    def signalled_rename(source, target):
        os.kill(os.getpid(), signal.SIGTERM)  # lands between the temp file and the output
        rename(source, target)

    monkeypatch.setattr(os, "replace", signalled_rename)
    code, err = stage_run(stage_that_writes(["a.txt", "b.txt"], stop_in=None))
    assert code == 143
    assert err == "common: stopped by SIGTERM after writing a.txt; run it again for the rest\n"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]
