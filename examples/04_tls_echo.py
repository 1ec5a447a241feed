"""04: a TLS echo server and its clients, on the stdlib's ssl module.

    python examples/04_tls_echo.py           # serve TLS on 127.0.0.1:8443 until Ctrl-C
    python examples/04_tls_echo.py --demo    # serve, run clients against it, stop

A self-signed certificate for localhost is made at start with the `openssl` command (the
example says so and stops if it is missing).  `serve_tcp(..., ssl=context)` runs each
connection's TLS handshake in that connection's own task; the handler then sees a
`stackful.ssl.SSLSocket` and uses it like any socket.  Clients wrap a cooperative socket
with `stackful.ssl.wrap_socket` (or `stackful.ssl.create_default_context().wrap_socket`).
"""

import shutil
import ssl as std_ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import stackful
from stackful import socket, ssl
from stackful.server import Server, serve_tcp


def make_certificate(directory: Path) -> tuple[Path, Path] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def echo(conn: socket.socket, addr: object) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def client(port: int, cafile: Path, message: str) -> str:
    context = ssl.create_default_context(cafile=str(cafile))  # verifies the certificate
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(message.encode())
            reply = tls.recv(1024).decode()
            return f"{reply!r} over {tls.version()}"


def run_demo(context: std_ssl.SSLContext, cafile: Path) -> None:
    started = stackful.Event()
    servers: list[Server] = []

    def ready(server: Server) -> None:
        servers.append(server)
        started.set()

    server_task = stackful.spawn(serve_tcp, echo, "127.0.0.1", 0, ssl=context, ready=ready)
    started.wait()
    server = servers[0]
    messages = ["secret one", "secret two", "secret three"]
    clients = [stackful.spawn(client, server.port, cafile, m) for m in messages]
    for task in clients:
        print("echoed", task.join())
    server.close()
    server_task.join()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        made = make_certificate(Path(tmp))
        if made is None:
            print("skipped: this example needs the openssl command to make a certificate")
            return
        cert, key = made
        context = std_ssl.SSLContext(std_ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if "--demo" in sys.argv:
            def demo() -> None:
                with stackful.timeout(30):  # a demo ends, whatever happens
                    run_demo(context, cert)

            stackful.run(demo)
        else:
            print(f"TLS echo server on 127.0.0.1:8443 (Ctrl-C to stop); certificate: {cert}")
            try:
                stackful.run(serve_tcp, echo, "127.0.0.1", 8443, ssl=context)
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
