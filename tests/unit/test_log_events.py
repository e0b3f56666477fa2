"""Every log call of the worker, the scheduler and the producer's listeners names its event
(``extra={"event": ...}``), and every event name is listed in docs/observability.md: the
names are what log queries filter on, so a new line without one fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "redbatch"
DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
FILES = sorted(
    [
        *(SRC / "worker").glob("*.py"),
        *(SRC / "scheduler").glob("*.py"),
        SRC / "producer" / "listener.py",  # the threads' and the tasks' listener alike
    ]
)
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def log_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LEVELS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "log"
    ]


def event_of(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
            for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "event":
                    assert isinstance(value, ast.Constant), ast.dump(value)
                    return str(value.value)
    return None


CALLS = [(path, call) for path in FILES for call in log_calls(path)]


def test_the_files_have_log_calls() -> None:
    assert len(CALLS) > 40


@pytest.mark.parametrize(("path", "call"), CALLS, ids=[f"{p.name}:{c.lineno}" for p, c in CALLS])
def test_every_log_call_names_an_event_listed_in_the_docs(path: Path, call: ast.Call) -> None:
    event = event_of(call)
    assert event, f"{path.name}:{call.lineno}: log call without extra={{'event': ...}}"
    assert f"`{event}`" in DOC.read_text(encoding="utf-8"), f"{event} is not in the docs"
