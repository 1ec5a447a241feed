"""Exit the interpreter with suspended fibers in several threads: exit code 0, atexit runs."""

import atexit
import threading

import stackful

keep = []


def park_some() -> None:
    root = stackful.current()
    for i in range(5):
        f = stackful.Fiber(lambda: root.switch(), name=f"parked-{i}")
        f.switch()
        keep.append(f)


threads = [threading.Thread(target=park_some) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
park_some()
atexit.register(lambda: print("atexit ran", flush=True))
print("parked", len(keep), flush=True)
