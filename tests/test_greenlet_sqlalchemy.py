"""A real greenlet user on stackful.greenlet: SQLAlchemy's asyncio extension.

SQLAlchemy imports greenlet as soon as it is imported, so the round trip runs in a
child interpreter that calls ``install()`` first; the test process never sees it.
With ``GREENLET_UNDER_TEST=greenlet`` the same script runs on the real greenlet.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

UNDER_TEST = os.environ.get("GREENLET_UNDER_TEST", "stackful")

for _needed in ("sqlalchemy", "aiosqlite"):
    if importlib.util.find_spec(_needed) is None:  # find_spec: importing would import greenlet
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

ROUND_TRIP = r"""
import asyncio
import sys

if sys.argv[2] == "stackful":
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


async def count(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(Note))).scalar_one()


async def main(path: str) -> None:
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
    async with AsyncSession(engine) as session:  # a fresh connection sees the same rows
        assert await count(session) == 2
    await engine.dispose()


asyncio.run(main(sys.argv[1]))

import greenlet
from sqlalchemy.util import concurrency

used = concurrency._concurrency_shim.greenlet
assert used is greenlet.greenlet
print(f"round trip ok on {greenlet.__name__}")
if sys.argv[2] == "stackful":
    assert greenlet is stackful.greenlet and used is stackful.greenlet.greenlet
"""


def test_sqlalchemy_async_session_round_trip(tmp_path: Path) -> None:
    env = dict(os.environ)
    if UNDER_TEST == "stackful":
        import stackful.greenlet

        src = str(Path(stackful.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, str(tmp_path / "notes.sqlite3"), UNDER_TEST],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "stackful.greenlet" if UNDER_TEST == "stackful" else "greenlet"
    assert done.stdout.strip() == f"round trip ok on {expected}"
