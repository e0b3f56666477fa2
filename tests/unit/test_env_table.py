"""A setting is declared once, as a config field: its flag, its variable, the docs'
configuration table and ``.env.example`` all follow from the field.

The committed table (between ``<!-- env-table:start -->`` and ``<!-- env-table:end -->``)
and ``.env.example`` must be exactly what ``make settings-docs`` writes from the fields.
"""

from __future__ import annotations

from dataclasses import MISSING
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from redbatch.batching.policy import BatchPolicy
from redbatch.cli.common import setting_options
from redbatch.config import ENV_NAMES, SchedulerConfig, WorkerConfig
from redbatch.config_reference import (
    STACK_VALUES,
    TABLE_END,
    TABLE_START,
    env_example,
    env_table,
    settings_by_variable,
)
from redbatch.errors import ConfigError
from redbatch.settings import check_all, config_class, declared, declared_as, setting

ROOT = Path(__file__).resolve().parents[2]
TABLE_FILE = ROOT / "docs" / "configuration.md"
ENV_EXAMPLE = ROOT / ".env.example"


def committed_table() -> str:
    text = TABLE_FILE.read_text(encoding="utf-8")
    assert text.count(TABLE_START) == 1 and text.count(TABLE_END) == 1, "env-table markers"
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


def test_the_docs_table_is_the_one_the_fields_write() -> None:
    assert committed_table() == env_table(), "run `make settings-docs` after changing a setting"


def test_env_example_is_the_one_the_fields_write() -> None:
    assert ENV_EXAMPLE.read_text(encoding="utf-8") == env_example(), "run `make settings-docs`"


def test_every_variable_is_one_setting_in_the_table_and_env_example() -> None:
    rows = [line for line in committed_table().splitlines() if line.startswith("| `REDBATCH_")]
    listed = [line.split("`")[1] for line in rows]
    assert sorted(listed) == sorted(ENV_NAMES.values())
    assigned = [line.split("=")[0] for line in env_example().splitlines() if "=" in line[:40]]
    assert sorted(v for v in assigned if v.startswith("REDBATCH_")) == sorted(ENV_NAMES.values())


def test_a_setting_read_by_two_parts_is_one_row_with_one_default() -> None:
    for _, (one, parts) in settings_by_variable().items():
        if parts == ["worker", "scheduler"]:
            other = declared_as(SchedulerConfig, one.name)
            assert (other.setting, other.field.default) == (one.setting, one.field.default)


# -- a new knob: one field, and everything else follows -----------------------------------


@config_class
class Knobs:
    """A config class as a contributor would add one setting to WorkerConfig."""

    poll_ms: int = setting(
        default=250, env="REDBATCH_POLL_MS", bounds=(10, 5000), help="how often to look"
    )

    def __post_init__(self) -> None:
        check_all(self)


def test_a_new_field_brings_its_flag_with_the_variable_and_default_in_the_help() -> None:
    seen: dict[str, object] = {}

    @click.command()
    @setting_options(Knobs)
    def command(**options: object) -> None:
        seen.update(options)

    runner = CliRunner()
    helped = runner.invoke(command, ["--help"])
    assert "--poll-ms INTEGER" in helped.output
    assert "how often to look [env var: REDBATCH_POLL_MS; default: 250]" in helped.output
    assert runner.invoke(command, ["--poll-ms", "40"]).exit_code == 0
    assert seen == {"poll_ms": 40}
    assert runner.invoke(command, []).exit_code == 0
    assert seen == {"poll_ms": None}  # not given: the variable, then the default, apply


def test_a_new_field_brings_its_variable_parsing_and_range_check() -> None:
    (one,) = declared(Knobs)
    assert one.parse("40") == 40  # an int field reads an integer
    with pytest.raises(ConfigError, match=r"poll_ms must be an integer, got 'soon' \(--poll-ms"):
        one.parse("soon")
    with pytest.raises(ConfigError, match="poll_ms must be an integer from 10 to 5000, got 5"):
        Knobs(poll_ms=5)


def test_a_new_field_brings_its_table_row_and_env_example_line() -> None:
    row = env_table([Knobs]).splitlines()[-1]
    assert row == (
        "| `REDBATCH_POLL_MS` | `--poll-ms` | `poll_ms` | `250` | 10 to 5000 | knobs "
        "| how often to look |"
    )
    assert "# How often to look (10 to 5000)\nREDBATCH_POLL_MS=250\n" in env_example([Knobs])


def test_the_batch_policy_has_the_worker_settings_bounds_and_defaults() -> None:
    policy = BatchPolicy()
    for name in ("max_batch_size", "max_batch_cost", "max_wait_ms", "priority_aging_ms"):
        one = declared_as(WorkerConfig, name)
        assert getattr(policy, name) == one.field.default
        assert one.setting.bounds is not None
        low, high = one.setting.bounds
        with pytest.raises(ConfigError, match=name):
            BatchPolicy(**{name: int(high) + 1})
        if low > 0:
            with pytest.raises(ConfigError, match=name):
                BatchPolicy(**{name: int(low) - 1})


def test_each_env_example_value_reads_back_as_the_default() -> None:
    values = dict(
        line.split("=", 1) for line in env_example().splitlines() if line.startswith("REDBATCH_")
    )
    for variable, (one, _) in settings_by_variable().items():
        if one.name in STACK_VALUES or one.required or one.field.default is MISSING:
            continue
        raw = values[variable]
        assert (one.parse(raw) if raw else one.field.default) == one.field.default, variable
