"""A setting declared once: a config dataclass field whose metadata is a ``Setting``.

Everything else about the setting follows from that field: its ``REDBATCH_*`` variable and
how the variable's text is read (from the field's annotation), the range check, the
command-line option (``redbatch.cli.common.setting_options``), the configuration table of
the docs and the lines of ``.env.example`` (``redbatch.config_reference``). A new knob
costs one field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import Any, TypeVar, dataclass_transform

from redbatch.config_env import parse_cluster, words
from redbatch.errors import ConfigError

_KEY = "redbatch.setting"
_Class = TypeVar("_Class")


@dataclass(frozen=True)
class Setting:
    """What a config field means to the people who set it."""

    env: str  # the REDBATCH_* variable
    help: str  # one line, without the default (shown apart, from the field)
    flag: str = ""  # "" = --name-with-dashes; "QUEUE..." = the command's arguments
    bounds: tuple[float, float] | None = None  # inclusive, checked on creation
    choices: tuple[str, ...] = ()  # allowed values; text in another case is accepted
    parse: Callable[[str], Any] | None = None  # text -> value; None = from the annotation
    metavar: str | None = None  # the option's placeholder in --help
    shown: str | None = None  # how the docs show the default, when its repr would mislead


def setting(
    *,
    env: str,
    help: str,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    **more: Any,
) -> Any:
    """A dataclass field declared with its ``Setting`` (keywords of ``Setting`` in ``more``)."""
    metadata = {_KEY: Setting(env=env, help=help, **more)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass_transform(frozen_default=True, field_specifiers=(setting, dataclasses.field))
def config_class(cls: type[_Class]) -> type[_Class]:
    """``@dataclass(frozen=True)`` whose fields are settings (mypy: ``setting`` is a field)."""
    return dataclass(frozen=True)(cls)


@dataclass(frozen=True)
class Declared:
    """One setting of one config class: the field's name, its type, default and ``Setting``."""

    name: str
    kind: Any  # the annotation, resolved
    field: dataclasses.Field[Any]
    setting: Setting

    @property
    def flag(self) -> str:
        return self.setting.flag or f"--{self.name.replace('_', '-')}"

    @property
    def where(self) -> str:
        """How a user sets it, for error messages: ``--max-batch-size / REDBATCH_...``."""
        return f"{self.flag} / {self.setting.env}"

    @property
    def required(self) -> bool:
        return self.field.default is MISSING and self.field.default_factory is MISSING

    @property
    def many(self) -> bool:
        """A list of values (a repeatable option, a space- or comma-separated variable)."""
        return typing.get_origin(self.kind) is tuple or _is_union_with_tuple(self.kind)

    def parse(self, raw: str) -> Any:
        """The value the text of a variable or option stands for, or one readable line that
        names the flag and the variable."""
        try:
            return self._parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({self.where})") from None

    def _parse(self, raw: str) -> Any:
        if self.setting.parse is not None:
            return self.setting.parse(raw)
        if self.setting.choices:
            return _in_case_of(raw, self.setting.choices)
        by_kind = _PARSERS.get(self.kind)
        if by_kind is not None:
            return by_kind(self.name, raw)
        return words(raw) if self.many else raw

    def check(self, value: Any) -> None:
        """Refuse a value outside the bounds or choices, naming the flag and variable."""
        if self.setting.bounds is not None:
            low, high = self.setting.bounds
            if self.kind is int:
                _int_in(self, value, int(low), int(high))
            else:
                _float_in(self, value, low, high)
        if self.setting.choices and value not in self.setting.choices:
            raise ConfigError(
                f"{self.name} must be one of {', '.join(self.setting.choices)}, got {value!r} "
                f"({self.where})"
            )


def declared(cls: type[Any]) -> tuple[Declared, ...]:
    """The settings of config class ``cls``, in field order (read once per class: batch
    policies are checked per batch when the window is tuned)."""
    found = _DECLARED.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _DECLARED[cls] = tuple(
            Declared(f.name, hints[f.name], f, f.metadata[_KEY])
            for f in dataclasses.fields(cls)
            if _KEY in f.metadata
        )
    return found


def declared_as(cls: type[Any], name: str) -> Declared:
    for one in declared(cls):
        if one.name == name:
            return one
    raise KeyError(name)


_DECLARED: dict[type[Any], tuple[Declared, ...]] = {}


def check_all(config: Any) -> None:
    """Every bound and choice of ``config``'s settings."""
    for one in declared(type(config)):
        one.check(getattr(config, one.name))


def _number(name: str, raw: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None


def _integer(name: str, raw: str) -> int:
    return int(_number(name, raw, int, "an integer"))


def _real(name: str, raw: str) -> float:
    return float(_number(name, raw, float, "a number"))


def _cluster(name: str, raw: str) -> bool | None:
    return parse_cluster(raw)


# A setting's annotation -> how its text is read (tuples and str have no entry: words, text).
_PARSERS: dict[Any, Callable[[str, str], Any]] = {
    int: _integer,
    float: _real,
    bool | None: _cluster,
}


def _int_in(one: Declared, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{one.name} must be an integer from {low} to {high}, got {value!r} ({one.where})"
        )


def _float_in(one: Declared, value: Any, low: float, high: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not low <= value <= high:
        raise ConfigError(
            f"{one.name} must be a number from {low:g} to {high:g}, got {value!r} ({one.where})"
        )


def _in_case_of(raw: str, choices: tuple[str, ...]) -> str:
    """``debug`` -> ``DEBUG`` when the choices are upper case; an unknown word stays as it is
    (the check names the choices)."""
    return raw.upper() if all(c.isupper() for c in choices) else raw.lower()


def _is_union_with_tuple(kind: Any) -> bool:
    if not isinstance(kind, types.UnionType):
        return False
    return any(typing.get_origin(arg) is tuple for arg in typing.get_args(kind))


def shown_default(one: Declared) -> str | None:
    """The default as a user would type it, or None when there is none to type (required,
    made per process, an empty list)."""
    if one.setting.shown is not None:
        return one.setting.shown
    default = one.field.default
    if default is MISSING or default == ():
        return None
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default)
    return str(default)
