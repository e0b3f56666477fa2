"""Scraping a process's Prometheus endpoint over HTTP, as Prometheus does."""

from __future__ import annotations

import random
import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    """A port nothing listens on (bound and released: nothing else should take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive ports nothing listens on (a pool serves its children
    on the ports after its own). Taken below the kernel's ephemeral range: a port picked by
    binding to 0 lies inside it, and the next one up was once a live outgoing connection's
    (a pool child then failed with "Address already in use")."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
        ephemeral_low = int(f.read().split()[0])
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, ephemeral_low - count)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no run of {count} free ports below {ephemeral_low}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def scrape(port: int, timeout: float = 5.0) -> Samples:
    """Every sample of ``http://127.0.0.1:PORT/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def try_scrape(port: int) -> Samples | None:
    """None while the endpoint is not up yet."""
    try:
        return scrape(port)
    except (urllib.error.URLError, ConnectionError):
        return None


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
