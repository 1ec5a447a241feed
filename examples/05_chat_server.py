"""05: a chat server -- what one client says, everyone hears, broadcast through channels.

    python examples/05_chat_server.py           # serve on 127.0.0.1:8023 until Ctrl-C
    python examples/05_chat_server.py --demo    # serve, let three clients chat, stop

(Try it by hand with `nc 127.0.0.1 8023` in a few terminals.)  Each connection has two tasks:
its handler reads lines and sends them into the room's channel; a writer drains the
connection's own outbox channel into the socket.  The room's task receives every message
and offers it to each outbox without waiting: a member whose outbox is full is too slow and
is dropped, so one stuck client never holds up the room.
"""

import sys
from collections.abc import Callable

import stackful
from stackful import Channel, Send, select, socket
from stackful.server import Server, serve_tcp


class Room:
    def __init__(self) -> None:
        self.messages: Channel[str] = Channel(100)
        self.outboxes: dict[str, Channel[str]] = {}

    def run(self) -> None:
        """The room's task: forward each message to every member's outbox."""
        for message in self.messages:
            for name, outbox in list(self.outboxes.items()):
                try:
                    select(Send(outbox, message), timeout=0)
                except TimeoutError:
                    self.leave(name)  # its outbox is full: too slow to keep

    def join(self, name: str) -> tuple[str, Channel[str]]:
        while name in self.outboxes:
            name += "_"
        outbox: Channel[str] = Channel(100)
        self.outboxes[name] = outbox
        return name, outbox

    def leave(self, name: str) -> None:
        outbox = self.outboxes.pop(name, None)
        if outbox is not None:
            outbox.close()  # its writer sends what is left, then ends

    def say(self, message: str) -> None:
        self.messages.send(message)


def write_out(conn: socket.socket, outbox: Channel[str]) -> None:
    try:
        for message in outbox:
            conn.sendall(message.encode() + b"\n")
    except OSError:
        pass  # the connection went away (reset, or closed under us)


def chat(room: Room, conn: socket.socket, addr: object) -> None:
    with conn.makefile("r", encoding="utf-8", newline="\n") as lines:
        conn.sendall(b"your name?\n")
        name, outbox = room.join(lines.readline().strip() or "guest")
        writer = stackful.spawn(write_out, conn, outbox)
        try:
            room.say(f"* {name} joined")
            for line in lines:
                room.say(f"{name}: {line.rstrip()}")
        finally:
            room.leave(name)
            writer.join()
        room.say(f"* {name} left")


def serve(room: Room, port: int, ready: Callable[[Server], object] | None = None) -> None:
    room_task = stackful.spawn(room.run, name="room")
    try:
        serve_tcp(lambda conn, addr: chat(room, conn, addr), "127.0.0.1", port, ready=ready)
    finally:
        room_task.cancel()


class Client:
    """A demo client: says things, and reads what the room says until an expected line."""

    def __init__(self, port: int, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.lines = self.sock.makefile("r", encoding="utf-8", newline="\n")
        self.seen: list[str] = []
        self.lines.readline()  # "your name?"
        self.sock.sendall(name.encode() + b"\n")

    def say(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def expect(self, line: str) -> None:
        while (got := self.lines.readline().rstrip("\n")) != line:
            assert got, f"connection closed before {line!r}"
            self.seen.append(got)
        self.seen.append(got)

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def run_demo() -> None:
    room = Room()
    started = stackful.Event()
    servers: list[Server] = []

    def ready(server: Server) -> None:
        servers.append(server)
        started.set()

    server_task = stackful.spawn(serve, room, 0, ready)
    started.wait()
    port = servers[0].port
    people: list[Client] = []
    for name in ("alice", "bob", "carol"):
        people.append(Client(port, name))
        for c in people:  # everyone present hears the newcomer
            c.expect(f"* {name} joined")
    alice, bob, carol = people
    alice.say("hi all")
    for c in people:
        c.expect("alice: hi all")
    bob.say("hello alice")
    for c in people:
        c.expect("bob: hello alice")
    carol.close()
    for c in (alice, bob):
        c.expect("* carol left")
    for c in people:
        print(f"{c.seen[0].split()[1]:>5} heard: " + " | ".join(c.seen[1:]))
    alice.close()
    bob.close()
    servers[0].close()
    server_task.join()


def demo() -> None:
    with stackful.timeout(30):  # a demo ends, whatever happens
        run_demo()


if __name__ == "__main__":
    if "--demo" in sys.argv:
        stackful.run(demo)
    else:
        print("chat server on 127.0.0.1:8023 (Ctrl-C to stop)")
        try:
            stackful.run(serve, Room(), 8023)
        except KeyboardInterrupt:
            pass
