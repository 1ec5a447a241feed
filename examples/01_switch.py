"""01: two fibers switching back and forth, as the seeds' `switch(old, new)` does.

Each switch saves the running fiber's callee-saved registers on its own stack,
loads the other's and resumes it where it left off; the values passed to
switch() travel with it.
"""

import stackful


def ping(rounds: int) -> str:
    for i in range(rounds):
        print(f"ping {i}")
        pong_fiber.switch(i)  # resume pong; returns when pong switches back
    return "ping done"


def pong(first: int) -> None:
    value = first
    while True:
        print(f"  pong got {value}")
        value = ping_fiber.switch()  # resume ping


ping_fiber = stackful.Fiber(ping, name="ping")
pong_fiber = stackful.Fiber(pong, name="pong")

if __name__ == "__main__":
    print(ping_fiber.switch(3))  # ping's return value comes back to its parent: us
    pong_fiber.kill()  # pong is parked in its loop: unwind it
    assert ping_fiber.dead and pong_fiber.dead
