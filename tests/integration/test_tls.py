"""TLS: ``rediss://`` with a CA, a client certificate and key, against a redis-server that
requires client certificates (mutual TLS). The certificates are made here with openssl."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import one_error_line, run
from helpers.schedulers import start_scheduler, wait_running
from helpers.tls import Certificates, TlsRedis, make_certificates, tls_url
from helpers.workers import start_worker, wait_serving
from redbatch import AsyncProducer, Producer
from redbatch.errors import ConfigError
from redbatch.transport.connection import check_url, redacted

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if shutil.which("openssl") is None:
        message = "openssl is not on PATH (apt-get install openssl)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(certs: Certificates) -> Iterator[TlsRedis]:
    with TlsRedis(certs) as server:
        yield server


def test_round_trip_over_mutual_tls(
    tls_server: TlsRedis, namespace: str, queue: str, tmp_path: Path
) -> None:
    url = tls_server.url
    scheduler = wait_running(start_scheduler(url, namespace, log_dir=str(tmp_path)))
    worker = wait_serving(start_worker(url, namespace, [queue], log_dir=str(tmp_path)))
    try:
        with Producer.from_url(url, namespace=namespace) as producer:
            assert producer.call(queue, {"over": "tls"}, timeout=30) == {"over": "tls"}

        async def call_async() -> object:
            async with AsyncProducer.from_url(url, namespace=namespace) as producer:
                return await producer.call(queue, [1, 2], timeout=30)

        assert asyncio.run(call_async()) == [1, 2]
        status = run("status", "--redis-url", url, "--namespace", namespace, "--json")
        assert status.returncode == 0, status.stderr
        assert queue in status.stdout
    finally:
        assert worker.stop() == 0, worker.log()
        assert scheduler.stop() == 0, scheduler.log()
    assert "Traceback" not in worker.log() + scheduler.log()


def test_server_refuses_a_client_without_certificate(
    tls_server: TlsRedis, certs: Certificates, namespace: str
) -> None:
    url = tls_url(tls_server.port, certs, client=False)
    line = one_error_line(
        run("status", "--redis-url", url, "--namespace", namespace), EXIT_UNREACHABLE
    )
    assert f"cannot use Redis at rediss://127.0.0.1:{tls_server.port}" in line
    # TLS 1.3 finishes the client's handshake before the server checks: the refusal shows as
    # the server's alert, or as the connection closed under a write, depending on timing.
    assert "certificate required" in line or "EOF occurred in violation of protocol" in line


def test_plain_connection_to_the_tls_port_fails_in_one_line(
    tls_server: TlsRedis, namespace: str
) -> None:
    url = f"redis://127.0.0.1:{tls_server.port}/0"
    one_error_line(run("status", "--redis-url", url, "--namespace", namespace), EXIT_UNREACHABLE)


@pytest.mark.parametrize("command", ["status", "submit", "worker"])
def test_untrusted_server_certificate_fails_in_one_line(
    tls_server: TlsRedis, certs: Certificates, namespace: str, queue: str, command: str
) -> None:
    url = tls_url(tls_server.port, certs, ca=certs.other_ca)
    args = {
        "status": ["status"],
        "submit": ["submit", queue, "1", "--timeout", "5"],
        "worker": ["worker", queue, "--handler", "redbatch.handlers:echo"],
    }[command]
    line = one_error_line(
        run(*args, "--redis-url", url, "--namespace", namespace), EXIT_UNREACHABLE
    )
    assert "certificate verify failed" in line


@pytest.mark.parametrize("command", ["status", "submit", "worker", "scheduler"])
def test_missing_certificate_file_is_a_setting_error(
    certs: Certificates, tmp_path: Path, queue: str, command: str
) -> None:
    missing = tmp_path / "nope.crt"
    url = f"rediss://127.0.0.1:1/0?ssl_ca_certs={missing}"
    args = {
        "status": ["status"],
        "submit": ["submit", queue, "1"],
        "worker": ["worker", queue, "--handler", "redbatch.handlers:echo"],
        "scheduler": ["scheduler"],
    }[command]
    line = one_error_line(run(*args, "--redis-url", url), EXIT_CONFIG)
    assert f"cannot read TLS file ssl_ca_certs={missing}: No such file or directory" in line


def test_unreadable_or_wrong_files_are_setting_errors(certs: Certificates, tmp_path: Path) -> None:
    not_pem = tmp_path / "garbage.crt"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="is not a CA certificate"):
        check_url(f"rediss://h:1/0?ssl_ca_certs={not_pem}")
    # The CA's certificate with the client's key: they do not belong together.
    mismatched = f"ssl_certfile={certs.ca}&ssl_keyfile={certs.client_key}"
    with pytest.raises(ConfigError, match="not a certificate with its private key"):
        check_url(f"rediss://h:1/0?{mismatched}")
    with pytest.raises(ConfigError, match="without ssl_certfile"):
        check_url(f"rediss://h:1/0?ssl_keyfile={certs.client_key}")
    with pytest.raises(ConfigError, match="cannot read TLS file ssl_certfile"):
        check_url(f"rediss://h:1/0?ssl_certfile={tmp_path}/missing.crt")


def test_tls_parameters_need_rediss_and_typos_are_refused(certs: Certificates) -> None:
    with pytest.raises(ConfigError, match="ssl_ca_certs needs TLS, a rediss:// URL"):
        check_url(f"redis://h:1/0?ssl_ca_certs={certs.ca}")
    with pytest.raises(ConfigError, match="unknown parameter 'ssl_ca_cert'"):
        check_url(f"rediss://h:1/0?ssl_ca_cert={certs.ca}")
    # What redis-py reads from a URL still passes.
    assert check_url("redis://h:1/0?socket_timeout=2&client_name=x&protocol=3")
    assert check_url(f"rediss://h:1/0?ssl_ca_certs={certs.ca}&ssl_check_hostname=false")


def test_key_passphrase_is_masked_in_logs() -> None:
    url = "rediss://u:secret@h:1/0?ssl_password=hunter2&ssl_ca_certs=/x/ca.crt"
    shown = redacted(url)
    assert "secret" not in shown
    assert "hunter2" not in shown
    assert shown == "rediss://u:***@h:1/0?ssl_password=***&ssl_ca_certs=/x/ca.crt"


def test_urls_without_secrets_are_shown_as_given() -> None:
    for url in ("unix:///tmp/redis.sock", "redis://h:1/0", "rediss://h:1/0?ssl_ca_certs=/x"):
        assert redacted(url) == url
    assert redacted("unix://:pw@/tmp/redis.sock") == "unix://:***@/tmp/redis.sock"
