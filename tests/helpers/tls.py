"""Certificates made with ``openssl`` for the TLS tests, and a redis-server that speaks TLS only.

Debian's redis-server is built with TLS. The server requires client certificates
(``--tls-auth-clients yes``, mutual TLS), listens on its TLS port only (``--port 0``), and is
probed for readiness over TLS with the client certificate.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from helpers.servers import suite_server
from redbatch.embedded import EmbeddedRedis

_HOST = "127.0.0.1"
_DAYS = "2"


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, a server and a client certificate it signed, and a stranger CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signed nothing here: trusting it alone must fail verification


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", _DAYS, "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory,
    )  # fmt: skip


def _make_signed(directory: Path, name: str, ca: str, extensions: str) -> None:
    """A key and a certificate for ``name`` signed by ``ca``, with X.509v3 ``extensions``."""
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", _DAYS, "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip


def make_certificates(directory: Path) -> Certificates:
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    # The client checks the server's name (redis-py's ssl_check_hostname is on by default).
    _make_signed(
        directory, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth\n",
    )  # fmt: skip
    _make_signed(directory, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return Certificates(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
    )


def tls_url(port: int, certs: Certificates, *, ca: Path | None = None, client: bool = True) -> str:
    """``rediss://`` URL trusting ``ca`` (default: the right one), with the client
    certificate unless ``client`` is False."""
    params = {"ssl_ca_certs": str(ca or certs.ca)}
    if client:
        params |= {"ssl_certfile": str(certs.client_cert), "ssl_keyfile": str(certs.client_key)}
    return f"rediss://{_HOST}:{port}/0?{urlencode(params)}"


class TlsRedis(EmbeddedRedis):
    """A private redis-server reachable only over mutual TLS."""

    def __init__(self, certs: Certificates) -> None:
        super().__init__(command=suite_server().command)
        self.certs = certs

    @property
    def url(self) -> str:
        return tls_url(self.port, self.certs)

    def _command(self, path: str) -> list[str]:
        # Later arguments win: the TLS port is the one picked, the plain port is closed.
        return [
            *super()._command(path),
            "--tls-port", str(self.port), "--port", "0",
            "--tls-cert-file", str(self.certs.server_cert),
            "--tls-key-file", str(self.certs.server_key),
            "--tls-ca-cert-file", str(self.certs.ca),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip

    def _answers_ping(self, pid: int) -> bool:
        client = redis.Redis.from_url(
            self.url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        try:
            info = client.info("server")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return bool(info.get("process_id") == pid)
