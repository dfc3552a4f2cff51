"""What the tools and tests need to know about the machine they run on; nothing here is a stage's dependency."""

import os
import platform
import subprocess
import sys

from stages.cpu import CALLER_RECORD, CALLER_VALUES


def caller_environment():
    """os.environ as the caller had it before `import stages` pinned the CPU code paths (stages/cpu.py): for a
    child process that must choose for itself (the bench's unpinned runs, the tests' caller settings)."""
    env = dict(os.environ)
    env.pop(CALLER_RECORD, None)
    for name, value in CALLER_VALUES.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


# MIDR_EL1 implementer and part numbers, as /proc/cpuinfo gives them on ARM Linux, of the cores a Linux machine
# is likely to have (util-linux's lscpu knows them all); other cores are named by their numbers.
ARM_IMPLEMENTERS = {0x41: "ARM", 0x46: "Fujitsu", 0x48: "HiSilicon", 0x4E: "NVIDIA", 0x51: "Qualcomm", 0xC0: "Ampere"}
ARM_PARTS = {
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720",
    (0x41, 0xD84): "Neoverse-V3",
    (0x41, 0xD8E): "Neoverse-N3",
    (0x46, 0x001): "A64FX",
    (0x48, 0xD01): "Kunpeng-920",
    (0x4E, 0x004): "Carmel",
    (0xC0, 0xAC3): "Ampere-1",
    (0xC0, 0xAC4): "Ampere-1a",
}


def cpu_name_from(cpuinfo):
    """The CPU's name from the text of Linux's /proc/cpuinfo: on ARM from its cores' implementer and part
    numbers ('ARM Neoverse-N1', 'ARM Cortex-A76 + ARM Cortex-A55' for big.LITTLE), else its model name; '' if
    it has neither."""
    fields = [[part.strip() for part in line.split(":", 1)] for line in cpuinfo.splitlines() if ":" in line]
    implementers = [int(value, 16) for key, value in fields if key == "CPU implementer"]
    parts = [int(value, 16) for key, value in fields if key == "CPU part"]
    cores = []
    for implementer, part in zip(implementers, parts, strict=False):
        vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer 0x{implementer:02x}")
        cores.append(f"{vendor} {ARM_PARTS.get((implementer, part), f'part 0x{part:03x}')}")
    if cores:
        return " + ".join(dict.fromkeys(cores))
    return next((value for key, value in fields if key == "model name"), "")


def cpu_name():
    """The CPU's name: Linux's /proc/cpuinfo through cpu_name_from ('AMD EPYC 9B14', 'ARM Neoverse-N1'), or
    macOS's brand string ('Apple M2')."""
    try:
        if sys.platform == "darwin":
            name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True).stdout
        else:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
                name = cpu_name_from(info.read())
    except (OSError, ValueError):  # ValueError: a number that is not hex
        name = ""
    return name.strip() or platform.processor() or "unknown CPU"
