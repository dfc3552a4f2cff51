"""The CPU code paths that decide a result's last bits, pinned before torch loads, the same on every x86-64 CPU.

Two libraries inside torch pick their kernels by the CPU they find, and their sums round differently:
- MKL (matrix products): on an Intel CPU it takes its AVX-512 or AVX2 path by itself, on AMD a generic one.
  MKL_CBWR=COMPATIBLE (its "conditional numerical reproducibility" switch) makes every CPU take that
  generic path. Measured with the default params: an Intel Xeon gave mymodel.pth bd7aaaf8… unpinned,
  7d9570be… under AVX2 and e2e631a5… under COMPATIBLE, which is what the AMD EPYC gives under every setting.
- ATen (torch's own kernels) picks DEFAULT, AVX2 or AVX512. AVX2 and AVX512 gave the same bytes on both
  machines (default params, and 100,000 pairs in batches of 1,024); DEFAULT (no SIMD) did not. Any x86-64
  CPU with AVX2 runs the AVX2 kernels, so that is the pin; a CPU without AVX2 is left to ATen's choice.

On ARM (aarch64 Linux, arm64 macOS) torch sends a float matrix product either to its BLAS (NVPL in PyPI's
Linux wheel) or to oneDNN (with the Arm Compute Library's GEMM, or oneDNN's own SVE kernels), by a size
threshold it picks from the CPU: on a Neoverse core products with a dimension of 8 or less go to BLAS, on any
other core every product goes to oneDNN. Their sums round differently, so two ARM machines gave two sets of
bytes (tools/verify_arm.py emulates them). TORCH_MKLDNN_MATMUL_MIN_DIM set to the largest value torch reads
sends every product to BLAS on every ARM CPU.

A caller's MKL_CBWR, ATEN_CPU_CAPABILITY or TORCH_MKLDNN_MATMUL_MIN_DIM is overridden: they must not change the
bytes. ADDNET_CPU_PIN=off leaves all three to the libraries (tools/bench.py measures what the pin costs that way).
"""

import json
import os
import platform
import re

MKL_BRANCH = "COMPATIBLE"
ATEN_CAPABILITY = "avx2"
ONEDNN_MATMUL_MIN_DIM = str(2**31 - 1)  # torch reads it with std::stoi: no product has all dimensions above it


def is_arm():
    return platform.machine().lower() in ("aarch64", "arm64")


def has_avx2():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and " avx2" in line for line in cpuinfo)
    except OSError:  # not Linux: let ATen choose, `make verify` judges the result
        return False


CALLER_VALUES = {}  # what the caller had set before the pin (tools/machine.py gives it back to child processes)
# The same record in the environment: a process started by a pinned one (a pytest-xdist worker, a torchrun rank)
# inherits pinned values, and must still know what the caller had set.
CALLER_RECORD = "ADDNET_CPU_CALLER"


def pin_code_paths():
    if os.environ.get("ADDNET_CPU_PIN", "on") == "off":
        return
    pins = {"MKL_CBWR": MKL_BRANCH, **({"ATEN_CPU_CAPABILITY": ATEN_CAPABILITY} if has_avx2() else {})}
    if is_arm():
        pins["TORCH_MKLDNN_MATMUL_MIN_DIM"] = ONEDNN_MATMUL_MIN_DIM
    CALLER_VALUES.update(json.loads(os.environ.get(CALLER_RECORD, "{}")))
    for name, value in pins.items():
        CALLER_VALUES.setdefault(name, os.environ.get(name))
        os.environ[name] = value
    os.environ[CALLER_RECORD] = json.dumps(CALLER_VALUES)


def code_paths():
    """The numeric code paths in force, for logs and `make verify`: 'MKL COMPATIBLE, ATen AVX2' on x86-64,
    'NVPL BLAS, oneDNN matmul off, ATen DEFAULT' on ARM."""
    import torch

    if is_arm():
        blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        min_dim = os.environ.get("TORCH_MKLDNN_MATMUL_MIN_DIM")
        routing = {ONEDNN_MATMUL_MIN_DIM: "off", None: "by CPU"}.get(min_dim, f"above dimension {min_dim}")
        libraries = f"{blas.group(1).upper() if blas else 'no'} BLAS, oneDNN matmul {routing}"
    else:
        libraries = f"MKL {os.environ.get('MKL_CBWR', 'AUTO')}" if torch.backends.mkl.is_available() else "no MKL"
    return f"{libraries}, ATen {torch.backends.cpu.get_cpu_capability()}"
