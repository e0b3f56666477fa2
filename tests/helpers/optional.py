"""Optional packages a test needs: skipped, saying why, on a machine without them; a failure
in CI, which installs them (``.ci/run``)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(name: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{name} is not installed ({install})")


def torch() -> ModuleType:
    return require("torch", "python3 -m pip install torch==2.13.0")
