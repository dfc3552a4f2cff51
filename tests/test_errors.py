"""Every mistake a user can make gets one line on stderr naming the key or file, a non-zero exit, no traceback:
the mistakes of training (CUDA asked for, a stop signal) and of missing or unreadable files, as users meet them.
The params cases are in tests/test_params.py, bad model, data and checkpoint files in tests/test_loaders.py.
"""

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import (
    DEFAULT_TEXT,
    assert_one_clear_line,
    edited,
    prepared,
    restore,
    run,
    stage,
    start_stage,
    without_root_read_override,
)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_cuda_is_an_error_not_a_fallback(tmp_path):
    prepared(tmp_path, **{"train.device": "cuda"})
    assert_one_clear_line(
        stage("train", tmp_path, check=False), ["train.device is 'cuda'", "torch.cuda.is_available() is False"]
    )


def test_batch_larger_than_the_data_trains_one_full_batch_per_epoch(tmp_path):
    prepared(tmp_path, **{"train.batch_size": 100})
    stage("train", tmp_path)
    assert len((tmp_path / "artifacts/loss.tsv").read_text().splitlines()) == 1 + 50


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_training_exits_non_zero_and_leaves_no_partial_output(tmp_path, signum):
    long_run = {
        "data.synthetic": {"n": 20_000, "low": 0, "high": 10},
        "train.batch_size": 1000,
        "train.epochs": 100_000,
    }
    prepared(tmp_path, **long_run)
    process = start_stage("train", tmp_path)
    first_progress = process.stderr.readline()  # training prints progress every 5 s: it is mid-loop now
    assert first_progress.startswith("train: epoch"), first_progress
    process.send_signal(signum)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert_one_clear_line(
        subprocess.CompletedProcess([], process.returncode, "", rest), [signum.name], code=128 + signum
    )
    assert not (tmp_path / "artifacts").exists() or not list((tmp_path / "artifacts").iterdir())


def test_an_unreadable_model_file_says_permission_denied(trained_dir):
    # The tests run as root, which reads a mode-000 file. Running the stage as another user (uid 65534) is not
    # possible here: the venv's python links to /root/.pyenv, which only root may enter. So the same python runs
    # as root without the capabilities that bypass mode bits: the kernel then refuses the read (EACCES), as it
    # would for a user who does not own the file.
    model = trained_dir / "artifacts/mymodel.pth"
    model.chmod(0)
    preexec = without_root_read_override if os.geteuid() == 0 else None
    probe = [sys.executable, "-c", f"open({str(model)!r}, 'rb')"]
    try:
        if subprocess.run(probe, preexec_fn=preexec, capture_output=True).returncode == 0:
            pytest.skip("this process reads a mode-000 file anyway (a capability it cannot drop)")
    except subprocess.SubprocessError as error:
        pytest.skip(f"cannot drop root's CAP_DAC_OVERRIDE here: {error}")
    result = stage("evaluate", trained_dir, check=False, preexec_fn=preexec)
    assert_one_clear_line(result, ["artifacts/mymodel.pth: permission denied; check its owner and mode"])


@pytest.mark.parametrize("name", ["evaluate", "activations"])
def test_a_model_of_another_width_than_params_is_refused(call_stage, trained_dir, name):
    (trained_dir / "params.yaml").write_text(edited(**{"model.hidden": 16}))
    result = call_stage(name, trained_dir)
    assert_one_clear_line(result, ["artifacts/mymodel.pth:", "8 hidden units", "model.hidden is 16"])


def test_missing_data_says_how_to_get_it(call_stage, trained_dir):
    (trained_dir / "data/val.npy").unlink()
    assert_one_clear_line(call_stage("evaluate", trained_dir), ["data/val.npy: not found", "dvc repro prepare"])


def test_missing_model_says_how_to_get_it(trained_dir):
    (trained_dir / "artifacts/mymodel.pth").unlink()
    assert_one_clear_line(
        stage("evaluate", trained_dir, check=False), ["artifacts/mymodel.pth: not found", "dvc repro"]
    )


def test_debug_variable_lets_the_traceback_through(tmp_path):
    (tmp_path / "params.yaml").write_text(edited(**{"train.lr": 0}))
    result = stage("prepare", tmp_path, check=False, ADDNET_DEBUG="1")
    assert result.returncode != 0 and "Traceback" in result.stderr and "UserError" in result.stderr


@pytest.mark.slow
def test_diverged_training_through_dvc_repro_then_checkout_restores_the_model(trained):
    good = (trained / "artifacts/mymodel.pth").read_bytes()
    (trained / "params.yaml").write_text(edited(**{"train.lr": 10}))
    try:
        result = run(["dvc", "repro"], trained, check=False)
        assert result.returncode != 0 and "loss became" in result.stdout + result.stderr
        assert not (trained / "artifacts/mymodel.pth").exists()  # DVC removed it before running; none was written
    finally:
        (trained / "params.yaml").write_text(DEFAULT_TEXT)
    restore(trained)
    assert (trained / "artifacts/mymodel.pth").read_bytes() == good
    assert run(["dvc", "status"], trained).stdout.strip().endswith("up to date.")
