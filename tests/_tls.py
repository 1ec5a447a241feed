"""A self-signed certificate for the TLS tests, and contexts that trust it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def make_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A fresh self-signed certificate for localhost (and 127.0.0.1, ::1) made with the
    ``openssl`` command, as (cert, key); None when the command is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="session", name="certificate")
def certificate_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert, key): generated for this run, else the throwaway pair shipped in tests/data."""
    made = make_certificate(tmp_path_factory.mktemp("tls"))
    if made is not None:
        return made
    return DATA / "throwaway_cert.pem", DATA / "throwaway_key.pem"


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*certificate)
    return ctx


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certificate[0])
    return ctx
