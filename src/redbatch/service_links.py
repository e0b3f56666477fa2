"""Kubernetes service links: the variables the kubelet puts into every pod of a namespace
(unless the pod sets ``enableServiceLinks: false``), Docker-link style, named after each
Service. A Service called "redbatch" or "redbatch-metrics" gives ``REDBATCH_PORT=tcp://10.96.0.12:9100``
and the like, which the unknown-variable check must not take for typos.

They are recognised by name and value together, so a typo such as ``REDBATCH_METRIC_PORT=9100``
is still refused. Names: <SVC>_SERVICE_HOST, <SVC>_SERVICE_PORT[_<PORTNAME>], <SVC>_PORT,
<SVC>_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR].
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from redbatch.errors import ConfigError

_URL = r"(?:tcp|udp|sctp)://\S+:\d+"
_ADDRESS = r"[0-9A-Fa-f.:]+"
_SHAPES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (re.compile(name), re.compile(value))
    for name, value in (
        (r"[A-Z0-9_]+_SERVICE_HOST", _ADDRESS),
        (r"[A-Z0-9_]+_SERVICE_PORT(?:_[A-Z0-9_]+)?", r"\d+"),
        (r"[A-Z0-9_]+_PORT", _URL),
        (r"[A-Z0-9_]+_PORT_\d+_(?:TCP|UDP|SCTP)", _URL),
        (r"[A-Z0-9_]+_PORT_\d+_(?:TCP|UDP|SCTP)_PROTO", r"(?:tcp|udp|sctp)"),
        (r"[A-Z0-9_]+_PORT_\d+_(?:TCP|UDP|SCTP)_PORT", r"\d+"),
        (r"[A-Z0-9_]+_PORT_\d+_(?:TCP|UDP|SCTP)_ADDR", _ADDRESS),
    )
)
_AVOID = (
    "set enableServiceLinks: false in the pod spec (deploy/kubernetes does) "
    "or give the Service another name"
)


def is_service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` has the shape of a variable Kubernetes sets for a Service."""
    return any(n.fullmatch(name) and v.fullmatch(value) for n, v in _SHAPES)


def check_service_links(environ: Mapping[str, str], settings: Collection[str]) -> None:
    """ConfigError when a service link has taken a setting's name (a Service called
    "redbatch-metrics" sets REDBATCH_METRICS_PORT=tcp://...), saying so and how to avoid it."""
    for name in sorted(settings):
        value = environ.get(name)
        if value is not None and is_service_link(name, value):
            service = name.removesuffix("_PORT").removesuffix("_SERVICE_HOST")
            raise ConfigError(
                f"{name}={value} looks like a Kubernetes service link (a Service named "
                f"{service.lower().replace('_', '-')}), not the setting {name}: {_AVOID}"
            )
