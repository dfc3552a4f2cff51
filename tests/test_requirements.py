"""The pins are complete: resolving them for each platform and torch build pulls in nothing they do not pin, and
`make setup` installs the build it was asked for.

uv resolves for another platform without installing (markers evaluated for that platform, metadata read with
range requests, no wheel downloaded), against PyPI: the resolution tests skip where PyPI cannot be reached.
"""

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

PYPI = "https://pypi.org/simple"
UV = Path(sys.executable).parent / "uv"
COMMON = ROOT / "requirements.txt"
CUDA = ROOT / "requirements-cuda.txt"
# Marker values of each target; uv's --python-platform names it.
PLATFORMS = {
    "x86_64-manylinux_2_28": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "aarch64-manylinux_2_28": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    "aarch64-apple-darwin": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
}
PYTHON = {"python_version": "3.11", "python_full_version": "3.11.0", "implementation_name": "cpython"}


def requirements(path):
    lines = path.read_text().splitlines()
    return [Requirement(line.split(" #")[0]) for line in lines if line.strip() and not line.startswith("#")]


def pins(path, platform):
    """{name: version} of the file's pins that apply on `platform`."""
    found = {}
    for requirement in requirements(path):
        if requirement.marker is None or requirement.marker.evaluate({**PYTHON, **PLATFORMS[platform]}):
            (spec,) = requirement.specifier
            found[canonicalize_name(requirement.name)] = spec.version
    return found


def cuda_names():
    return {canonicalize_name(requirement.name) for requirement in requirements(CUDA)}


@pytest.fixture(scope="module")
def pypi():
    try:
        urllib.request.urlopen(urllib.request.Request(f"{PYPI}/uv/", method="HEAD"), timeout=5).close()  # noqa: S310
    except OSError as error:
        pytest.skip(f"PyPI ({PYPI}) cannot be reached: {error}")


def resolve(tmp_path, platform, files, exclude=()):
    """uv's resolution of `files` for `platform` against PyPI alone: {name: (version, {what pulls it in})}."""
    excludes = tmp_path / "excludes.txt"
    excludes.write_text("".join(f"{name}\n" for name in exclude))
    resolved = tmp_path / "resolved.txt"
    # No uv config and no index but PyPI's: a user's settings or a local wheel folder must not stand in for PyPI.
    environment = {key: value for key, value in os.environ.items() if key == "UV_CACHE_DIR" or key[:3] != "UV_"}
    result = subprocess.run(
        [UV, "pip", "compile", "--quiet", "--no-config", "--system-certs", "--default-index", PYPI,
         "--python-version", "3.11", "--python-platform", platform, "--no-header", "--annotation-style", "line",
         "--excludes", excludes, "-o", resolved, ROOT / "requirements.in", *files],
        env={**environment, "MACOSX_DEPLOYMENT_TARGET": "14.0"},  # PyPI's macOS torch is for macOS 14 and later
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = {}
    for line in resolved.read_text().splitlines():
        pin, _, via = line.partition("# via ")
        name, version = pin.split(";")[0].strip().split("==")
        found[canonicalize_name(name)] = (version, {part.strip() for part in via.split(",")})
    return found


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28"])
def test_a_cuda_install_gets_exactly_the_pins(pypi, tmp_path, platform):
    resolved = resolve(tmp_path, platform, [COMMON, CUDA])
    assert {name: version for name, (version, _) in resolved.items()} == pins(COMMON, platform) | pins(CUDA, platform)
    # torch alone pulls the CUDA packages in, so its CPU build, which lacks those requirements, needs none of them.
    for name in cuda_names():
        assert resolved[name][1] <= cuda_names() | {"torch", "-r requirements-cuda.txt"}, name


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28", "aarch64-apple-darwin"])
def test_a_cpu_install_gets_exactly_the_common_pins(pypi, tmp_path, platform):
    # PyPI's Linux torch is the CUDA build: leaving out what it adds is what the +cpu build (PyTorch's index, which
    # this test does not need) is. PyPI's macOS torch is a CPU build.
    resolved = resolve(tmp_path, platform, [COMMON], exclude=cuda_names() if "linux" in platform else ())
    assert {name: version for name, (version, _) in resolved.items()} == pins(COMMON, platform)


def make_setup(tmp_path, torch):
    """The commands `make setup TORCH=...` would run for a fresh venv (make -n: nothing runs)."""
    return subprocess.run(
        ["make", "-n", "setup", f"TORCH={torch}", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_make_setup_torch_cuda_installs_the_cuda_pins_and_pypi_torch(tmp_path):
    result = make_setup(tmp_path, "cuda")
    assert result.returncode == 0, result.stderr
    version = pins(COMMON, "x86_64-manylinux_2_28")["torch"]
    assert f"install -q -r requirements.txt -r requirements-cuda.txt torch==={version}" in result.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="on macOS PyPI's torch is the CPU build")
def test_make_setup_torch_cpu_takes_a_local_cpu_wheel_first_and_no_cuda_pins(tmp_path):
    result = make_setup(tmp_path, "cpu")
    assert result.returncode == 0, result.stderr
    version = pins(COMMON, "x86_64-manylinux_2_28")["torch"]
    assert f"install -q --no-deps --no-index torch=={version}+cpu" in result.stdout
    assert "requirements-cuda.txt" not in result.stdout


def test_make_setup_names_a_bad_torch_choice(tmp_path):
    result = make_setup(tmp_path, "gpu")
    assert result.returncode != 0
    assert "TORCH=gpu: expected cpu, cuda or auto" in result.stderr
