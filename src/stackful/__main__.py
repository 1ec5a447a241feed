"""``python -m stackful``: the seeds' green-threads demo, on the stackful runtime.

Each green thread prints that it starts, counts while yielding to the others after every
line (the seeds' ``t_yield``), and prints that it finished; the round-robin ready queue
interleaves their lines exactly as the book's ``Runtime`` does.  Thread ``k`` counts to
``5 * (k + 1)``: 10 for the first, 15 for the second, as in the book.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._native import MIN_STACK_SIZE
from .runtime_api import Runtime, spawn, yield_now


def green_thread(thread_id: int, count: int) -> None:
    """One of the book's threads: start, count with a yield after each line, finish."""
    print(f"THREAD {thread_id} STARTING")
    for i in range(count):
        print(f"thread: {thread_id} counter: {i}")
        yield_now()
    print(f"THREAD {thread_id} FINISHED")


def demo(threads: int, stack_size: int | None) -> None:
    """Spawn the threads and wait for all of them (the book's ``runtime.run()``)."""
    tasks = [
        spawn(green_thread, k, 5 * (k + 1), name=f"thread-{k}", stack_size=stack_size)
        for k in range(1, threads + 1)
    ]
    for task in tasks:
        task.join()


def _stack_size(text: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    suffix = text[-1:].lower()
    try:
        size = int(text[:-1]) * units[suffix] if suffix in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 65536, 64k or 2m)") from None
    if size < MIN_STACK_SIZE:
        raise argparse.ArgumentTypeError(f"stack size must be at least {MIN_STACK_SIZE} bytes")
    return size


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the demo (or read a dump: ``show``/``tree``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] in (["show"], ["tree"]):
        from .debug import main as debug_main

        return debug_main(args_list)
    parser = argparse.ArgumentParser(
        prog="python -m stackful",
        description="Green threads that count and yield to each other, on stackful fibers. "
                    "'python -m stackful show|tree DUMP.json' reads a JSON dump instead.",
    )
    parser.add_argument("--threads", type=int, default=2, metavar="N",
                        help="number of green threads (default: 2, as in the book)")
    parser.add_argument("--stack-size", type=_stack_size, default=None, metavar="BYTES",
                        help="stack size of each thread, e.g. 65536, 64k or 2m "
                             "(default: the core's default)")
    args = parser.parse_args(args_list)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    Runtime().run(demo, args.threads, args.stack_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
