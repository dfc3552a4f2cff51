"""What the tools know about the machine (tools/machine.py), the ARM pin (stages/cpu.py) as a Linux aarch64
process would apply it, and `make verify-arm`'s plan (tools/verify_arm.py) short of its downloads."""

import subprocess
import sys

import pytest

from stages.common import UserError
from tests.conftest import ROOT
from tools.machine import cpu_name_from
from tools.verify_arm import SETUPS, cpuinfo_text, plan

# An AWS Graviton 2 core as Linux shows it (one processor of its /proc/cpuinfo)
GRAVITON2 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""


def core(implementer, part):
    return f"processor\t: 0\nCPU implementer\t: {implementer}\nCPU architecture: 8\nCPU part\t: {part}\n\n"


def test_arm_cpus_are_named_by_their_midr():
    assert cpu_name_from(GRAVITON2 + "\n" + GRAVITON2.replace(": 0\n", ": 1\n", 1)) == "ARM Neoverse-N1"
    assert cpu_name_from(core("0x41", "0xd4f")) == "ARM Neoverse-V2"
    assert cpu_name_from(core("0x46", "0x001")) == "Fujitsu A64FX"
    assert cpu_name_from(core("0x41", "0xd0b") * 2 + core("0x41", "0xd05") * 4) == "ARM Cortex-A76 + ARM Cortex-A55"
    assert cpu_name_from(core("0x00", "0x051")) == "implementer 0x00 part 0x051"  # QEMU's `max`
    assert cpu_name_from("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2\n") == "AMD EPYC 9B14"
    assert cpu_name_from("") == ""


def test_verify_arm_writes_the_cpuinfo_linux_would():
    text = cpuinfo_text(midr=0x414FD0C1, hwcap=0b1011, hwcap2=0b10, cpus=2)
    assert cpu_name_from(text) == "ARM Neoverse-N1"
    assert text.count("processor\t:") == 2
    for line in ("Features\t: fp asimd aes sve2", "CPU variant\t: 0x4", "CPU part\t: 0xd0c", "CPU revision\t: 1"):
        assert f"\n{line}\n" in text


def test_verify_arm_plan():
    assert plan("cortex-a72  neoverse-v1") == {"cortex-a72": "cortex-a72", "neoverse-v1": SETUPS["neoverse-v1"]}
    assert plan("max,sve384=on") == {"max,sve384=on": "max,sve384=on"}  # qemu's own -cpu values pass through
    with pytest.raises(UserError, match="--cpus is empty"):
        plan(" ")


def test_verify_arm_stops_on_a_bad_cpu_list_before_downloading():
    result = subprocess.run(
        [sys.executable, "-m", "tools.verify_arm", "--cpus", ""], cwd=ROOT, capture_output=True, text=True
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("verify_arm: error: --cpus is empty") and len(result.stderr.splitlines()) == 1


PIN_AS_ON_ARM = """
import os, platform
platform.machine = lambda: "aarch64"
import stages
from stages.cpu import CALLER_VALUES
print(os.environ.get("TORCH_MKLDNN_MATMUL_MIN_DIM"), CALLER_VALUES.get("TORCH_MKLDNN_MATMUL_MIN_DIM"))
"""


@pytest.mark.parametrize(
    ("machine", "pin", "expected"),
    [("aarch64", "on", "2147483647 8"), ("aarch64", "off", "8 None"), ("x86_64", "on", "8 None")],
)
def test_arm_sends_every_matmul_to_blas_whatever_the_caller_set(machine, pin, expected):
    """On ARM the pin overrides a caller's TORCH_MKLDNN_MATMUL_MIN_DIM (and keeps it for child processes); off,
    or on x86-64, the caller's value stays."""
    code = PIN_AS_ON_ARM.replace('"aarch64"', repr(machine))
    env = {"PATH": "/usr/bin:/bin", "TORCH_MKLDNN_MATMUL_MIN_DIM": "8", "ADDNET_CPU_PIN": pin}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.split() == expected.split(), result.stderr
