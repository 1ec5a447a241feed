"""The runtime model of tests/runtime_model.py, driven by hypothesis (the short CI profile).

Each example is one ``run()`` whose operations come from a ``random.Random`` that hypothesis
draws, so a failure shrinks and replays.  ``STACKFUL_MODEL_EXAMPLES=N`` runs more examples;
the long profile is ``python -m tests.runtime_model --ops N``.  The last tests check that the
model is not blind: with a known race put back, it must fail.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackful import Cancelled
from stackful._core._run import Runtime, _held_by_shield
from stackful.lowlevel import call_shielded
from stackful.sync import Condition
from tests.runtime_model import ModelError, main, run_session

from ._support import child_env

EXAMPLES = int(os.environ.get("STACKFUL_MODEL_EXAMPLES", "150"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rnd=st.randoms(use_true_random=False), nops=st.integers(1, 80))
def test_runtime_keeps_its_promises(rnd: random.Random, nops: int) -> None:
    run_session(rnd, nops)


def test_seeded_profile_counts_its_operations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ops", "3000", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "3000 operations in" in out and ": ok" in out


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.runtime_model", "--ops", "300", "--seed", "3"],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300,
        env=child_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "300 operations in" in result.stdout


def _model_fails_within(sessions: int) -> str:
    for seed in range(sessions):
        try:
            run_session(random.Random(seed), 60)
        except ModelError as exc:
            return str(exc)
    return ""


def test_model_sees_a_notification_dropped_by_a_cancelled_waiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def wait_without_passing_on(self: Condition, timeout: Any = None) -> bool:
        task = self._check_owner("wait")
        self._lock.release()
        try:
            ok, _ = self._waiters.park_for(task, "Condition.wait", timeout)
        except BaseException as exc:
            call_shielded(self._lock.acquire, exc)
            raise
        call_shielded(self._lock.acquire)  # a notified waiter may fail here, and keep it
        return bool(ok)

    monkeypatch.setattr(Condition, "wait", wait_without_passing_on)
    assert "lost notification" in _model_fails_within(400)


def test_model_sees_an_outer_timeout_lost_to_an_inner_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt_last_one_wins(self: Runtime, task: Any, exc: BaseException) -> None:
        if task.state == "finished":
            return
        if task._scopes and _held_by_shield(task, exc):
            return  # shields still hold (the model has shielded scopes)
        if task.state == "blocked":
            abort, task._abort = task._abort, None
            if abort is not None:
                abort()
            task._resume_exc = exc
            task.state = "ready"
            self.ready.append(task)
        elif task._pending_exc is None or isinstance(exc, Cancelled):
            task._pending_exc = exc

    monkeypatch.setattr(Runtime, "interrupt", interrupt_last_one_wins)
    assert "expired while it waited" in _model_fails_within(400)


def test_model_sees_a_group_that_drops_a_child_s_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from stackful._core._group import TaskGroup

    original = TaskGroup._child_finished

    def forgetful(self: TaskGroup, task: Any) -> None:
        original(self, task)
        if self._failures:
            self._failures.pop()  # the newest failure vanishes

    monkeypatch.setattr(TaskGroup, "_child_finished", forgetful)
    assert "group of" in _model_fails_within(400)
