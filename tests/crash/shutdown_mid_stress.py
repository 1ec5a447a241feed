"""Exit while stress pools in four threads (and the main one) hold suspended fibers
sitting in except/finally blocks, deep recursion and generators: exit code 0,
no fatal error, atexit handlers run."""

import atexit
import random
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent.parent))
from tests.stress import Stress  # noqa: E402

pools = []
lock = threading.Lock()


def run(seed: int) -> None:
    s = Stress(exact=False)  # several runs at once: counters are shared
    rnd = random.Random(seed)
    for _ in range(400):
        s.random_op(rnd)
    with lock:
        pools.append(s)  # never closed: its fibers stay suspended


threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
run(99)
suspended = sum(1 for s in pools for f in s.world.fibers.values() if f.state == "suspended")
atexit.register(lambda: print("atexit ran", flush=True))
print(f"{suspended} suspended in {len(threads)} threads and the main one", flush=True)
