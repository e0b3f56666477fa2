"""The text of a variable or option turned into a setting's value (the parsers a field's
``Setting`` names, or its annotation picks), with one readable line when it cannot be.
The caller (``redbatch.settings``) adds which flag and variable the text came from."""

from __future__ import annotations

from redbatch.errors import ConfigError
from redbatch.protocol.keys import QUEUE_NAME

ENV_PREFIX = "REDBATCH_"


def words(raw: str) -> tuple[str, ...]:
    """``"a, b c"`` -> ("a", "b", "c")."""
    return tuple(raw.replace(",", " ").split())


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"8,16 32"`` -> (8, 16, 32)."""
    try:
        return tuple(sorted({int(part) for part in words(text)}))
    except ValueError:
        raise ConfigError(
            f"preferred_batch_sizes must be whole numbers like 8,16,32, got {text!r}"
        ) from None


def parse_handler_options(text: str) -> tuple[tuple[str, str], ...]:
    """``"a=1 embed:b=x"`` (spaces or commas) -> (("a", "1"), ("embed:b", "x")); a
    ``QUEUE:`` prefix binds the option to that queue's handler only."""
    options = []
    for item in words(text):
        key, sep, value = item.partition("=")
        queue, _, name = key.rpartition(":")
        if not sep or not name.isidentifier() or (queue and not QUEUE_NAME.fullmatch(queue)):
            raise ConfigError(
                f"handler option {item!r} must look like name=value or QUEUE:name=value"
            )
        options.append((key, value))
    return tuple(options)


def split_handlers(specs: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``("pkg:f", "rerank=pkg:g")`` -> the default spec ("" if none) and per-queue specs."""
    default = ""
    per_queue: dict[str, str] = {}
    for spec in specs:
        queue, sep, target = spec.partition("=")
        if not sep:
            if default:
                raise ConfigError(
                    f"two default handlers ({default!r} and {spec!r}): give one, and "
                    f"QUEUE=module:function for the others"
                )
            default, target = spec, spec
        elif not QUEUE_NAME.fullmatch(queue) or queue in per_queue:
            raise ConfigError(f"handler {spec!r}: bad or repeated queue name")
        else:
            per_queue[queue] = target
        module, colon, attr = target.partition(":")
        if not (module and colon and attr):
            raise ConfigError(
                f"handler must look like module:function or QUEUE=module:function, got {spec!r}"
            )
    return default, per_queue


_CLUSTER_WORDS: dict[str, bool | None] = {
    "auto": None, "yes": True, "true": True, "1": True, "no": False, "false": False, "0": False,
}  # fmt: skip


def parse_cluster(raw: str) -> bool | None:
    """``REDBATCH_CLUSTER``: auto (ask the server), yes or no."""
    try:
        return _CLUSTER_WORDS[raw.strip().lower()]
    except KeyError:
        raise ConfigError(f"cluster must be auto, yes or no, got {raw!r}") from None
