"""SQLAlchemy's asyncio extension (AsyncSession on aiosqlite) and stackful.aio.

Three ways, each in a child interpreter (SQLAlchemy's asyncio extension imports greenlet,
which the test process must not see):

* ``direct``: SQLAlchemy's own bridge, ``greenlet_spawn`` / ``await_``, replaced by
  ``stackful.aio.run_sync`` / ``await_`` (one to one); no greenlet is ever made.
* ``plain``: a plain function drives an ``AsyncSession`` through ``stackful.aio.await_``,
  SQLAlchemy's bridge on the real greenlet underneath.
* ``plain-on-stackful-greenlet``: the same with ``stackful.greenlet`` installed as greenlet.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from ._support import child_env

for _needed in ("sqlalchemy", "aiosqlite", "greenlet"):
    if importlib.util.find_spec(_needed) is None:  # find_spec: importing would import greenlet
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

SCRIPT = r"""
import asyncio
import sys

import stackful.aio
from stackful.aio import await_, run_sync

mode, path = sys.argv[1], sys.argv[2]
bridged_calls = 0

if mode == "direct":
    from sqlalchemy.util import concurrency

    async def greenlet_spawn(fn, *args, _require_await=False, **kwargs):
        global bridged_calls
        bridged_calls += 1
        return await run_sync(fn, *args, **kwargs)

    def no_greenlet(*args, **kwargs):
        raise AssertionError("a greenlet was made")

    concurrency.greenlet_spawn = greenlet_spawn
    concurrency.await_ = concurrency.await_only = await_
    concurrency.in_greenlet = stackful.aio.in_bridge
    concurrency._concurrency_shim._initialize()
    concurrency._concurrency_shim._AsyncIoGreenlet = no_greenlet
elif mode == "plain-on-stackful-greenlet":
    import stackful.greenlet
    stackful.greenlet.install()

from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(40))


async def count(session):
    return (await session.execute(select(func.count()).select_from(Note))).scalar_one()


async def main():
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        session.add_all([Note(text="first"), Note(text="second")])
        await session.commit()
        texts = (await session.scalars(select(Note.text).order_by(Note.id))).all()
        assert texts == ["first", "second"], texts
        session.add(Note(text="doomed"))
        await session.flush()
        assert await count(session) == 3
        await session.rollback()
        assert await count(session) == 2
    await engine.dispose()


def plain_main():
    # Plain code: every step of the async API is awaited through the bridge.
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    conn = await_(engine.connect())
    await_(conn.run_sync(Base.metadata.create_all))
    await_(conn.commit())
    await_(conn.close())
    session = AsyncSession(engine)
    try:
        session.add_all([Note(text="first"), Note(text="second")])
        await_(session.commit())
        texts = await_(session.scalars(select(Note.text).order_by(Note.id))).all()
        assert texts == ["first", "second"], texts
        session.add(Note(text="doomed"))
        await_(session.flush())
        assert await_(count(session)) == 3
        await_(session.rollback())
        assert await_(count(session)) == 2
    finally:
        await_(session.close())
    await_(engine.dispose())


async def bounded():
    async with asyncio.timeout(60):
        if mode == "direct":
            await main()
        else:
            await run_sync(plain_main)

asyncio.run(bounded())
if mode == "direct":
    assert bridged_calls > 5, bridged_calls  # and no_greenlet was never called
print(f"{mode} ok, {bridged_calls} bridged calls")
"""


@pytest.mark.parametrize("mode", ["direct", "plain", "plain-on-stackful-greenlet"])
def test_async_session_round_trip(mode: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(tmp_path / "notes.db")],
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{mode} ok")
