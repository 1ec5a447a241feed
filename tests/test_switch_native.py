"""The assembly context switch alone, in C (tests/native/switch_test.c), for every
architecture this machine can build and run: natively, and through qemu-user with a
cross compiler where one is installed (CI installs the aarch64 pair)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "src" / "stackful" / "_native"
TEST_SOURCE = ROOT / "tests" / "native" / "switch_test.c"

# arch -> (compiler, runner or None for native, assembly file)
TARGETS = {
    "x86_64": ("x86_64-linux-gnu-gcc", "qemu-x86_64", "switch_x86_64_sysv_elf_gas.S"),
    "aarch64": ("aarch64-linux-gnu-gcc", "qemu-aarch64", "switch_aarch64_aapcs_elf_gas.S"),
}


def build_and_run(arch: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    compiler, emulator, asm = TARGETS[arch]
    native = platform.machine() == arch
    cc = shutil.which("gcc") if native else shutil.which(compiler)
    runner = [] if native else [shutil.which(emulator)]
    if cc is None or None in runner:
        pytest.skip(f"no {compiler} and {emulator} on this machine")
    exe = tmp_path / f"switch_test_{arch}"
    flags = ["-O2", "-Wall", "-Wextra", "-Werror"] + ([] if native else ["-static"])
    subprocess.run([cc, *flags, f"-I{NATIVE}", str(TEST_SOURCE), str(NATIVE / "asm" / asm),
                    "-o", str(exe), "-lm"], check=True, capture_output=True, text=True)
    return subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_switch_on_arch(arch: str, tmp_path: Path) -> None:
    result = build_and_run(arch, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 passed, 0 failed"
