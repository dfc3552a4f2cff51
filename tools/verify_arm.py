"""`make verify-arm`: the pipeline on emulated ARM CPUs, each run compared with the committed one (opt-in).

    python -m tools.verify_arm                                   # the default CPU set-ups (SETUPS)
    python -m tools.verify_arm --cpus "cortex-a72 neoverse-v1"   # some of them
    python -m tools.verify_arm --cpus "max,sve384=on"            # or anything qemu-aarch64's -cpu takes

Under build/arm/ (kept, so a second run reuses it) it builds an aarch64 Python 3.11 from Debian's arm64 packages
(apt-get with a private state folder: no root, the system's apt is untouched) and installs the aarch64 wheels
of what the stages import, at the versions requirements.txt and requirements-cuda.txt pin. PyPI's aarch64 torch
is its CUDA build, and libtorch_cpu.so links libcudart and libcupti, so the CUDA libraries come too (none of
their code runs). Then, for each CPU, it clones HEAD, runs dvc.yaml's stages in order under qemu-aarch64-static
(QEMU's user mode: the CPU's instruction set, ID registers and SVE width) and prints `make verify`'s table.
Each CPU gets its own /proc/cpuinfo and MIDR_EL1 sysfs files, written from what the emulated CPU reports,
because QEMU would show the programs the host's x86 ones. Exit 0: every CPU's outputs are identical or within
make verify's tolerances and, with the pins on, all CPUs gave the same bytes; 1: not; 2: a user error.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path("build/arm")
REQUIRED = {
    "qemu-aarch64-static": "apt-get install qemu-user-static",
    "apt-get": "make verify-arm fetches Debian's arm64 packages with apt (Debian or Ubuntu)",
    "dpkg-deb": "make verify-arm unpacks Debian's arm64 packages with dpkg-deb (Debian or Ubuntu)",
}
DEBIAN = [  # suite lines of Debian 12 (glibc 2.36: the wheels' manylinux tags go up to 2_36)
    "http://deb.debian.org/debian bookworm main",
    "http://deb.debian.org/debian bookworm-updates main",
    "http://deb.debian.org/debian-security bookworm-security main",
]
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBS = [
    "python3.11",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libcrypt1",
]
IMPORTS = ("torch", "numpy", "PyYAML", "ruamel.yaml", "matplotlib", "torchsummary")  # what the stages import
PINS = ("requirements.txt", "requirements-cuda.txt")
# pip does not widen an explicit --platform to older manylinux tags: name every one a glibc 2.36 system accepts
PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37))]
SETUPS = {  # name: qemu's -cpu. `max` with a MIDR stands for a CPU QEMU 7.2 does not model, at its SVE width
    "cortex-a72": "cortex-a72",  # NEON only (Raspberry Pi 4, Graviton 1)
    "neoverse-n1": "neoverse-n1",  # NEON with dot product (Graviton 2, Ampere Altra)
    "neoverse-v1": "max,midr=0x411fd401,sve256=on",  # 256-bit SVE (Graviton 3)
    "neoverse-v2": "max,midr=0x410fd4f0,sve128=on",  # 128-bit SVE2 (NVIDIA Grace, Graviton 4)
    "a64fx": "a64fx",  # 512-bit SVE (Fujitsu A64FX)
    "max-sve128": "max,sve128=on",  # QEMU's own ID: a CPU no library recognises
    "max-sve256": "max,sve256=on",
    "max-sve512": "max,sve512=on",
}
# Runs under the emulated CPU: its MIDR_EL1 (the kernel and QEMU let user code read it), its HWCAP bits
HWCAPS = [
    "fp",
    "asimd",
    "evtstrm",
    "aes",
    "pmull",
    "sha1",
    "sha2",
    "crc32",
    "atomics",
    "fphp",
    "asimdhp",
    "cpuid",
    "asimdrdm",
    "jscvt",
    "fcma",
    "lrcpc",
    "dcpop",
    "sha3",
    "sm3",
    "sm4",
    "asimddp",
    "sha512",
    "sve",
    "asimdfhm",
    "dit",
    "uscat",
    "ilrcpc",
    "flagm",
    "ssbs",
    "sb",
    "paca",
    "pacg",
]
HWCAPS2 = [
    "dcpodp",
    "sve2",
    "sveaes",
    "svepmull",
    "svebitperm",
    "svesha3",
    "svesm4",
    "flagm2",
    "frint",
    "svei8mm",
    "svef32mm",
    "svef64mm",
    "svebf16",
    "i8mm",
    "bf16",
    "dgh",
    "rng",
    "bti",
    "mte",
    "ecv",
    "afp",
    "rpres",
]
PROBE = """
import ctypes, mmap
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
code.write(bytes.fromhex("000038d5c0035fd6"))  # mrs x0, midr_el1; ret
read_midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
print(read_midr(), libc.getauxval(16), libc.getauxval(26))
"""


class Failure(Exception):
    """A tool this needs is missing or failed: one line (raised as stages.common.UserError by main)."""


def run(command, what, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()] or ["(no output)"]
        raise Failure(f"{what} failed, exit {result.returncode}: {lines[-1].strip()}")
    return result.stdout


def up_to_date(folder, recipe):
    """Whether `folder` was completely built from `recipe` (a text naming everything it was built from)."""
    stamp = folder / ".built-from"
    return stamp.is_file() and stamp.read_text() == recipe


def mark_built(folder, recipe):
    (folder / ".built-from").write_text(recipe)


def build_sysroot(cache):
    """Debian's arm64 python3.11 and its libraries, unpacked into cache/sysroot."""
    sysroot, apt = cache / "sysroot", (cache / "apt").resolve()
    recipe = "\n".join([*DEBIAN, *DEBS]) + "\n"
    if up_to_date(sysroot, recipe):
        return sysroot
    if not Path(DEBIAN_KEYRING).is_file():
        raise Failure(f"no {DEBIAN_KEYRING} to check Debian's packages with: apt-get install debian-archive-keyring")
    for folder in ("state/lists/partial", "cache/archives/partial", "debs"):
        (apt / folder).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text("".join(f"deb [arch=arm64 signed-by={DEBIAN_KEYRING}] {s}\n" for s in DEBIAN))
    (apt / "status").touch()
    options = [
        "-oAPT::Architecture=arm64",
        "-oAPT::Architectures=arm64",
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        "-oDir::Etc::SourceParts=/nonexistent",
        f"-oDir::State={apt / 'state'}",
        f"-oDir::State::status={apt / 'status'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=",  # as root, apt would drop to _apt, which cannot write to this folder
    ]
    print(f"verify-arm: downloading Debian's arm64 python3.11 into {apt / 'debs'} ...", file=sys.stderr)
    run(["apt-get", *options, "-qq", "update"], "apt-get update (Debian arm64 package lists)")
    for old in (apt / "debs").glob("*.deb"):
        old.unlink()
    run(
        ["apt-get", *options, "-qq", "download", *(f"{name}:arm64" for name in DEBS)],
        "apt-get download",
        cwd=apt / "debs",
    )
    shutil.rmtree(sysroot, ignore_errors=True)
    sysroot.mkdir(parents=True)
    for deb in sorted((apt / "debs").glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"dpkg-deb -x {deb.name}")
    mark_built(sysroot, recipe)
    return sysroot


def pinned_versions(root):
    """The pin lines of the requirement files that exist: pip reads them as constraints."""
    return [root / name for name in PINS if (root / name).is_file()]


def build_site(cache, root):
    """The aarch64 wheels of IMPORTS and all they pull in, installed into cache/site (pip --target)."""
    site, wheels = cache / "site", cache / "wheels"
    constraints = pinned_versions(root)
    recipe = "\n".join([*IMPORTS, *PLATFORMS, *(path.read_text() for path in constraints)])
    if up_to_date(site, recipe):
        return site
    target = [
        "--only-binary=:all:",
        *(f"--platform={name}" for name in PLATFORMS),
        "--python-version=3.11",
        "--implementation=cp",
        "--abi=cp311",
    ]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    print(f"verify-arm: downloading the aarch64 wheels into {wheels} ...", file=sys.stderr)
    pins = [arg for path in constraints for arg in ("-c", str(path))]
    run([*pip, "download", "--no-cache-dir", "-d", str(wheels), *target, *pins, *IMPORTS], "pip download")
    shutil.rmtree(site, ignore_errors=True)
    print(f"verify-arm: installing them into {site} ...", file=sys.stderr)
    run(
        [*pip, "install", "--no-index", "-f", str(wheels), "--target", str(site), *target, *pins, *IMPORTS],
        "pip install",
    )
    mark_built(site, recipe)
    return site


def cpuinfo_text(midr, hwcap, hwcap2, cpus):
    """/proc/cpuinfo as Linux on arm64 writes it for `cpus` cores of this MIDR_EL1 and these HWCAP bits."""
    features = [name for bit, name in enumerate(HWCAPS) if hwcap >> bit & 1]
    features += [name for bit, name in enumerate(HWCAPS2) if hwcap2 >> bit & 1]
    core = (
        f"BogoMIPS\t: 50.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: 0x{midr >> 24 & 0xFF:02x}\n"
        f"CPU architecture: 8\nCPU variant\t: 0x{midr >> 20 & 0xF:x}\nCPU part\t: 0x{midr >> 4 & 0xFFF:03x}\n"
        f"CPU revision\t: {midr & 0xF}\n\n"
    )
    return "".join(f"processor\t: {n}\n{core}" for n in range(cpus))


def cpu_root(cache, sysroot, name, model):
    """A root folder for qemu's -L: the sysroot, plus the /proc/cpuinfo and MIDR_EL1 files of this CPU."""
    root = cache / "cpus" / "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for folder in sorted(p.name for p in sysroot.iterdir() if p.is_dir()):
        (root / folder).symlink_to(Path("../..", sysroot.name, folder))
    probe = run(emulate(root, model, "-c", PROBE), f"qemu-aarch64-static -cpu {model}")
    midr, hwcap, hwcap2 = map(int, probe.split())
    cpus = os.cpu_count() or 1  # as many as the host's /sys (which the emulated programs see) lists
    (root / "proc").mkdir()
    (root / "proc" / "cpuinfo").write_text(cpuinfo_text(midr, hwcap, hwcap2, cpus))
    for n in range(cpus):
        ids = root / f"sys/devices/system/cpu/cpu{n}/regs/identification"
        ids.mkdir(parents=True)
        (ids / "midr_el1").write_text(f"0x{midr:016x}\n")
        (ids / "revidr_el1").write_text(f"0x{0:016x}\n")
    return root


def emulate(root, model, *args):
    return ["qemu-aarch64-static", "-L", str(root), "-cpu", model, str(root / "usr/bin/python3.11"), *args]


def guest_environment(site, scratch):
    """The caller's environment (before the stages' pins) for the emulated stages, minus the host's Python and
    library paths."""
    from tools.machine import caller_environment

    env = caller_environment()
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "LD_PRELOAD"):
        env.pop(name, None)
    return {**env, "PYTHONPATH": str(site.resolve()), "PYTHONNOUSERSITE": "1", "MPLCONFIGDIR": str(scratch)}


def run_pipeline(clone, root, model, env):
    """dvc.yaml's stages, in order, under the emulated CPU; returns (the train stage's line, seconds)."""
    import yaml

    stages = yaml.safe_load((clone / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    start, train_line = time.perf_counter(), ""
    for name, stage in stages.items():
        command = shlex.split(stage["cmd"])
        if command[0] != "python":
            raise Failure(f"dvc.yaml: stage {name}'s cmd {stage['cmd']!r} does not start with python")
        output = run(emulate(root, model, *command[1:]), f"stage {name} under -cpu {model}", cwd=clone, env=env)
        train_line = next((line for line in output.splitlines() if line.startswith("train:")), train_line)
    return train_line, time.perf_counter() - start


def md5_line(clone, lock):
    from stages.common import file_md5

    files = [path for path in lock if not path.startswith("data/") and (clone / path).is_file()]
    return ", ".join(f"{Path(path).name} {file_md5(clone / path)[:8]}" for path in files)


def main():
    parser = argparse.ArgumentParser(prog="python -m tools.verify_arm", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpus",
        default=" ".join(SETUPS),
        help=f"space-separated: names from {', '.join(SETUPS)}, or qemu -cpu values (default: all the names)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the clones (their paths are printed)")
    args = parser.parse_args()
    setups = plan(args.cpus)
    from stages.common import UserError
    from tools.machine import cpu_name_from
    from tools.verify import REFERENCES, compare, git, print_table, read_lock

    for program, remedy in REQUIRED.items():
        if not shutil.which(program):
            raise UserError(f"{program} not found on PATH: {remedy}")
    root_dir = Path(git("rev-parse", "--show-toplevel"))
    cache = root_dir / CACHE
    start = time.perf_counter()
    try:
        sysroot, site = build_sysroot(cache), build_site(cache, root_dir)
    except Failure as error:
        raise UserError(str(error)) from None
    print(f"verify-arm: aarch64 Python and wheels ready in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="addnet-verify-arm-"))
    results, failed = {}, []
    try:
        for name, model in setups.items():
            clone = tmp / name.replace(",", "_").replace("=", "-")
            git("clone", "-q", str(root_dir), str(clone))
            commit = git("rev-parse", "--short", "HEAD", cwd=clone)
            lock = read_lock((clone / "dvc.lock").read_text(encoding="utf-8"))
            references = {
                p: (clone / p).read_text("utf-8", errors="replace") for p in REFERENCES if (clone / p).is_file()
            }
            try:
                root = cpu_root(cache, sysroot, name, model)
                env = guest_environment(site, tmp / "mplconfig")
                print(f"\n{name}: {cpu_name_from((root / 'proc/cpuinfo').read_text())}, qemu -cpu {model}", flush=True)
                train_line, seconds = run_pipeline(clone, root, model, env)
            except Failure as error:
                print(f"verify-arm: {name}: FAIL ({error})", flush=True)
                failed.append(name)
                continue
            rows = compare(references, clone, lock)
            print(train_line)
            print_table(rows)
            print(f"md5: {md5_line(clone, lock)}")
            bad = [row.output for row in rows if not row.ok]
            same = sum(row.result == "identical" for row in rows)
            if bad:
                verdict = f"FAIL ({', '.join(bad)})"
                failed.append(name)
            elif same == len(rows):
                verdict = "byte-identical to the committed run"
            else:
                verdict = f"within make verify's tolerances ({same} of {len(rows)} outputs identical)"
            print(f"verify-arm: {name}: {verdict}; HEAD {commit}, pipeline {seconds:.0f} s", flush=True)
            results[name] = md5_line(clone, lock)
    finally:
        if args.keep:
            print(f"verify-arm: the clones are kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    groups = {}
    for name, md5s in results.items():
        groups.setdefault(md5s, []).append(name)
    pinned = os.environ.get("ADDNET_CPU_PIN", "on") != "off"
    if len(groups) == 1 and len(results) > 1:
        print(f"verify-arm: one set of bytes on all {len(results)} CPUs ({next(iter(groups))})")
    elif groups:
        print(
            f"verify-arm: {len(groups)} sets of bytes:" + "".join(f"\n  {', '.join(g)}: {m}" for m, g in groups.items())
        )
    print(f"verify-arm: {time.perf_counter() - start:.0f} s in all", file=sys.stderr)
    sys.exit(1 if failed or (pinned and len(groups) > 1) else 0)


def plan(cpus):
    """--cpus -> {name: qemu -cpu value}; a value that is not a name is its own name."""
    from stages.common import UserError

    words = cpus.split()
    if not words:
        raise UserError("--cpus is empty: give one or more of " + ", ".join(SETUPS))
    return {word: SETUPS.get(word, word) for word in words}


if __name__ == "__main__":
    from stages.common import run_stage

    run_stage(main)
