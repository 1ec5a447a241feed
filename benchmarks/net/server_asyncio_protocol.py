"""asyncio protocol server (``loop.create_server``); ``--uvloop`` runs it on uvloop's loop."""

from __future__ import annotations

import asyncio
import sys

from protocol import BACKLOG, HOST, announce, http_replies, parse_args


class HttpProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        replies, self.pending = http_replies(self.pending + data)
        if replies:
            self.transport.write(replies)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def main() -> None:
    use_uvloop = "--uvloop" in sys.argv
    if use_uvloop:
        sys.argv.remove("--uvloop")
    workload, port = parse_args(__doc__ or "")
    if use_uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    protocol = HttpProtocol if workload == "http" else EchoProtocol
    server = loop.run_until_complete(
        loop.create_server(protocol, HOST, port, backlog=BACKLOG))
    announce(server.sockets[0].getsockname()[1])
    loop.run_forever()


if __name__ == "__main__":
    main()
