"""docs/wire-contract.md names what protocol/ puts on the wire: every key a ``KeySpace``
builds, every entry field and outcome status, and every Lua script with exactly the KEYS and
ARGV slots its header lists. A new key, field or script argument fails here until the
contract says it."""

from __future__ import annotations

import inspect
import re
from importlib import resources
from pathlib import Path

import pytest

from redbatch.protocol import fields, records, stats
from redbatch.protocol.keys import PRIORITIES, KeySpace, QueueKeys

PAGE = Path(__file__).resolve().parents[2] / "docs" / "wire-contract.md"
LUA = resources.files("redbatch.protocol").joinpath("lua")
SLOT = re.compile(r"\b(?:KEYS|ARGV)\[\d+(?:\.\.)?\]")
# The placeholder the contract writes for each argument of a key-building method.
PLACEHOLDERS = {
    "result": "<id>",
    "reply": "<producer>",
    "guard": "<id>",
    "cancel": "<id>",
    "chunks": "<id>",
    "admitted": "<producer>",
    "stats": "<slot>",
    "worker": "<name>",
    "stream_for": None,  # every lane is listed through ``streams``
}


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def documented_keys() -> list[str]:
    """Every key name QueueKeys builds, spelled as the contract spells it."""
    keys = QueueKeys("rb", "Q")
    names = [KeySpace("rb").queues, KeySpace("rb").watch, KeySpace("rb").config("Q"), *keys.streams]
    for name, member in inspect.getmembers(QueueKeys):
        if name.startswith("_") or name in ("namespace", "name", "streams"):
            continue
        if isinstance(member, property):
            names.append(getattr(keys, name))
            continue
        assert name in PLACEHOLDERS, f"QueueKeys.{name}: add it to the contract and this test"
        placeholder = PLACEHOLDERS[name]
        if placeholder is not None:
            names.append(getattr(keys, name)(placeholder))
    return names


@pytest.mark.parametrize("key", documented_keys())
def test_every_key_is_in_the_contract(key: str) -> None:
    assert f"`{key}`" in page(), key


ENTRY_FIELDS = [
    value
    for name, value in vars(fields).items()
    if name.isupper() and isinstance(value, str) and name in {
        "ID", "REPLY", "ENQ", "DEADLINE", "ATTEMPT", "COST", "CT", "PAYLOAD", "PRIORITY",
        "TRACEPARENT", "TRACESTATE",
        "STREAM",
    }
]  # fmt: skip


@pytest.mark.parametrize("name", ENTRY_FIELDS + list(fields.STATUSES) + list(PRIORITIES))
def test_every_entry_field_status_and_priority_is_in_the_contract(name: str) -> None:
    assert f"`{name}`" in page(), name


def test_result_hash_fields_are_in_the_contract() -> None:
    ok = fields.result_fields(fields.Outcome("r1", fields.OK, b"x"), ct="json")
    failed = fields.result_fields(fields.Outcome("r1", fields.ERROR, b"E: x"))
    section = page().split("## Result hash", 1)[1].split("\n## ", 1)[0]
    for name in {*ok, *failed}:
        assert f"| `{name}` |" in section, name


@pytest.mark.parametrize(
    ("section", "prefix"),
    [("Result hash", "RESULT_"), ("Heartbeats", "BEAT_"), ("Dead letters", "DEAD_")],
)
def test_every_record_field_constant_is_in_its_section(section: str, prefix: str) -> None:
    text = page().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    if prefix == "DEAD_":  # replayed/replayed_at are described with the entry fields
        text += page().split("## Request entries", 1)[1].split("\n## ", 1)[0]
    names = [v for k, v in vars(records).items() if k.startswith(prefix)]
    assert names
    for name in names:
        assert f"`{name}`" in text, name


def test_stats_slot_fields_are_in_the_contract() -> None:
    section = page().split("## Stats slots", 1)[1].split("\n## ", 1)[0]
    for name in (stats.ITEMS, stats.BATCHES, stats.BUSY_US):
        assert f"`{name}`" in section, name
    for prefix in (stats.OUTCOME, stats.WAIT, stats.SERVICE, stats.SIZE):
        assert f"`{prefix}" in section, prefix
    assert f"{stats.SLOT_S}" in section and f"{stats.TTL_S} s" in section


def header(script: str) -> str:
    lines = LUA.joinpath(f"{script}.lua").read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("--"))


SCRIPTS = sorted(p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_has_its_keys_and_argv_in_the_contract(script: str) -> None:
    text = page()
    marker = f"\n### {script}\n"
    assert marker in text, f"no section '### {script}' in the contract"
    section = text.split(marker, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    in_header = set(SLOT.findall(header(script)))
    assert in_header, f"{script}.lua has no KEYS/ARGV header"
    assert set(SLOT.findall(section)) == in_header, script
