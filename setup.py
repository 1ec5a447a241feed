"""Build the native core.

setuptools does not compile assembly on its own, so build_ext is taught the
``.S`` suffix (gcc preprocesses and assembles it).  The switch file is picked by
name from the machine's architecture, never by an #ifdef forest.
"""

import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = os.path.join("src", "stackful", "_native")

SWITCH_BY_MACHINE = {
    "x86_64": "switch_x86_64_sysv_elf_gas.S",
    "amd64": "switch_x86_64_sysv_elf_gas.S",
    "aarch64": "switch_aarch64_aapcs_elf_gas.S",
    "arm64": "switch_aarch64_aapcs_elf_gas.S",
}


def switch_source() -> str:
    machine = platform.machine().lower()
    try:
        return os.path.join(NATIVE, "asm", SWITCH_BY_MACHINE[machine])
    except KeyError:
        raise SystemExit(
            f"stackful: no context switch for machine {machine!r}; "
            f"supported: {sorted(set(SWITCH_BY_MACHINE))}"
        ) from None


class BuildExtWithAsm(build_ext):
    def build_extensions(self) -> None:
        self.compiler.src_extensions.append(".S")
        super().build_extensions()


extra_compile_args = ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2", "-fvisibility=hidden",
                      "-fno-strict-aliasing", "-Wno-missing-field-initializers"]
extra_link_args = []
if os.environ.get("STACKFUL_SANITIZE") == "address":
    # ASan build for CI: run with LD_PRELOAD of libasan (see .ci/run).
    extra_compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_link_args += ["-fsanitize=address"]
if os.environ.get("STACKFUL_DEBUG"):
    extra_compile_args += ["-O0", "-g", "-UNDEBUG"]

setup(
    ext_modules=[
        Extension(
            "stackful._native",
            sources=[
                os.path.join(NATIVE, "module.c"),
                os.path.join(NATIVE, "fiber.c"),
                os.path.join(NATIVE, "greenlet_type.c"),
                os.path.join(NATIVE, "greenlet_abi.c"),
                os.path.join(NATIVE, "thread.c"),
                os.path.join(NATIVE, "reclaim.c"),
                os.path.join(NATIVE, "overflow.c"),
                os.path.join(NATIVE, "registry.c"),
                os.path.join(NATIVE, "scheduler.c"),
                os.path.join(NATIVE, "loop.c"),
                os.path.join(NATIVE, "spawn.c"),
                os.path.join(NATIVE, "scope.c"),
                os.path.join(NATIVE, "watchdog.c"),
                os.path.join(NATIVE, "sockets.c"),
                os.path.join(NATIVE, "timers.c"),
                os.path.join(NATIVE, "poller_epoll.c"),
                os.path.join(NATIVE, "stack.c"),
                os.path.join(NATIVE, "interp_state.c"),
                switch_source(),
            ],
            depends=[os.path.join(NATIVE, h) for h in ("switch.h", "stack.h", "interp_state.h", "fiber.h",
                                                       "fiber_internal.h", "greenlet_type.h", "timers.h", "poller.h",
                                                       "scheduler.h")],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ],
    cmdclass={"build_ext": BuildExtWithAsm},
)
