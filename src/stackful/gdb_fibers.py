# mypy: ignore-errors
"""A gdb command that lists stackful's fibers and their Python stacks: ``stackful-fibers``.

For a process that cannot be asked (hung in C, deadlocked on the GIL) or that is gone (a
core file).  It runs no code in the inferior: it reads the fiber registry and CPython's
frames from memory, through the offsets the extension records at import in its exported
``stackful_debug_info`` (so one script serves CPython 3.11 to 3.15, whatever the build)::

    gdb -p PID      -ex "source $(python -c 'import stackful.debug as d; print(d.GDB_SCRIPT)')" \\
                    -ex stackful-fibers -batch
    gdb python core -ex "source .../stackful/gdb_fibers.py" -ex stackful-fibers -batch

Output: one block per fiber (name, state, thread id, stack size), then its Python frames,
innermost first, as ``File "...", line N in function``.  A running fiber's frames are its
thread's; a suspended one's are where it switched away.
"""

import struct

import gdb

_FIELDS_HEAD = ("version python_hex live_first fiber_live_next fiber_state fiber_cname "
                "fiber_serial fiber_thread fiber_stack fiber_stack_size fiber_py fiber_ctx "
                "thread_tstate thread_id thread_current thread_root stack_size "
                "state_suspended state_running").split()
_FIELDS_FRAMES = ("pystate_frame via_cframe cframe_current_frame pystate_base_frame "
                  "tstate_frame frame_previous frame_executable executable_tag_bits "
                  "frame_instr instr_is_previous frame_owner owner_not_python code_filename "
                  "code_name code_firstlineno code_linetable code_code bytes_size bytes_data "
                  "unicode_length unicode_state sizeof_ascii sizeof_compact").split()
_NO_OFFSET = (1 << 64) - 1
_STATES = {0: "new", 1: "running", 2: "suspended", 3: "dead"}
MAX_FIBERS = 1_000_000
MAX_FRAMES = 100


class _Memory:
    def __init__(self):
        self.inferior = gdb.selected_inferior()

    def read(self, addr, n):
        return bytes(self.inferior.read_memory(addr, n))

    def u64(self, addr):
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def i32(self, addr):
        return struct.unpack("<i", self.read(addr, 4))[0]

    def u8(self, addr):
        return self.read(addr, 1)[0]

    def cstring(self, addr, limit=256):
        if not addr:
            return None
        data = self.read(addr, limit)
        return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _info(mem):
    try:
        addr = int(gdb.parse_and_eval("(unsigned long)&stackful_debug_info"))
    except gdb.error as exc:
        raise gdb.GdbError(f"stackful is not loaded in this process ({exc})") from None
    if mem.read(addr, 8) != b"SFDEBUG\0":
        raise gdb.GdbError("stackful_debug_info is not filled (stackful not imported yet?)")
    values = struct.unpack(f"<{len(_FIELDS_HEAD) + len(_FIELDS_FRAMES)}Q",
                           mem.read(addr + 8, 8 * (len(_FIELDS_HEAD) + len(_FIELDS_FRAMES))))
    info = dict(zip(_FIELDS_HEAD + _FIELDS_FRAMES, values, strict=True))
    if info["version"] != 1:
        raise gdb.GdbError(f"stackful_debug_info version {info['version']} is unknown here")
    return info


def _unicode(mem, info, addr):
    if not addr:
        return "?"
    length = mem.u64(addr + info["unicode_length"])
    state = mem.u8(addr + info["unicode_state"])
    kind = (state >> 2) & 7
    compact = (state >> 5) & 1
    ascii_ = (state >> 6) & 1
    if not compact or length > 4096:
        return "?"
    if ascii_:
        return mem.read(addr + info["sizeof_ascii"], length).decode("ascii", "replace")
    raw = mem.read(addr + info["sizeof_compact"], length * kind)
    codec = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}.get(kind)
    return raw.decode(codec, "replace") if codec else "?"


def _varint(table, i):
    b = table[i]
    i += 1
    value = b & 63
    shift = 0
    while b & 64:
        b = table[i]
        i += 1
        shift += 6
        value |= (b & 63) << shift
    return value, i


def _line(mem, info, code, instr):
    """The line of the instruction at ``instr`` (3.11+ location table)."""
    first = mem.i32(code + info["code_firstlineno"])
    table_obj = mem.u64(code + info["code_linetable"])
    size = mem.u64(table_obj + info["bytes_size"])
    if size > 1 << 20:
        return None
    table = mem.read(table_obj + info["bytes_data"], size)
    start = code + info["code_code"]
    target = (instr - start) // 2
    if info["instr_is_previous"]:
        target = max(target, 0)
    line = first
    addr = 0
    i = 0
    while i < len(table):
        b = table[i]
        i += 1
        kind = (b >> 3) & 15
        length = (b & 7) + 1
        delta = 0
        if kind == 15:  # no location
            pass
        elif kind == 14:  # long form: line delta, end line, columns
            v, i = _varint(table, i)
            delta = -(v >> 1) if v & 1 else v >> 1
            _, i = _varint(table, i)
            _, i = _varint(table, i)
            _, i = _varint(table, i)
        elif kind == 13:  # no column
            v, i = _varint(table, i)
            delta = -(v >> 1) if v & 1 else v >> 1
        elif kind >= 10:  # one-line forms
            delta = kind - 10
            i += 2
        else:  # short form
            i += 1
        line += delta
        if addr <= target < addr + length:
            return None if kind == 15 else line
        addr += length
    return None


def _frames(mem, info, frame, end):
    out = []
    while frame and frame != end and len(out) < MAX_FRAMES:
        owner = mem.u8(frame + info["frame_owner"])
        if owner < info["owner_not_python"]:
            code = mem.u64(frame + info["frame_executable"]) & ~info["executable_tag_bits"]
            if code:
                name = _unicode(mem, info, mem.u64(code + info["code_name"]))
                filename = _unicode(mem, info, mem.u64(code + info["code_filename"]))
                instr = mem.u64(frame + info["frame_instr"])
                try:
                    line = _line(mem, info, code, instr)
                except (gdb.MemoryError, IndexError):
                    line = None
                out.append((filename, line, name))
        frame = mem.u64(frame + info["frame_previous"])
    return out


def _top_frame(mem, info, holder, offset):
    ptr = mem.u64(holder + offset)
    if info["via_cframe"]:
        return mem.u64(ptr + info["cframe_current_frame"]) if ptr else 0
    return ptr


def fibers():
    """(name, state, thread id, stack size, frames) of every fiber in the registry."""
    mem = _Memory()
    info = _info(mem)
    out = []
    fiber = mem.u64(info["live_first"])
    seen = 0
    while fiber and seen < MAX_FIBERS:
        seen += 1
        state = mem.i32(fiber + info["fiber_state"])
        name = mem.cstring(mem.u64(fiber + info["fiber_cname"]))
        if name is None:
            name = f"Fiber-{mem.u64(fiber + info['fiber_serial'])}"
        thread = mem.u64(fiber + info["fiber_thread"])
        thread_id = mem.u64(thread + info["thread_id"]) if thread else 0
        is_current = bool(thread) and mem.u64(thread + info["thread_current"]) == fiber
        stack = mem.u64(fiber + info["fiber_stack"])
        size = mem.u64(stack + info["stack_size"]) if stack else 0
        frames = []
        py = fiber + info["fiber_py"]
        if state == info["state_suspended"]:
            end = 0
            if info["pystate_base_frame"] != _NO_OFFSET:
                end = mem.u64(py + info["pystate_base_frame"])
            frames = _frames(mem, info, _top_frame(mem, info, py, info["pystate_frame"]), end)
        elif state == info["state_running"] and is_current:
            tstate = mem.u64(thread + info["thread_tstate"])
            if tstate:
                frames = _frames(mem, info, _top_frame(mem, info, tstate, info["tstate_frame"]),
                                 0)
        if state != 3:
            out.append((name, _STATES.get(state, str(state)), thread_id, size, fiber, frames))
        fiber = mem.u64(fiber + info["fiber_live_next"])
    out.reverse()  # oldest first, like stackful.debug
    return out


class StackfulFibers(gdb.Command):
    """List every stackful fiber and its Python stack: stackful-fibers."""

    def __init__(self):
        super().__init__("stackful-fibers", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        found = fibers()
        print(f"stackful: {len(found)} fibers (most recent call first)")
        for name, state, thread_id, size, addr, frames in found:
            print(f"Fiber {name!r} ({state}, thread 0x{thread_id:x}, stack {size} bytes, "
                  f"at 0x{addr:x}):")
            for filename, line, function in frames:
                print(f'  File "{filename}", line {line if line is not None else "?"} '
                      f"in {function}")
            if not frames:
                print("  (no Python frames)")


StackfulFibers()
