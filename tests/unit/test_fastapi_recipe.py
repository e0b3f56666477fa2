"""The FastAPI recipe's page shows the very file the integration test runs, and its error
mapping answers every public redbatch error."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType

import redbatch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fastapi_app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_includes_the_example_file_itself() -> None:
    page = (ROOT / "docs" / "fastapi.md").read_text(encoding="utf-8")
    assert '--8<-- "examples/fastapi_app.py"' in page


def test_every_public_error_has_a_status() -> None:
    example = load_example()
    errors = [
        getattr(redbatch, name)
        for name in redbatch.__all__
        if inspect.isclass(getattr(redbatch, name))
        and issubclass(getattr(redbatch, name), redbatch.RedbatchError)
    ]
    statuses = {cls.__name__: example.status_of(cls.__new__(cls)) for cls in errors}
    assert statuses["QueueFull"] == statuses["ConnectionFailed"] == 503
    # Nothing serving the queue (require_worker) and a server shutting down are not the
    # app's bug: retry elsewhere or shortly, never the catch-all 500.
    assert statuses["NoWorker"] == statuses["ProducerClosed"] == 503
    assert statuses["ResultTimeout"] == 504
    assert statuses["PayloadTooLarge"] == 413
    assert statuses["RequestFailed"] == 502
    assert all(400 <= status < 600 for status in statuses.values())
