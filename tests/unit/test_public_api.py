"""What ``import redbatch`` offers: every public error, and nothing heavy loaded with it."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys

import pytest

import redbatch
from helpers import subprocess_env
from redbatch import SchedulerConfig, Worker, WorkerConfig  # loaded on first use
from redbatch.errors import RedbatchError

# Modules a web process that only produces must not pay for (the issue measured ~200 ms).
HEAVY = ("redbatch.worker", "redbatch.scheduler", "click", "rich", "prometheus_client")


def every_subclass(cls: type[RedbatchError]) -> set[type[RedbatchError]]:
    found: set[type[RedbatchError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *every_subclass(sub)}
    return found


def test_every_public_error_is_importable_from_redbatch() -> None:
    # Import every module of the package (not __main__: it runs the command line), so an
    # error class defined anywhere is counted, not only those in errors.py.
    for module in pkgutil.walk_packages(redbatch.__path__, "redbatch."):
        if not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
    errors = {cls for cls in every_subclass(RedbatchError) if cls.__module__.startswith("redbatch")}
    errors.add(RedbatchError)
    public = {cls.__name__ for cls in errors if not cls.__name__.startswith("_")}
    exported = {name for name in redbatch.__all__ if inspect.isclass(getattr(redbatch, name))}
    exported_errors = {n for n in exported if issubclass(getattr(redbatch, n), RedbatchError)}
    assert public - exported_errors == set(), "RedbatchError subclasses missing from __all__"
    assert exported_errors - public == set()
    for name in public:
        assert getattr(redbatch, name).__module__.startswith("redbatch.")


def test_all_names_resolve_and_dir_lists_them() -> None:
    for name in redbatch.__all__:
        assert getattr(redbatch, name) is not None, name
    assert set(redbatch.__all__) <= set(dir(redbatch))
    assert Worker.__module__ == "redbatch.worker.runner"
    assert {WorkerConfig.__module__, SchedulerConfig.__module__} == {"redbatch.config"}


def test_import_redbatch_loads_neither_worker_nor_command_line_nor_metrics() -> None:
    # A fresh interpreter: this one has imported the whole package already.
    probe = (
        "import json, sys; import redbatch; from redbatch import AsyncProducer, ResultTimeout; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = json.loads(out.stdout)
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)] == []
    assert "redbatch.producer" in loaded  # the probe did import what a web process uses


def test_a_name_not_exported_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        redbatch.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
