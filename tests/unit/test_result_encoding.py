"""Results that just work: torch tensors as numpy arrays, the --encoder hook, --path. No Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from helpers import optional, subprocess_env
from redbatch.config import WorkerConfig
from redbatch.errors import ConfigError, PayloadError
from redbatch.protocol import codec
from redbatch.protocol.fields import ERROR, OK, Request
from redbatch.worker.executor import Executor
from redbatch.worker.loader import add_paths, load_encoder, load_handler


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def point_encoder(obj: Any) -> Any:
    """An --encoder: Points become maps; anything else is refused, as msgpack's default= does."""
    if isinstance(obj, Point):
        return {"x": obj.x, "y": obj.y}
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def broken_encoder(obj: Any) -> Any:
    raise KeyError("no such field")


def request(i: int, payload: Any, ct: str = codec.MSGPACK) -> Request:
    return Request("q", f"1-{i}", f"r{i}", codec.encode(payload, ct), ct=ct)


def run(handler: Any, requests: list[Request], encoder: Any = None) -> list[Any]:
    return Executor(handler, encoder=encoder).run(requests)


def test_an_encoder_hook_carries_types_the_codec_does_not_know() -> None:
    encoder = load_encoder(f"{__name__}:point_encoder")
    ran = run(lambda xs: [Point(x, -x) for x in xs], [request(0, 1), request(1, 2)], encoder)
    assert [msgpack.unpackb(r.outcome.body) for r in ran] == [{"x": 1, "y": -1}, {"x": 2, "y": -2}]
    json_ran = run(lambda xs: [Point(1, 2)], [request(0, 0, codec.JSON)], encoder)
    assert json_ran[0].outcome.body == b'{"x":1,"y":2}'


def test_an_unencodable_item_fails_alone_naming_its_type() -> None:
    encoder = load_encoder(f"{__name__}:point_encoder")
    ran = run(lambda xs: [Point(1, 1), {1, 2}, "fine"], [request(i, i) for i in range(3)], encoder)
    assert [r.outcome.status for r in ran] == [OK, ERROR, OK]
    assert ran[1].outcome.error.startswith("PayloadError: result:")
    assert "set" in ran[1].outcome.error


def test_an_encoder_that_raises_anything_fails_only_that_item() -> None:
    encoder = load_encoder(f"{__name__}:broken_encoder")
    ran = run(lambda xs: [Point(0, 0), 5], [request(0, 0), request(1, 1)], encoder)
    assert [r.outcome.status for r in ran] == [ERROR, OK]
    assert "failed on an object of type Point: KeyError" in ran[0].outcome.error


def test_an_encoder_spec_that_does_not_import_is_a_config_error() -> None:
    assert load_encoder("") is None
    with pytest.raises(ConfigError, match="cannot import encoder 'nope_xyz:f'"):
        load_encoder("nope_xyz:f")
    with pytest.raises(ConfigError, match="encoder must look like module:function"):
        load_encoder("nocolon")


def test_an_encoder_answering_with_an_array_gets_the_array_extension() -> None:
    data = codec.encode(Point(1, 2), encoder=lambda p: np.array([p.x, p.y], dtype="<i4"))
    assert codec.decode(data).tolist() == [1, 2]


def test_path_puts_directories_first_on_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app_model_xyz.py").write_text("def embed(xs):\n    return [len(xs)] * len(xs)\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path.parent)
    add_paths((tmp_path.name,))
    assert sys.path[0] == str(tmp_path)
    assert load_handler("app_model_xyz:embed")([1, 2]) == [2, 2]
    monkeypatch.delitem(sys.modules, "app_model_xyz")


def test_path_refuses_what_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--path .*missing.* is not a directory"):
        add_paths((str(tmp_path / "missing"),))


# -- torch ------------------------------------------------------------------------------------


def test_the_codec_does_not_import_torch() -> None:
    code = (
        "import sys, numpy; from redbatch.protocol import codec; "
        "codec.encode([numpy.ones(2)]); codec.encode({1: 2}, 'json'); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
        check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "False"


def test_tensors_encode_as_numpy_arrays() -> None:
    torch = optional.torch()
    weights = torch.nn.Parameter(torch.ones(2, 2))
    values = {
        "plain": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "grad": weights * 2,  # part of an autograd graph
        "scalar": torch.tensor(7, dtype=torch.int64),
        "half": torch.tensor([0.5], dtype=torch.float16),
    }
    decoded = codec.decode(codec.encode(values))
    assert decoded["plain"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert decoded["plain"].dtype == np.float32
    assert decoded["grad"].tolist() == [[2, 2], [2, 2]]
    assert decoded["scalar"].shape == () and int(decoded["scalar"]) == 7
    assert decoded["half"].dtype == np.float16
    assert codec.decode(codec.encode(values["plain"], codec.JSON), codec.JSON) == [
        [0, 1, 2], [3, 4, 5],
    ]  # fmt: skip


def test_bfloat16_tensors_become_float32() -> None:
    torch = optional.torch()
    decoded = codec.decode(codec.encode(torch.tensor([1.5, -2.0], dtype=torch.bfloat16)))
    assert decoded.dtype == np.float32
    assert decoded.tolist() == [1.5, -2.0]


def test_a_tensor_numpy_cannot_hold_fails_naming_its_dtype() -> None:
    torch = optional.torch()
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    with pytest.raises(PayloadError, match="float8_e4m3fn"):
        codec.encode(torch.zeros(2, dtype=torch.float8_e4m3fn))


def test_path_and_encoder_settings() -> None:
    base = {"queues": ("q",), "handler": "m:f"}
    assert WorkerConfig.from_env({}, **base).path == (".",)
    assert WorkerConfig.from_env({}, **base).encoder == ""
    env = {"REDBATCH_PATH": "/srv/app, /srv/lib", "REDBATCH_ENCODER": "enc:default"}
    config = WorkerConfig.from_env(env, **base)
    assert config.path == ("/srv/app", "/srv/lib")
    assert config.encoder == "enc:default"
