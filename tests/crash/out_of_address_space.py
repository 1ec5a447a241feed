"""When the system refuses a stack, spawning raises MemoryError naming the limits."""

import resource

import stackful

# Leave the interpreter room to run, but not for a 64 GiB stack.
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
try:
    stackful.Fiber(lambda: None, stack_size=64 << 30).switch()
except MemoryError as e:
    print("MemoryError:", e)
else:
    print("no error")
# Still usable afterwards.
print(stackful.Fiber(lambda: "alive", stack_size=64 * 1024).switch())
