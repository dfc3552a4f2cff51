"""The CPU code paths that decide the bytes (stages/cpu.py).

On the host's CPU no caller setting changes them. MKL takes its own code paths on Intel CPUs only, so the
Intel case runs under QEMU's user-mode emulator: qemu-x86_64-static runs the venv's python with an Intel model's
instruction set and CPUID, and MKL and ATen choose their kernels from that CPUID as on the real CPU.
"""

import platform
import shutil
from pathlib import Path

import pytest

from stages.common import file_md5
from stages.cpu import has_avx2
from tests.conftest import BIN, ROOT, committed_md5s, prepared, run
from tools import verify

COMMITTED_MODEL_MD5 = committed_md5s()["artifacts/mymodel.pth"]
HAS_AVX2 = has_avx2()
HAS_AVX512 = HAS_AVX2 and "avx512f" in Path("/proc/cpuinfo").read_text()

QEMU = shutil.which("qemu-x86_64-static")
needs_qemu = pytest.mark.skipif(
    not QEMU or platform.machine() != "x86_64",
    reason="needs qemu-x86_64-static (Debian/Ubuntu: apt-get install qemu-user-static; CI installs it) and an "
    "x86-64 venv",
)
# Intel models with AVX2 and without AVX-512, which QEMU 7.2 does not emulate.
HASWELL, SKYLAKE = "Haswell-v4", "Skylake-Client-v4"
SANDY_BRIDGE = "SandyBridge-v1"  # AVX without AVX2, so ATen runs its DEFAULT (no SIMD) kernels
PIPELINE = ("prepare", "train", "evaluate", "activations")  # every stage but the plot, which draws PNGs

# What a caller may have set, and what must not change the bytes (stages/cpu.py pins MKL and ATen before torch).
# MKL ignores MKL_CBWR on an AMD CPU: on Intel, it is the emulated tests below that show the pin holds.
CALLER_SETTINGS = {
    "nothing": {},
    "MKL_CBWR=AVX2": {"MKL_CBWR": "AVX2"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "OMP_NUM_THREADS=2": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    **({"ATEN_CPU_CAPABILITY=avx512": {"ATEN_CPU_CAPABILITY": "avx512"}} if HAS_AVX512 else {}),
}
SIZES = {
    "default": {},
    "batches-of-1024": {"data.synthetic": {"n": 16_384, "low": 0, "high": 10}, "train.batch_size": 1024},
}


def stage_in(folder, name, cpu=None, **caller_env):
    """`python -m stages.<name>` as dvc runs it, in `folder`, with the caller's environment, on the host's CPU or
    on the emulated QEMU CPU model `cpu`; its stdout."""
    caller = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **caller_env}
    python = [QEMU, "-cpu", cpu, str(BIN / "python")] if cpu else ["python"]
    return run([*python, "-m", f"stages.{name}"], folder, PYTHONPATH=str(ROOT), **caller).stdout


def train_in(folder, cpu=None, **caller_env):
    """The train stage in `folder`: (md5 of the model, stdout)."""
    out = stage_in(folder, "train", cpu, **caller_env)
    return file_md5(folder / "artifacts/mymodel.pth"), out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_AVX2, reason="the byte promise is for x86-64 CPUs with AVX2; elsewhere `make verify`")
@pytest.mark.parametrize("size", SIZES)
def test_no_caller_setting_changes_the_bytes_and_the_pins_are_in_force(tmp_path, size):
    prepared(tmp_path, **SIZES[size])
    digests = {}
    for name, caller_env in CALLER_SETTINGS.items():
        digests[name], out = train_in(tmp_path, **caller_env)
        assert "on cpu, 1 thread(s), MKL COMPATIBLE, ATen AVX2" in out, (name, out)  # torch.get_num_threads() inside
    assert len(set(digests.values())) == 1, digests
    if size == "default":
        assert digests["nothing"] == COMMITTED_MODEL_MD5  # the committed dvc.lock's model, on this CPU too
    # The pins are what holds the bytes: without them, ATen's DEFAULT kernels round differently.
    unpinned, out = train_in(tmp_path, ADDNET_CPU_PIN="off", ATEN_CPU_CAPABILITY="default")
    assert "ATen DEFAULT" in out and unpinned != digests["nothing"]


def test_train_threads_is_the_thread_count_in_force(tmp_path):
    prepared(tmp_path, **{"train.threads": 2})
    _, out = train_in(tmp_path, OMP_NUM_THREADS="1")
    assert "on cpu, 2 thread(s)" in out


@pytest.mark.slow
@needs_qemu
def test_the_pipeline_on_an_emulated_intel_cpu_gives_the_committed_bytes(tmp_path):
    shutil.copy2(ROOT / "params.yaml", tmp_path)
    printed = {stage: stage_in(tmp_path, stage, HASWELL) for stage in PIPELINE}
    assert "MKL COMPATIBLE, ATen AVX2" in printed["train"]
    expected = committed_md5s(*PIPELINE)
    assert {path: file_md5(tmp_path / path) for path in expected} == expected


@pytest.mark.slow
@needs_qemu
def test_another_intel_generation_trains_the_committed_model_and_unpinned_takes_another_path(tmp_path):
    prepared(tmp_path)
    assert train_in(tmp_path, SKYLAKE)[0] == COMMITTED_MODEL_MD5
    # Left to itself, MKL takes its AVX2 path on an Intel CPU: the emulation runs the code the pin rules out.
    unpinned, out = train_in(tmp_path, SKYLAKE, ADDNET_CPU_PIN="off")
    assert "MKL AUTO, ATen AVX2" in out and unpinned != COMMITTED_MODEL_MD5


@pytest.mark.slow
@needs_qemu
def test_an_intel_cpu_without_avx2_gives_atens_default_bytes_which_verify_accepts(tmp_path):
    prepared(tmp_path)
    # What stages/cpu.py pins on a CPU without AVX2: MKL only. Under qemu-user /proc/cpuinfo is the host's, so
    # the pin itself would force ATen's AVX2 kernels onto the emulated CPU (an illegal instruction).
    emulated, out = train_in(tmp_path, SANDY_BRIDGE, ADDNET_CPU_PIN="off", MKL_CBWR="COMPATIBLE")
    assert "MKL COMPATIBLE, ATen DEFAULT" in out
    lock = committed_md5s("train")
    references = {path: (ROOT / path).read_text() for path in lock if path in verify.REFERENCES}
    rows = verify.compare(references, tmp_path, lock)
    assert all(row.ok for row in rows) and emulated != COMMITTED_MODEL_MD5, rows
    # The stand-in `make verify`'s tolerances were measured with, on the host's CPU: the same bytes.
    stand_in, _ = train_in(tmp_path, ADDNET_CPU_PIN="off", MKL_CBWR="COMPATIBLE", ATEN_CPU_CAPABILITY="default")
    assert emulated == stand_in
