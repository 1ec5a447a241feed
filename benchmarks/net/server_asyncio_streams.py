"""asyncio streams server (``asyncio.start_server``): a coroutine per connection."""

from __future__ import annotations

import asyncio

from protocol import BACKLOG, HOST, RECV_SIZE, announce, http_replies, parse_args


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pending = b""
    try:
        while data := await reader.read(RECV_SIZE):
            replies, pending = http_replies(pending + data)
            if replies:
                writer.write(replies)
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RECV_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main() -> None:
    workload, port = parse_args(__doc__ or "")
    handler = serve_http if workload == "http" else serve_echo
    server = await asyncio.start_server(handler, HOST, port, backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
