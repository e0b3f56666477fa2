"""The configuration reference, written from the settings' fields: the docs' table of every
``REDBATCH_*`` variable, and ``.env.example`` (the compose stack's environment file).

``python3 -m redbatch.config_reference TABLE_FILE ENV_FILE`` rewrites both (the table
between its ``env-table`` markers); ``make settings-docs`` runs it, and a unit test fails
when either file differs from what the fields say.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from redbatch.config import CONFIG_CLASSES
from redbatch.settings import Declared, declared, shown_default

TABLE_START, TABLE_END = "<!-- env-table:start -->", "<!-- env-table:end -->"

# The compose stack's own values (not defaults): Redis is the service `redis`, the workers
# serve the echo queue with the built-in echo handler.
STACK_VALUES = {
    "redis_url": "redis://redis:6379/0",
    "queues": "echo",
    "handler": "redbatch.handlers:echo",
}
# What a compose user must know beyond the setting's help.
_STACK_NOTES = {
    "redis_url": "In compose, the service `redis`.",
    "handler": "The MiniLM model (image built with EXTRAS=minilm): redbatch.models.minilm:embed",
    "name": "Leave EMPTY with --scale: the image's HEALTHCHECK finds its worker by the "
    "hostname prefix.",
    "drain_timeout_s": "compose.yaml's worker stop_grace_period (40s) must stay above this "
    "plus a margin: raise both together.",
}
_ENV_HEADER = """\
# redbatch stack configuration: every REDBATCH_* setting with its default, written from the
# settings' fields (src/redbatch/config.py) by `make settings-docs`: edit the fields, not
# this file. compose.yaml loads it into the worker, scheduler and producer containers, then
# .env (optional, not committed) on top: put your changes in .env, e.g.
#   cp .env.example .env && $EDITOR .env && docker compose up -d --scale worker=3
# An empty value means "use the built-in default". An unknown REDBATCH_* variable makes
# every redbatch process refuse to start, so a typo here is never silently ignored.
"""


def settings_by_variable(
    classes: Sequence[type[Any]] = CONFIG_CLASSES,
) -> dict[str, tuple[Declared, list[str]]]:
    """Variable -> its setting and the parts (class names without ``Config``) that read it,
    in the order the classes declare them."""
    found: dict[str, tuple[Declared, list[str]]] = {}
    for cls in classes:
        part = cls.__name__.removesuffix("Config").lower()
        for one in declared(cls):
            found.setdefault(one.setting.env, (one, []))[1].append(part)
    return found


def env_table(classes: Sequence[type[Any]] = CONFIG_CLASSES) -> str:
    """The markdown table: one row per variable."""
    lines = [
        "| Variable | Flag | Setting | Default | Range | Read by | Meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for variable, (one, parts) in settings_by_variable(classes).items():
        flag = "`QUEUE...` (arguments)" if one.setting.flag == "QUEUE..." else f"`{one.flag}`"
        lines.append(
            f"| `{variable}` | {flag} | `{one.name}` | {_default_cell(one)} | "
            f"{_range_cell(one)} | {', '.join(parts)} | {_escaped(one.setting.help)} |"
        )
    return "\n".join(lines)


def env_example(classes: Sequence[type[Any]] = CONFIG_CLASSES) -> str:
    """``.env.example``: each variable under its help, set to its default (or the stack's
    value), grouped by which processes read it."""
    groups: dict[str, list[str]] = {}
    # Settings every process reads first: the connection is what everyone sets.
    by_readers = sorted(settings_by_variable(classes).items(), key=lambda item: -len(item[1][1]))
    for variable, (one, parts) in by_readers:
        lines = [f"# {_sentence(one.setting.help)}{_range_note(one)}"]
        if one.name in _STACK_NOTES:
            lines.append(f"# {_STACK_NOTES[one.name]}")
        value = STACK_VALUES.get(one.name, _env_value(one))
        lines.append(f"{variable}={value}")
        groups.setdefault(" and ".join(parts), []).append("\n".join(lines))
    sections = [_ENV_HEADER.rstrip("\n")]
    for readers, entries in groups.items():
        rule = f"# --- {readers} " + "-" * (86 - len(readers))
        sections.append("\n".join([rule, *entries]))
    return "\n\n".join(sections) + "\n"


def with_table(text: str, table: str) -> str:
    """``text`` with the part between the table markers replaced by ``table``."""
    if text.count(TABLE_START) != 1 or text.count(TABLE_END) != 1:
        raise ValueError(f"need exactly one {TABLE_START} and one {TABLE_END}")
    before, rest = text.split(TABLE_START)
    after = rest.split(TABLE_END)[1]
    return f"{before}{TABLE_START}\n{table}\n{TABLE_END}{after}"


def _env_value(one: Declared) -> str:
    """The default as the variable's text: a text default as it is (the docs may show an
    empty one as "none"), anything else as shown (``auto`` reads back as None)."""
    default = one.field.default
    if isinstance(default, str):
        return default
    return shown_default(one) or ""


def _default_cell(one: Declared) -> str:
    if one.required:
        return "required"
    if one.field.default is MISSING:
        return "generated"  # a default_factory: made per process
    shown = shown_default(one)
    return "none" if shown is None else f"`{shown}`"


def _range_cell(one: Declared) -> str:
    if one.setting.choices:
        return ", ".join(f"`{c}`" for c in one.setting.choices)
    if one.setting.bounds is None:
        return ""
    low, high = one.setting.bounds
    return f"{_number(low)} to {_number(high)}"


def _range_note(one: Declared) -> str:
    cell = _range_cell(one).replace("`", "")
    return f" ({cell})" if cell else ""


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _escaped(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: Sequence[str]) -> None:
    table_file, env_file = (Path(a) for a in argv)
    table_file.write_text(with_table(table_file.read_text(), env_table()))
    env_file.write_text(env_example())


if __name__ == "__main__":
    main(sys.argv[1:])
