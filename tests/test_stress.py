"""The stress machine of tests/stress.py, driven by hypothesis (the short CI profile).

Each rule is one kind of operation; its random choices come from a seeded
`random.Random` that hypothesis draws, so a failure shrinks to a short list
of operations and replays.  The odd places fibers sit in (tests/stress_places.py) come
through `send`; worker threads that exit with parked fibers through `thread`.  The long
profile is `python -m tests.stress`.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.stress import Stress, main

from ._support import child_env

randoms = st.randoms(use_true_random=False)


class FiberMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = Stress()

    @rule(rnd=randoms)
    def create(self, rnd: random.Random) -> None:
        self.s.op_create(rnd)

    @rule(rnd=randoms)
    def send(self, rnd: random.Random) -> None:
        self.s.op_send(rnd)

    @rule(rnd=randoms)
    def send_again(self, rnd: random.Random) -> None:  # switching dominates real use
        self.s.op_send(rnd)

    @rule(rnd=randoms)
    def throw(self, rnd: random.Random) -> None:
        self.s.op_throw(rnd)

    @rule(rnd=randoms)
    def kill(self, rnd: random.Random) -> None:
        self.s.op_kill(rnd)

    @rule(rnd=randoms)
    def drop(self, rnd: random.Random) -> None:
        self.s.op_drop(rnd)

    @rule(rnd=randoms)
    def reparent(self, rnd: random.Random) -> None:
        self.s.op_reparent(rnd)

    @rule(rnd=randoms)
    def context(self, rnd: random.Random) -> None:
        self.s.op_context(rnd)

    @precondition(lambda self: len(self.s.model.gens) < 4)
    @rule(rnd=randoms)
    def shared(self, rnd: random.Random) -> None:
        self.s.op_shared(rnd)

    @rule(rnd=randoms)
    def switch_dead(self, rnd: random.Random) -> None:
        self.s.op_switch_dead(rnd)

    @rule(rnd=randoms)
    def collect(self, rnd: random.Random) -> None:
        self.s.op_collect(rnd)

    @rule(rnd=randoms)
    def thread(self, rnd: random.Random) -> None:
        self.s.op_thread(rnd)

    @precondition(lambda self: bool(self.s.world.foreign))
    @rule(rnd=randoms)
    def drop_foreign(self, rnd: random.Random) -> None:
        self.s.op_drop_foreign(rnd)

    @invariant()
    def matches_model(self) -> None:
        self.s.check()

    def teardown(self) -> None:
        self.s.close()


TestFiberMachine = FiberMachine.TestCase
# Fewer examples where every operation is slow (CI's arm64 run under qemu-user sets 15).
EXAMPLES = int(os.environ.get("STACKFUL_STRESS_EXAMPLES", "60"))
TestFiberMachine.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# The in-process profiles take seconds: a run still going after this fails, never hangs.
PROFILE_TIME_LIMIT = "300"


def test_seeded_profile_counts_its_operations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ops", "3000", "--seed", "7", "--time-limit", PROFILE_TIME_LIMIT]) == 0
    out = capsys.readouterr().out
    assert "3000 operations" in out and ": ok" in out


def test_seeded_profile_on_several_threads_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ops", "2000", "--seed", "11", "--threads", "4",
                 "--time-limit", PROFILE_TIME_LIMIT]) == 0
    assert "2000 operations" in capsys.readouterr().out


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.stress", "--ops", "500", "--seed", "3"],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300,
        env=child_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "500 operations" in result.stdout
