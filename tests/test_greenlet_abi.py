"""greenlet's C API and instance layout, driven by a C extension built as greenlet's users are.

tests/native/greenlet_client.c takes the ``greenlet._C_API`` capsule through ``import
greenlet`` (install() makes that stackful.greenlet), calls each slot of greenlet.h's table,
and subclasses the greenlet type in C with fields of its own after greenlet's 40-byte
``PyGreenlet``, as Cython lays out gevent's ``Greenlet``.  It runs in a subprocess, so that
install() never meets a real greenlet that another test imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import stackful

SOURCE = Path(__file__).parent / "native" / "greenlet_client.c"
SRC = Path(stackful.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the built greenlet_client extension."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    if not shutil.which(cc[0]):
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("greenlet_client")
    target = out / ("greenlet_client" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([*cc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror",
                    f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(target)],
                   check=True, timeout=120)
    return out


def run_client(client_dir: Path, body: str) -> str:
    """Run `body` after install() with greenlet_client imported; its stdout."""
    code = "import stackful.greenlet\nstackful.greenlet.install()\nimport greenlet\n" \
           "import greenlet_client as C\n" + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(client_dir), str(SRC)])}
    done = subprocess.run([sys.executable, "-X", "dev", "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_type_has_greenlets_layout(client_dir: Path) -> None:
    out = run_client(client_dir, """
        size, basic, weaklist, dict_, pimpl = C.layout()
        assert basic == size == 5 * 8 == greenlet.greenlet.__basicsize__, (size, basic)
        assert (weaklist, dict_, pimpl) == (16, 24, 32)
        print("ok")
    """)
    assert out.strip() == "ok"


def test_the_capsule_holds_the_type_and_exceptions(client_dir: Path) -> None:
    out = run_client(client_dir, """
        t, err, exit_ = C.objects()
        assert t is greenlet.greenlet
        assert err is greenlet.error and exit_ is greenlet.GreenletExit
        print("ok")
    """)
    assert out.strip() == "ok"


def test_new_switch_and_getcurrent_through_the_table(client_dir: Path) -> None:
    out = run_client(client_dir, """
        main = C.getcurrent()
        assert main is greenlet.getcurrent()
        g = C.new(lambda a, b=0: main.switch(a + b) * 2)
        assert g.parent is main
        assert C.switch(g, 1, b=2) == 3          # args tuple and kwargs dict
        assert C.flags(g) == (0, 1, 1)           # not main, started, active
        assert C.switch(g, 5) == 10              # resumed: one argument comes back as itself
        assert C.flags(g) == (0, 1, 0) and g.dead
        assert C.flags(main) == (1, 1, 1)
        assert C.get_parent(main) is None        # NULL without an exception
        assert C.get_parent(g) is main
        print("ok")
    """)
    assert out.strip() == "ok"


def test_new_with_a_parent_and_set_parent(client_dir: Path) -> None:
    out = run_client(client_dir, """
        main = greenlet.getcurrent()
        p = greenlet.greenlet(lambda: "p ran")
        g = C.new(lambda: "g ran", p)
        assert g.parent is p
        q = greenlet.greenlet(lambda x: "q got " + x)  # started by g's end, with its result
        C.set_parent(g, q)
        assert C.get_parent(g) is q
        try:
            C.set_parent(g, 42)
        except TypeError:
            pass
        else:
            raise AssertionError("a parent that is not a greenlet was taken")
        print(C.switch(g))
    """)
    assert out.strip() == "q got g ran"


def test_throw_through_the_table(client_dir: Path) -> None:
    out = run_client(client_dir, """
        main = greenlet.getcurrent()
        def body():
            try:
                main.switch()
            except KeyError as e:
                return "caught " + e.args[0]
        g = greenlet.greenlet(body)
        g.switch()
        print(C.throw(g, KeyError, "k"))
        h = greenlet.greenlet(lambda: main.switch())
        h.switch()
        r = C.throw(h, greenlet.GreenletExit)
        assert isinstance(r, greenlet.GreenletExit) and h.dead
    """)
    assert out.strip() == "caught k"


def test_the_table_refuses_what_is_not_a_greenlet(client_dir: Path) -> None:
    out = run_client(client_dir, """
        for call in (lambda: C.switch("no"), lambda: C.flags("no"), lambda: C.get_parent(3),
                     lambda: C.throw(3, KeyError)):
            try:
                call()
            except TypeError:
                pass
            else:
                raise AssertionError("took a non-greenlet")
        print("ok")
    """)
    assert out.strip() == "ok"


def test_a_c_subclass_keeps_its_own_fields_across_switches(client_dir: Path) -> None:
    out = run_client(client_dir, """
        import gc
        main = greenlet.getcurrent()
        def body(n):
            me = greenlet.getcurrent()
            for i in range(n):
                me.check().append(i)
                main.switch(i)
            return "done"
        subs = [C.Sub(body) for _ in range(50)]
        for s in subs:
            assert s.switch(3) == 0
        gc.collect()
        for s in subs:
            assert s.switch() == 1
            assert s.switch() == 2
            assert s.switch() == "done"
            assert s.check() == [0, 1, 2]
        print("ok")
    """)
    assert out.strip() == "ok"


def test_a_dropped_suspended_c_subclass_is_killed_as_itself(client_dir: Path) -> None:
    out = run_client(client_dir, """
        import weakref
        main = greenlet.getcurrent()
        seen = []
        def body():
            me_ref = weakref.ref(greenlet.getcurrent())
            del_me = None
            try:
                main.switch()
            except greenlet.GreenletExit:
                me = greenlet.getcurrent()
                seen.append((type(me).__name__, me_ref() is me, me.check() == []))
        s = C.Sub(body)
        s.switch()
        del s
        print(seen)
    """)
    assert out.strip() == "[('Sub', True, True)]"
