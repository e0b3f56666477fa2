"""docs/configuration.md lists every REDBATCH_* variable with its true default.

The table sits between ``<!-- env-table:start -->`` and ``<!-- env-table:end -->``; one row
per variable: ``| `VARIABLE` | `setting` | default | read by |``. A default is shown as the
dataclass default in backticks, ``none`` for an empty tuple, ``generated`` for a
default_factory and ``required`` for a field without a default.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from redbatch.config import ENV_NAMES, SchedulerConfig, WorkerConfig

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
START, END = "<!-- env-table:start -->", "<!-- env-table:end -->"
PARTS: dict[str, Any] = {"worker": WorkerConfig, "scheduler": SchedulerConfig}


def table_rows() -> dict[str, list[str]]:
    """Variable -> its row's other cells (setting, default, read by), as written."""
    text = PAGE.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, "env-table markers missing"
    body = text.split(START, 1)[1].split(END, 1)[0]
    rows: dict[str, list[str]] = {}
    for line in body.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not cells[0].startswith("`REDBATCH_"):
            continue  # the header and its rule
        variable = cells[0].strip("`")
        assert variable not in rows, f"{variable} listed twice"
        rows[variable] = cells[1:]
    return rows


def shown(field: dataclasses.Field[Any]) -> str:
    """How the table shows ``field``'s default."""
    if field.default is not dataclasses.MISSING:
        value = field.default
        if isinstance(value, tuple):
            return ", ".join(f"`{v}`" for v in value) if value else "none"
        return f"`{value}`"
    if field.default_factory is not dataclasses.MISSING:
        return "generated"
    return "required"


def fields_of(setting: str) -> dict[str, dataclasses.Field[Any]]:
    """Part -> the field ``setting`` of that part's config dataclass, for the parts with it."""
    found = {}
    for part, config in PARTS.items():
        for field in dataclasses.fields(config):
            if field.name == setting:
                found[part] = field
    return found


def test_the_table_lists_exactly_the_environment_variables() -> None:
    rows = table_rows()
    assert sorted(rows) == sorted(ENV_NAMES.values())


@pytest.mark.parametrize("setting", list(ENV_NAMES))
def test_each_row_shows_the_dataclass_default(setting: str) -> None:
    variable = ENV_NAMES[setting]
    row = table_rows()[variable]
    assert len(row) == 3, f"{variable}: expected setting, default, read by; got {row}"
    named, default, read_by = row
    assert named == f"`{setting}`", f"{variable} fills {setting}"
    found = fields_of(setting)
    assert found, f"{setting} is a field of no config dataclass"
    assert [p.strip() for p in read_by.split(",")] == list(found), variable
    for part, field in found.items():
        expected = shown(field)
        assert default == expected, f"{variable}: the docs say {default}, {part} has {expected}"
