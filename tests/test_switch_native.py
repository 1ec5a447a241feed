"""The assembly context switch alone, in C (tests/native/switch_test.c), for every
architecture this machine can build and run: natively, and through qemu-user with a
cross compiler where one is installed (CI installs the aarch64 pair)."""

from __future__ import annotations

import platform
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from ._support import EMULATED

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "src" / "stackful" / "_native"
TEST_SOURCE = ROOT / "tests" / "native" / "switch_test.c"

# arch -> (compiler, runner or None for native, assembly file)
TARGETS = {
    "x86_64": ("x86_64-linux-gnu-gcc", "qemu-x86_64", "switch_x86_64_sysv_elf_gas.S"),
    "aarch64": ("aarch64-linux-gnu-gcc", "qemu-aarch64", "switch_aarch64_aapcs_elf_gas.S"),
}


def build_and_run(arch: str, tmp_path: Path, *args: str,
                  flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    compiler, emulator, asm = TARGETS[arch]
    # Under qemu-user, platform.machine() is the emulated one, and gcc still the host's.
    native = platform.machine() == arch and not EMULATED
    cc = shutil.which("gcc") if native else shutil.which(compiler)
    runner = [] if native else [shutil.which(emulator)]
    if cc is None or None in runner:
        pytest.skip(f"no {compiler} and {emulator} on this machine")
    exe = tmp_path / f"switch_test_{arch}"
    all_flags = ["-O2", "-Wall", "-Wextra", "-Werror", *flags] + ([] if native else ["-static"])
    subprocess.run([cc, *all_flags, f"-I{NATIVE}", str(TEST_SOURCE), str(NATIVE / "asm" / asm),
                    "-o", str(exe), "-lm"], check=True, capture_output=True, text=True, timeout=120)
    return subprocess.run([*runner, str(exe), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_switch_on_arch(arch: str, tmp_path: Path) -> None:
    result = build_and_run(arch, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 passed, 0 failed"


def test_aarch64_switch_with_branch_protection(tmp_path: Path) -> None:
    """Built as distributions build arm64 code (pac-ret and BTI landing pads), the
    switch still runs, through indirect calls too."""
    result = build_and_run("aarch64", tmp_path, flags=("-mbranch-protection=standard",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 passed, 0 failed"


def test_aarch64_tampered_return_address_faults(tmp_path: Path) -> None:
    """The return address a suspended AArch64 context keeps is signed: one flipped
    bit of it kills the process instead of sending the switch there."""
    result = build_and_run("aarch64", tmp_path, "tamper")
    if result.returncode == 2:
        pytest.skip("this CPU (or emulator) has no pointer authentication")
    assert result.returncode != 3, "the switch returned through a tampered address"
    faults = (signal.SIGSEGV, signal.SIGILL, signal.SIGBUS)
    assert -result.returncode in faults, (result.returncode, result.stdout, result.stderr)


def test_aarch64_object_keeps_the_gnu_property_note(tmp_path: Path) -> None:
    """Without the note, linking the assembly would strip BTI and PAC from the
    whole extension built with -mbranch-protection."""
    cc, readelf = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("aarch64-linux-gnu-readelf")
    if platform.machine() == "aarch64" and not EMULATED:
        cc, readelf = shutil.which("gcc"), shutil.which("readelf")
    if cc is None or readelf is None:
        pytest.skip("no aarch64 gcc and readelf on this machine")
    obj = tmp_path / "switch.o"
    subprocess.run([cc, "-c", str(NATIVE / "asm" / TARGETS["aarch64"][2]), "-o", str(obj)],
                   check=True, capture_output=True, text=True, timeout=120)
    notes = subprocess.run([readelf, "-n", str(obj)], check=True, capture_output=True,
                           text=True, timeout=60).stdout
    assert "AArch64 feature: BTI, PAC" in notes, notes
