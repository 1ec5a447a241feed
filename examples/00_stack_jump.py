"""00: jump onto a stack we allocated, and come back.

The seeds' first program writes the address of `hello` at the top of a 48-byte
array, points rsp there and `ret`s into it; it never returns.  Here the same
jump happens under a fiber: stackful maps a stack (with a guard page below it),
lays out a fresh context at its top whose saved return address is the entry
trampoline, and the first switch `ret`s into it.  We print the layout, prove
from the new stack that the stack pointer lies inside it, and come back.
"""

import stackful
from stackful import _native

STACK_SIZE = 64 * 1024


def hello() -> tuple[int, stackful.StackInfo]:
    sp = _native.stack_pointer()
    print("I LOVE WAKING UP ON A NEW STACK!")
    info = stackful.current().stack_info()
    assert info is not None and info.base <= sp < info.top
    print(f"  my stack pointer {sp:#x} is inside the new stack [{info.base:#x}, {info.top:#x})")
    return sp, info


def main() -> None:
    layout = _native.switch_frame_layout()
    on_thread_stack = _native.stack_pointer()
    fiber = stackful.Fiber(hello, name="hello", stack_size=STACK_SIZE)
    sp, info = fiber.switch()  # the first switch `ret`s into the entry trampoline
    fresh_sp = info.top - layout["fresh_sp_below_top"]
    print(f"""
layout of the new stack ({layout['abi']}):
  {info.top:#x}  top (16-byte aligned: {info.top % 16 == 0})
  {fresh_sp + layout['return_address']:#x}  entry trampoline's address: what the first `ret` pops
  {fresh_sp + layout['entry']:#x}  saved register holding the entry function
  {fresh_sp + layout['arg']:#x}  saved register holding the fiber
  {fresh_sp:#x}  the fresh context's stack pointer ({layout['frame_size']}-byte switch frame)
  {sp:#x}  where hello() ran, {info.top - sp} bytes below the top
  {info.base:#x}  base; a {info.guard_size}-byte guard page sits just below (top is kept mid-page)
back on the thread's own stack at {on_thread_stack:#x}; the fiber is {fiber.state}""")
    pool = stackful.stack_pool()
    print(f"its stack went back to the pool ({pool['pooled']} pooled; "
          f"guards by {pool['guard_method']})")


if __name__ == "__main__":
    main()
