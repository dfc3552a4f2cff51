"""The CPU code paths that decide a result's last bits, pinned before torch loads, the same on every x86-64 CPU.

Two libraries inside torch pick their kernels by the CPU they find, and their sums round differently:
- MKL (matrix products): on an Intel CPU it takes its AVX-512 or AVX2 path by itself, on AMD a generic one.
  MKL_CBWR=COMPATIBLE (its "conditional numerical reproducibility" switch) makes every CPU take that
  generic path. Measured with the default params: an Intel Xeon gave mymodel.pth bd7aaaf8… unpinned,
  7d9570be… under AVX2 and e2e631a5… under COMPATIBLE, which is what the AMD EPYC gives under every setting.
- ATen (torch's own kernels) picks DEFAULT, AVX2 or AVX512. AVX2 and AVX512 gave the same bytes on both
  machines (default params, and 100,000 pairs in batches of 1,024); DEFAULT (no SIMD) did not. Any x86-64
  CPU with AVX2 runs the AVX2 kernels, so that is the pin; a CPU without AVX2 is left to ATen's choice.

A caller's MKL_CBWR or ATEN_CPU_CAPABILITY is overridden: they must not change the bytes. ADDNET_CPU_PIN=off
leaves both to the libraries (tools/bench.py measures what the pin costs that way).
"""

import os
import platform

MKL_BRANCH = "COMPATIBLE"
ATEN_CAPABILITY = "avx2"


def has_avx2():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and " avx2" in line for line in cpuinfo)
    except OSError:  # not Linux: let ATen choose, `make verify` judges the result
        return False


_CALLER = {}  # the values the caller had set, before the pin


def pin_code_paths():
    if os.environ.get("ADDNET_CPU_PIN", "on") == "off":
        return
    pins = {"MKL_CBWR": MKL_BRANCH, **({"ATEN_CPU_CAPABILITY": ATEN_CAPABILITY} if has_avx2() else {})}
    for name, value in pins.items():
        _CALLER.setdefault(name, os.environ.get(name))
        os.environ[name] = value


def caller_environment():
    """os.environ as the caller had it before the pin: for a child process that must choose for itself (the bench's
    unpinned runs, the tests' caller settings). A child inheriting os.environ would inherit the pin."""
    env = dict(os.environ)
    for name, value in _CALLER.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def describe():
    """The numeric code paths in force, for logs and `make verify`: 'MKL COMPATIBLE, ATen AVX2'."""
    import torch

    mkl = f"MKL {os.environ.get('MKL_CBWR', 'AUTO')}" if torch.backends.mkl.is_available() else "no MKL"
    return f"{mkl}, ATen {torch.backends.cpu.get_cpu_capability()}"
